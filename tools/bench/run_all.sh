#!/bin/bash
# Run every imagefs benchmark with the issue's sizes (2 GiB images, 10,000 images),
# or small ones with --quick. Each benchmark mounts and unmounts its own library in
# its own temp dir under /var/tmp; a missed target does not stop the others.
#
#   tools/bench/run_all.sh [--quick] [--keep]
#
# Output goes to stdout and to $BENCH_LOG (default /var/tmp/imagefs-bench-<date>.txt).
# Exit status: 0 if every target was met, 1 if any was missed or a benchmark failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/tmp/venv/bin/python}
size=() count=() extra=()
for arg in "$@"; do
    case "$arg" in
        --quick) size=(--size-gib 0.25); count=(--count 1000) ;;
        --keep) extra=(--keep) ;;
        *) echo "usage: $0 [--quick] [--keep]" >&2; exit 2 ;;
    esac
done
log=${BENCH_LOG:-/var/tmp/imagefs-bench-$(date +%Y%m%d-%H%M%S).txt}
status=0
{
    echo "imagefs benchmarks, $(date -Is), kernel $(uname -r), $(nproc) CPUs"
    modified=$(git -C "$here" status --porcelain -- ../../imagefs 2>/dev/null | head -1)
    echo "commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')${modified:+ (imagefs/ has uncommitted changes)}"
    echo "uptime: $(uptime)"
} | tee "$log"
for bench in warm_reread first_read cp_ingest close_to_active ls_many inspect_overhead signed_ingest fsck_10k store_failover; do
    case "$bench" in
        ls_many|fsck_10k) args=("${count[@]}" "${extra[@]}") ;;
        store_failover) args=("${extra[@]}") ;;
        *) args=("${size[@]}" "${extra[@]}") ;;
    esac
    "$python" "$here/$bench.py" "${args[@]}" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        status=1
        [ "$rc" -ne 1 ] && echo "!! $bench exited with status $rc" | tee -a "$log"
    fi
done
echo "uptime: $(uptime)" | tee -a "$log"
echo "results in $log"
exit $status

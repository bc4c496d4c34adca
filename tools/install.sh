#!/usr/bin/env bash
# Install imagefs on a Debian (bookworm or later) host from this checkout.
#
#   sudo tools/install.sh                    # Debian packages, a venv in /opt/imagefs, /usr/local/bin/imagefs
#   sudo tools/install.sh --mount /images    # ... then mount the library at /images (data in /var/lib/imagefs)
#   sudo tools/install.sh --dev              # editable install with the test extras: tests run against the checkout
#
# Safe to run again: packages already there are kept, the venv is reused, the
# project is reinstalled, and a mount point that already serves imagefs is left alone.
set -euo pipefail

usage() {
  cat <<EOF
usage: sudo tools/install.sh [--dev] [--mount DIR]

Installs the Debian packages imagefs needs to build, run and test, creates a
virtualenv at \${IMAGEFS_PREFIX:-/opt/imagefs} with Debian's python3, installs
imagefs from this checkout into it and links /usr/local/bin/imagefs to it.

  --dev        install editable with the test extras (pip install -e ".[test]"),
               so that PREFIX/bin/python -m pytest runs the checkout's tests
  --mount DIR  afterwards, mkdir -p DIR and run 'imagefs mount DIR'
               (embedded default store under /var/lib/imagefs, or
               /etc/imagefs/imagefs.toml if it exists)
  -h, --help   show this help

Environment: IMAGEFS_PREFIX (default /opt/imagefs) is where the venv goes.
EOF
}

dev=0
mount_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --mount) mount_dir=${2:-}
             [ -n "$mount_dir" ] || { echo "install.sh: --mount needs a directory" >&2; exit 2; }
             shift ;;
    --mount=*) mount_dir=${1#--mount=}
               [ -n "$mount_dir" ] || { echo "install.sh: --mount needs a directory" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*"; }
# before the cd below: a relative --mount is the caller's
case "$mount_dir" in ""|/*) ;; *) mount_dir=$PWD/$mount_dir ;; esac

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo tools/install.sh ...)" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "install.sh: needs a Debian-based host (apt-get not found)" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${IMAGEFS_PREFIX:-/opt/imagefs}

# Build: python3-dev, gcc, libc6-dev, pkg-config and libfuse3-dev compile pyfuse3 (PyPI has no wheel).
# Run: fuse3 (fusermount3, /etc/fuse.conf), qemu-utils (qemu-img for inspection and conversion).
# Operate and test: attr (getfattr/setfattr), rsync, xz/bzip2/zstd for compressed images, procps,
# strace (a test counts the syscalls ls -l makes on the mount), bindfs (a test hangs a store behind it),
# openssl (signatures made as OpenStack's documentation shows).
packages=(
  ca-certificates python3 python3-venv python3-dev gcc libc6-dev pkg-config
  fuse3 libfuse3-dev qemu-utils attr rsync xz-utils bzip2 zstd procps strace
  genisoimage xorriso bindfs openssl
)
export DEBIAN_FRONTEND=noninteractive
say "installing Debian packages: ${packages[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${packages[@]}"

# Debian's python3, whatever else is first on PATH: the venv then follows the distribution's upgrades.
python=/usr/bin/python3
if [ -x "$prefix/bin/python" ] && "$prefix/bin/python" -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
  say "reusing the virtualenv at $prefix"
else
  if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ]; then
    echo "install.sh: $prefix exists and is not a virtualenv; set IMAGEFS_PREFIX to another place" >&2
    exit 1
  fi
  [ -f "$prefix/pyvenv.cfg" ] && rm -rf "$prefix"  # a broken venv, or one made from another python
  say "creating a virtualenv at $prefix with $python ($("$python" --version))"
  "$python" -m venv "$prefix"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$repo"
if [ "$dev" -eq 1 ]; then
  say "installing imagefs from $repo (editable, with the test extras)"
  "$prefix/bin/pip" install -q -e ".[test]"
else
  say "installing imagefs from $repo"
  "$prefix/bin/pip" install -q .
fi
# pip builds in the checkout: give what it wrote there back to the checkout's owner (sudo from a user's clone).
for built in "$repo/build" "$repo"/*.egg-info; do
  if [ -e "$built" ]; then chown -R --reference="$repo" "$built"; fi
done

mkdir -p /usr/local/bin
ln -sfn "$prefix/bin/imagefs" /usr/local/bin/imagefs
say "linked /usr/local/bin/imagefs -> $prefix/bin/imagefs"

if [ -n "$mount_dir" ]; then
  mkdir -p "$mount_dir"
  fstype=$(findmnt -rn -o FSTYPE --mountpoint "$mount_dir" | tail -n 1 || true)
  # Is its daemon alive? Ask it (a stat may come from the kernel's cache): a mount left
  # by a daemon that died answers ENOTCONN, and imagefs mount recovers it.
  if [ "$fstype" = fuse.imagefs ] && pid=$(getfattr --only-values -n user.imagefs.pid "$mount_dir" 2>/dev/null); then
    say "$mount_dir is already an imagefs mount (pid $pid); left as it is (imagefs umount $mount_dir && imagefs mount $mount_dir restarts it)"
  else
    say "mounting the image library at $mount_dir"
    "$prefix/bin/imagefs" mount "$mount_dir"
  fi
fi

if [ "$dev" -eq 1 ]; then
  say "done: run the tests with $prefix/bin/python -m pytest (from $repo)"
else
  say "done: imagefs --help; the systemd unit is in $repo/systemd (see docs/systemd.md)"
fi

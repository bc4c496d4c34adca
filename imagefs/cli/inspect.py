"""imagefs inspect FILE: what the format inspector sees in a local file, before it is uploaded.

The same inspection an upload gets (formats.detect_file: one sequential read,
no qemu-img). Exit codes: 0 the file would pass inspection, 1 it would be
killed, 2 it cannot be read.
"""

from __future__ import annotations

import sys

import click

from ..formats import detect_file
from . import main


@main.command(name="inspect")
@click.argument("path")
def inspect_file(path) -> None:
    """Inspect FILE as an upload would be: format, virtual size, safety checks (exit 0 safe, 1 not, 2 unreadable)."""
    try:
        detection = detect_file(path)
    except OSError as e:
        click.echo(f"imagefs: cannot read {path}: {e.strerror or e}", err=True)
        sys.exit(2)
    click.echo(f"file:         {path}")
    click.echo(f"format:       {detection.format}")
    click.echo(f"virtual size: {detection.virtual_size}")
    click.echo(f"size:         {detection.size}")
    click.echo(f"matches:      {', '.join(detection.matches) or '(none: raw)'}")
    click.echo("checks:")
    if not detection.checks:
        click.echo("  (none)")
    for name, why in detection.checks.items():
        click.echo(f"  {name}: passed" if why is None else f"  {name}: FAILED: {why}")
    click.echo("properties:")
    if not detection.properties:
        click.echo("  (none)")
    for name, value in sorted(detection.properties.items()):
        click.echo(f"  {name}: {value}")
    click.echo("problems:")
    if not detection.problems:
        click.echo("  (none)")
    for problem in detection.problems:
        click.echo(f"  {problem}")
    if detection.safe:
        click.echo("verdict:      safe")
    else:
        click.echo(f"verdict:      UNSAFE: {detection.reason()}")
        sys.exit(1)

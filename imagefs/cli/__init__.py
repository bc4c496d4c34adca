"""The `imagefs` command: one module per command group, errors as messages and exit codes."""

from __future__ import annotations

import logging
import sys

import click

from ..errors import ImageFSError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ImageFSError as e:  # a user-facing error: a message, an exit code, no traceback
            click.echo(f"imagefs: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """imagefs: a VM image library you mount (Glance's lifecycle and metadata as files)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


from . import fsck, images, inspect, mount, signing  # noqa: E402  (commands register themselves on main)

__all__ = ["main", "fsck", "images", "inspect", "mount", "signing"]

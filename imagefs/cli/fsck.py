"""imagefs fsck: check a library (catalog and store) and, unmounted, repair what is safe.

Exit codes add up as e2fsck's do: 0 clean, 1 problems repaired, 4 problems
left (damage that cannot be repaired, or anything found without --repair),
8 an operational error (the catalog cannot be opened, the data dir is in use).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

import click

from ..catalog import Catalog
from ..daemon import DataDirLock
from ..errors import ImageFSError
from ..fsck import check, library_stores, repair
from . import main
from .options import library_options, read_config

CLEAN, REPAIRED, LEFT, OPERATIONAL = 0, 1, 4, 8


@main.command()
@library_options
@click.option("--repair", "repair_", is_flag=True, help="Fix what is safe (orphans, stale files, refcounts); needs the library unmounted.")
@click.option("--verify-data", is_flag=True, help="Re-hash every blob and compare it with its content address.")
def fsck(config_path, data_dir, repair_: bool, verify_data: bool) -> None:
    """Check the library's catalog and store; with --repair, fix what can be fixed safely."""
    config = read_config(config_path, data_dir)
    started = time.monotonic()
    lock = None
    if not config.catalog_path.exists():  # before the lock, which would create the data dir
        _fail(f"no catalog at {config.catalog_path}")
    if repair_:
        lock = DataDirLock(config.data_dir)
        try:
            lock.acquire(description=f"imagefs fsck --repair (pid {os.getpid()})")
        except ImageFSError as e:
            _fail(f"{e}; --repair needs the library unmounted (imagefs umount it first)")
    try:
        try:
            catalog = Catalog(config.catalog_path, readonly=not repair_)
        except (sqlite3.Error, RuntimeError, ImageFSError) as e:
            _fail(f"cannot open the catalog {config.catalog_path}: {e}")
        try:
            try:
                stores = library_stores(config, catalog)
            except ImageFSError as e:
                _fail(f"{e}")
            report = check(catalog, stores, staging_dir=config.staging_path, verify_data=verify_data)
            if repair_:
                report = repair(catalog, stores, report, staging_dir=config.staging_path)
        except sqlite3.DatabaseError as e:
            _fail(f"the catalog {config.catalog_path} cannot be read: {e}")
        finally:
            catalog.close()
    finally:
        if lock is not None:
            lock.release()
    for finding in report.findings:
        click.echo(finding.line())
    left, repaired = report.left, report.repaired
    data = f", data of {report.verified} verified" if verify_data else ""
    summary = (
        f"{config.data_dir}: {report.images} images, {report.blobs} blobs{data}; "
        f"{len(report.findings)} problems, {len(repaired)} repaired, {len(left)} left "
        f"({time.monotonic() - started:.2f} s)"
    )
    click.echo(summary)
    damage = [f for f in left if not f.repairable]
    if damage:
        click.echo(
            f"{len(damage)} cannot be repaired: imagefs never invents data; restore those blobs from a backup"
            " or delete the images that use them", err=True,
        )
    elif left and not repair_:
        click.echo("run imagefs fsck --repair (unmounted) to fix them", err=True)
    sys.exit((REPAIRED if repaired else CLEAN) | (LEFT if left else CLEAN))


def _fail(message: str):
    click.echo(f"imagefs fsck: {message}", err=True)
    sys.exit(OPERATIONAL)

"""imagefs list / show: the catalog as tables, like `glance image-list` and `image-show`."""

from __future__ import annotations

import click

from ..catalog import Catalog
from ..catalog.records import glance_time
from ..errors import NotFound
from ..lifecycle import Status
from . import main
from .options import library_options, read_config
from .table import render


def _open(config_path, data_dir) -> Catalog:
    config = read_config(config_path, data_dir)
    if not config.catalog_path.exists():
        raise NotFound(f"no catalog at {config.catalog_path} (nothing mounted yet with this data dir?)")
    return Catalog(config.catalog_path, readonly=True)


@main.command(name="list")
@library_options
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in Status]))
def list_images(config_path, data_dir, statuses) -> None:
    """A table of the images (all but deleted ones, or those with --status)."""
    catalog = _open(config_path, data_dir)
    try:
        images = catalog.images([Status(s) for s in statuses] if statuses else None)
    finally:
        catalog.close()
    rows = [[i.id, i.name, i.status, i.disk_format, i.container_format, i.size] for i in images]
    click.echo(render(["ID", "Name", "Status", "Disk Format", "Container Format", "Size"], rows))


@main.command()
@click.argument("name_or_id")
@library_options
@click.option("--history", is_flag=True, help="Also list every status change.")
def show(name_or_id, config_path, data_dir, history) -> None:
    """Every field of one image (a live image by name first, else by id)."""
    catalog = _open(config_path, data_dir)
    try:
        image = catalog.find(name_or_id)
        properties = catalog.properties(image.seq)
        tags = catalog.tags(image.seq)
        changes = catalog.history(image.seq)
    finally:
        catalog.close()
    fields = {
        "checksum": image.checksum, "container_format": image.container_format, "created_at": image.created_at,
        "disk_format": image.disk_format, "id": image.id, "min_disk": image.min_disk, "min_ram": image.min_ram,
        "name": image.name, "os_hash_algo": image.os_hash_algo, "os_hash_value": image.os_hash_value,
        "os_hidden": image.os_hidden, "owner": image.owner, "protected": image.protected, "size": image.size,
        "status": image.status, "tags": tags, "updated_at": image.updated_at, "virtual_size": image.virtual_size,
        "visibility": image.visibility, **properties,
    }
    if image.reason:
        fields["imagefs.reason"] = image.reason
    if image.stored_format:
        fields["imagefs.stored_format"] = image.stored_format
    if image.store:
        fields["imagefs.stores"] = image.store
    if image.signature_verified:
        fields["imagefs.signature_verified"] = image.signature_verified
    rows = [[k, v] for k, v in sorted(fields.items())]
    click.echo(render(["Property", "Value"], rows))
    if history:
        rows = [[glance_time(h.at_ns), h.actor, h.from_status or "", h.to_status, h.reason or ""] for h in changes]
        click.echo(render(["At", "By", "From", "To", "Why"], rows))

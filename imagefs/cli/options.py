"""Options shared by the commands that read a library's config."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import Config, load_config

config_file = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="TOML config file (default /etc/imagefs/imagefs.toml if it exists).",
)
data_dir = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Catalog and embedded store directory (default /var/lib/imagefs, or data_dir in the config).",
)


def library_options(fn):
    return config_file(data_dir(fn))


def read_config(config_path: Path | None, data_dir: Path | None) -> Config:
    return load_config(config_path, data_dir)

"""Helpers for the tests that need no mount: a fresh catalog, forged data, a tree run under trio.

Expected values are computed here independently of imagefs (hashlib for
digests), never copied from what the implementation answered.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from imagefs.catalog import Catalog, Image
from imagefs.config import load_config
from imagefs.fsck import check
from imagefs.lifecycle import Status
from imagefs.store import open_store
import pytest

from imagefs.tree import FIRST_IMAGE_INO, Caller, ImageTree

ACTOR = "uid:1000"


def sha512_key(data: bytes) -> str:
    return f"sha512:{hashlib.sha512(data).hexdigest()}"


def saving_image(catalog: Catalog, name: str, *, owner: str = "demo") -> Image:
    image = catalog.create_image(name, owner=owner, actor=ACTOR)
    return catalog.change_status(image.seq, Status.SAVING, actor="imagefs")


def activate(catalog: Catalog, image: Image, data: bytes, *, store: str = "local") -> Image:
    """Make a saving image active with `data`'s real digests, as finalize would."""
    digest = hashlib.sha512(data).hexdigest()
    return catalog.activate(
        image.seq, blob_key=f"sha512:{digest}", store=store, actor="imagefs", size=len(data),
        checksum=hashlib.md5(data).hexdigest(), os_hash_algo="sha512", os_hash_value=digest,
    )


def active_image(catalog: Catalog, name: str, data: bytes, *, owner: str = "demo") -> Image:
    return activate(catalog, saving_image(catalog, name, owner=owner), data)


def me(*, admin: bool = False, uid: int | None = None) -> Caller:
    """The caller running the tests (its project is its user name), or another uid."""
    return Caller(os.getuid() if uid is None else uid, os.getgid(), os.getpid(), admin)


class TreeEnv:
    """An ImageTree over a fresh data dir, with the config, catalog and store it uses."""

    def __init__(self, data_dir: Path, config_text: str | None = None):
        config_path = None
        if config_text is not None:
            config_path = data_dir.parent / f"{data_dir.name}.toml"
            config_path.write_text(config_text)
        self.config = load_config(config_path, data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.config.catalog_path)
        self.store = open_store(self.config.store)
        self.tree: ImageTree | None = None

    def run(self, test) -> None:
        """trio.run `await test(tree)` with the nursery's start_soon as the tree's spawn."""

        async def main():
            async with trio.open_nursery() as nursery:
                self.tree = ImageTree(self.config, self.catalog, self.store, spawn=nursery.start_soon)
                await self.tree.health.check()  # as the daemon does: the store gets its marker
                await test(self.tree)
                await self.tree.drain()

        trio.run(main)

    def check(self) -> None:
        report = check(self.catalog, self.store)
        assert report.problems == [], report.problems
        assert report.orphans == [], report.orphans

    def staged_files(self) -> list[str]:
        return sorted(p.name for p in self.config.staging_path.iterdir())


@pytest.fixture
def env(tmp_path):
    """A TreeEnv in the test's temp dir, its catalog closed afterwards."""
    env = TreeEnv(tmp_path / "data")
    yield env
    env.catalog.close()


def seq_of(ino: int) -> int:
    return (ino - FIRST_IMAGE_INO) // 2

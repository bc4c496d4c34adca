"""The finalize pipeline: what happens between the last close of an upload and `active`.

A pipeline is a list of named steps. Each step reads and extends one
FinalizeContext; a step that refuses the data raises UploadRejected and the
image is killed with "<step>: <why>" as its reason. Steps never touch the
catalog: the tree commits the outcome in one transaction afterwards, so a
crash mid-pipeline leaves the image in saving (killed as "interrupted" at the
next mount), never half-active. Inspection, import plugins and signature
verification are further steps, inserted where they belong by name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..catalog import Image
from ..errors import UploadRejected
from ..hashing import Digests
from ..store import STORE_LIMITER, BlobStore, blob_key

log = logging.getLogger(__name__)


@dataclass
class FinalizeContext:
    image: Image  # as it was when finalize began
    properties: dict[str, str]
    staged: Path
    size: int
    digests: Digests
    store: BlobStore
    # What the steps decide, committed together by the tree:
    updates: dict[str, object] = field(default_factory=dict)
    new_properties: dict[str, str] = field(default_factory=dict)
    blob_key: str | None = None


Step = Callable[[FinalizeContext], Awaitable[None]]


@dataclass(frozen=True)
class FinalizeStep:
    name: str
    run: Step


async def verify_declared(ctx: FinalizeContext) -> None:
    """Declared size/checksum/os_hash_value (setxattr before finalize) must match the data."""
    image, digests = ctx.image, ctx.digests
    checks = [
        ("size", image.expected_size, ctx.size),
        ("checksum", image.expected_checksum, digests.checksum),
        ("os_hash_value", image.expected_os_hash_value, digests.os_hash_value),
    ]
    for name, declared, actual in checks:
        if declared is not None and declared != actual:
            raise UploadRejected(f"declared {name} {declared} but the data has {actual}")


async def record_format(ctx: FinalizeContext) -> None:
    """Until format inspection lands, an undeclared disk_format is raw, container_format bare."""
    disk_format = ctx.image.disk_format or "raw"
    ctx.updates["disk_format"] = disk_format
    ctx.updates["container_format"] = ctx.image.container_format or "bare"
    ctx.updates["stored_format"] = disk_format


async def store_data(ctx: FinalizeContext) -> None:
    """Put the staged file in the store under its content address (a no-op if the blob exists)."""
    key = blob_key(ctx.digests.os_hash_algo, ctx.digests.os_hash_value)
    try:
        await trio.to_thread.run_sync(ctx.store.put, key, ctx.staged, limiter=STORE_LIMITER)
    except OSError as e:
        raise UploadRejected(f"store {ctx.store.name} failed: {e.strerror or e}") from e
    ctx.blob_key = key


DEFAULT_STEPS = (
    FinalizeStep("verify_declared", verify_declared),
    FinalizeStep("record_format", record_format),
    FinalizeStep("store_data", store_data),
)


class Pipeline:
    def __init__(self, steps=DEFAULT_STEPS):
        self.steps = list(steps)

    def insert_before(self, name: str, step: FinalizeStep) -> None:
        index = [s.name for s in self.steps].index(name)
        self.steps.insert(index, step)

    async def run(self, ctx: FinalizeContext) -> None:
        for step in self.steps:
            try:
                await step.run(ctx)
            except UploadRejected as e:
                raise UploadRejected(f"{step.name}: {e}") from e

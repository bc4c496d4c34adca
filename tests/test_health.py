"""Store health without a mount: the marker, the probe, read-only mode, time-outs, the staging quota."""

import errno
import os
import threading

import pytest
import trio
from helpers_unit import TreeEnv, env, me, seq_of  # noqa: F401  (env is a fixture)
from test_tree import DATA, read_all, upload, write_all

from imagefs.errors import ReadOnlyMode, StoreUnavailable
from imagefs.health import StoreHealth
from imagefs.lifecycle import Status
from imagefs.staging import StagingQuota
from imagefs.store.local import MARKER_FILE
from imagefs.tree import INCOMING_INO, ROOT_INO, STATUS_INO, image_ino

OWNER = me()
ADMIN = me(admin=True)


def mode(tree) -> str:
    return tree.getxattr(ROOT_INO, "user.imagefs.mode").decode()


def test_first_check_initialises_the_store_and_records_its_marker(env):
    async def test(tree):
        assert mode(tree) == "read-write"

    env.run(test)
    marker = env.catalog.store_marker("local")
    assert marker and (env.store.root / MARKER_FILE).read_text().strip() == marker


def test_a_vanished_marker_turns_the_tree_read_only_and_kills_uploads_in_flight(env):
    async def test(tree):
        seq = await upload(tree, "kept")
        fh, attr = tree.create(INCOMING_INO, "inflight", OWNER)
        await write_all(tree, fh, DATA[:4096])
        (env.store.root / MARKER_FILE).rename(env.store.root / "moved-away")
        await tree.health.check()
        assert mode(tree).startswith("read-only: store local: store marker") and "missing" in mode(tree)
        inflight = env.catalog.image(seq_of(attr.ino))
        assert inflight.status is Status.KILLED and inflight.reason.startswith("store unavailable:")
        with pytest.raises(ReadOnlyMode) as refused:
            await tree.write(fh, 4096, b"more")
        assert refused.value.errno == errno.EROFS
        tree.release(fh)
        for change in (
            lambda: tree.create(INCOMING_INO, "new", OWNER),
            lambda: tree.setxattr(image_ino(seq), "user.image.min_ram", b"512", OWNER),
            lambda: tree.removexattr(image_ino(seq), "user.image.min_ram", OWNER),
        ):
            with pytest.raises(ReadOnlyMode):
                change()
        with pytest.raises(ReadOnlyMode):
            await tree.unlink(STATUS_INO[Status.ACTIVE], "kept", OWNER)
        with pytest.raises(ReadOnlyMode):
            await tree.rename(STATUS_INO[Status.ACTIVE], "kept", STATUS_INO[Status.DEACTIVATED], "kept", ADMIN)
        assert await read_all(tree, image_ino(seq)) == DATA  # the data is still there: reads go on
        assert env.catalog.image(seq).status is Status.ACTIVE

        (env.store.root / "moved-away").rename(env.store.root / MARKER_FILE)
        await tree.health.check()
        assert mode(tree) == "read-write"
        await upload(tree, "after")
        assert env.catalog.find("after").status is Status.ACTIVE

    env.run(test)
    env.check()


def test_a_store_of_another_library_is_refused(env):
    env.catalog.set_store_marker("local", "the-marker-this-library-recorded")

    async def test(tree):
        assert mode(tree).startswith("read-only:")
        assert not (env.store.root / MARKER_FILE).exists()  # nothing written by a library that expected one

    env.run(test)


def test_a_hung_call_times_out_and_then_fails_fast(env):
    release = threading.Event()

    async def test(tree):
        health = StoreHealth(env.store, env.catalog, env.config.store)
        health.timeout = 0.2
        await health.check()
        assert health.failure is None
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await health.call(release.wait)
        env.store.probe = lambda: release.wait()
        await health.check()
        assert health.hung and "did not answer" in health.failure
        called = []
        with pytest.raises(StoreUnavailable):  # while hung: refused without even starting a thread
            await health.call(called.append, "ran")
        assert called == []
        release.set()
        del env.store.probe
        # The abandoned probe thread returns now; the next probes succeed once it has.
        for _ in range(100):
            await health.check()
            if health.failure is None:
                break
            await trio.sleep(0.01)
        assert health.failure is None and not health.hung
        assert await health.call(os.getpid) == os.getpid()

    env.run(test)


def test_a_long_call_gives_up_when_the_store_fails(env):
    release = threading.Event()

    async def test(tree):
        health = tree.health

        async def fail_soon():
            await trio.sleep(0.1)
            (env.store.root / MARKER_FILE).unlink()
            await health.check()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_soon)
            with pytest.raises(StoreUnavailable, match="marker"):
                await health.call(release.wait, timeout=None)
        release.set()

    env.run(test)


def test_staging_quota_takes_and_gives_back():
    quota = StagingQuota(10)
    quota.take(6)
    with pytest.raises(OSError) as refused:
        quota.take(5)
    assert refused.value.errno == errno.EDQUOT
    quota.give(6)
    quota.take(10)
    unlimited = StagingQuota(0)
    unlimited.take(1 << 50)


def test_staging_quota_kills_the_upload_that_crosses_it(tmp_path):
    env = TreeEnv(tmp_path / "data", "[upload]\nstaging_quota_mib = 1\n")

    async def test(tree):
        fh, attr = tree.create(INCOMING_INO, "big", OWNER)
        with pytest.raises(OSError) as refused:
            await write_all(tree, fh, bytes([1]) * (2 << 20))
        assert refused.value.errno == errno.EDQUOT
        with pytest.raises(OSError):  # and every later write of that upload
            await tree.write(fh, 2 << 20, b"x")
        tree.release(fh)
        image = env.catalog.image(seq_of(attr.ino))
        assert image.status is Status.KILLED and "staging quota of 1 MiB exceeded" in image.reason
        assert tree.uploads.quota.used == 0
        await upload(tree, "fits", bytes([2]) * (1 << 20))
        assert tree.uploads.quota.used == 0

    env.run(test)
    assert env.staged_files() == []
    env.check()
    env.catalog.close()

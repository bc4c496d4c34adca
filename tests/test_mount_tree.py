"""ls -l, stat, find, du on the tree: sizes, modes, times from the catalog, by-id links."""

import calendar
import os
import random
import time

import pytest

from conftest import getfattr_dump, run, setfattr

pytestmark = pytest.mark.fuse


def _epoch(glance_time: str) -> int:
    return calendar.timegm(time.strptime(glance_time, "%Y-%m-%dT%H:%M:%SZ"))


def _stat(path) -> dict[str, int | str]:
    size, mode, mtime, ctime, blocks, kind = run("stat", "-c", "%s %a %Y %Z %b %F", path).stdout.split(" ", 5)
    return {"size": int(size), "mode": mode, "mtime": int(mtime), "ctime": int(ctime), "blocks": int(blocks),
            "kind": kind.strip()}


def _upload_all(library, tmp_path, sizes):
    for name, size in sizes.items():
        source = tmp_path / name
        source.write_bytes(random.Random(name).randbytes(size))
        run("cp", source, library.mnt / "incoming" / name)


def test_ls_stat_du_show_real_sizes_modes_and_catalog_times(library, tmp_path):
    sizes = {"small": 1000, "medium": 1024 * 1024 + 1, "large": 3 * 1024 * 1024}
    _upload_all(library, tmp_path, sizes)
    for name, size in sizes.items():
        path = library.path("active", name)
        attrs = getfattr_dump(path)
        st = _stat(path)
        assert st["kind"] == "regular file"
        assert st["size"] == size == int(attrs["user.image.size"])
        assert st["mode"] == "444"
        assert st["mtime"] == _epoch(attrs["user.image.updated_at"])
        assert st["ctime"] == _epoch(attrs["user.image.created_at"])
        assert st["blocks"] * 512 >= size  # random data: fully allocated, du counts it
    listing = {line.split()[-1]: line.split() for line in run("ls", "-l", library.mnt / "active").stdout.splitlines()[1:]}
    assert sorted(listing) == sorted(sizes)
    for name, size in sizes.items():
        assert listing[name][0] == "-r--r--r--"
        assert int(listing[name][4]) == size
    du = dict(reversed(line.split("\t")) for line in run("du", "-b", "-a", library.mnt / "active").stdout.splitlines())
    for name, size in sizes.items():
        assert int(du[str(library.path("active", name))]) == size
    total_kib = int(run("du", "-s", "-k", library.mnt / "active").stdout.split()[0])
    assert total_kib * 1024 >= sum(sizes.values())


def test_mtime_follows_updated_at_and_ctime_stays_created_at(library, tmp_path):
    _upload_all(library, tmp_path, {"img": 5000})
    path = library.path("active", "img")
    before = getfattr_dump(path)
    first = _stat(path)
    time.sleep(1.1)  # updated_at has a resolution of one second
    assert setfattr(path, "user.image.min_ram", "256").returncode == 0
    after = getfattr_dump(path)
    second = _stat(path)
    assert after["user.image.updated_at"] > before["user.image.updated_at"]
    assert second["mtime"] == _epoch(after["user.image.updated_at"]) > first["mtime"]
    assert second["ctime"] == first["ctime"] == _epoch(after["user.image.created_at"])


def test_by_id_links_follow_the_image(library, tmp_path):
    _upload_all(library, tmp_path, {"one": 3000, "two": 4000})
    ids = {name: getfattr_dump(library.path("active", name))["user.image.id"] for name in ("one", "two")}
    assert sorted(os.listdir(library.mnt / "by-id")) == sorted(ids.values())
    for name, image_id in ids.items():
        link = library.mnt / "by-id" / image_id
        assert run("stat", "-c", "%F", link).stdout.strip() == "symbolic link"
        assert run("readlink", link).stdout.strip() == f"../active/{name}"
        assert run("readlink", "-f", link).stdout.strip() == str(library.path("active", name))
        assert run("sha512sum", link).stdout.split()[0] == getfattr_dump(link)["user.image.os_hash_value"]
    run("mv", library.path("active", "one"), library.path("deactivated", "one"))
    run("mv", library.path("active", "two"), library.path("active", "deux"))
    assert run("readlink", "-f", library.mnt / "by-id" / ids["one"]).stdout.strip() == str(
        library.path("deactivated", "one"))
    assert run("readlink", "-f", library.mnt / "by-id" / ids["two"]).stdout.strip() == str(
        library.path("active", "deux"))


def test_find_lists_every_image_once_per_status_directory(library, tmp_path):
    _upload_all(library, tmp_path, {"a": 100, "b": 200, "c": 300})
    run("touch", library.mnt / "incoming" / "waiting")  # queued: in incoming/ and queued/
    run("mv", library.path("active", "b"), library.path("deactivated", "b"))
    bad = library.mnt / "incoming" / "bad"
    run("touch", bad)
    assert setfattr(bad, "user.image.size", "1").returncode == 0
    run("cp", tmp_path / "a", bad)  # 100 bytes, not 1: killed
    files = sorted(os.path.relpath(p, library.mnt) for p in run("find", library.mnt, "-type", "f").stdout.split())
    assert files == ["active/a", "active/c", "deactivated/b", "incoming/waiting", "killed/bad", "queued/waiting"]
    links = run("find", library.mnt, "-type", "l").stdout.split()
    assert len(links) == 5 and all(os.path.dirname(p) == str(library.mnt / "by-id") for p in links)
    dirs = sorted(os.path.relpath(p, library.mnt) for p in run("find", library.mnt, "-mindepth", "1", "-type", "d").stdout.split())
    assert dirs == sorted(["incoming", "queued", "saving", "importing", "active", "deactivated", "killed",
                           "pending_delete", "by-id"])

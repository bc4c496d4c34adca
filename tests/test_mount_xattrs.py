"""Metadata as xattrs through getfattr/setfattr: every field shown, writable fields, custom
properties, read-only and reserved fields (EPERM), and Glance's validation rules (EINVAL)."""

import errno
import hashlib
import os
import random
import re

import pytest

from conftest import assert_refused, getfattr_dump, getfattr_value, run, setfattr

pytestmark = pytest.mark.fuse

FIELDS = (
    "id", "name", "status", "disk_format", "container_format", "size", "checksum", "os_hash_algo",
    "os_hash_value", "min_disk", "min_ram", "visibility", "protected", "os_hidden", "owner", "created_at",
    "updated_at",
)
GLANCE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _upload(library, tmp_path, name="img", size=65536, seed=0):
    data = random.Random(seed).randbytes(size)
    source = tmp_path / f"{name}.src"
    source.write_bytes(data)
    run("cp", source, library.mnt / "incoming" / name)
    return library.path("active", name), data


def _refusals(path, cases, err):
    """Apply each (attr, value) with setfattr; return the cases not refused with `err`, or that changed anything."""
    wrong = []
    for attr, value in cases:
        before = getfattr_dump(path)
        result = setfattr(path, attr, value)
        after = getfattr_dump(path)
        if result.returncode == 0 or os.strerror(err) not in result.stderr:
            wrong.append((attr, value[:40], result.returncode, result.stderr.strip()))
        elif after != before:
            wrong.append((attr, value[:40], "changed", {k: v for k, v in after.items() if before.get(k) != v}))
    return wrong


def test_getfattr_d_shows_every_field(library, tmp_path):
    active, data = _upload(library, tmp_path)
    attrs = getfattr_dump(active)
    missing = [f for f in FIELDS if f"user.image.{f}" not in attrs]
    assert missing == []
    image = {f: attrs[f"user.image.{f}"] for f in FIELDS}
    assert UUID.fullmatch(image["id"])
    assert (library.mnt / "by-id" / image["id"]).resolve() == active.resolve()
    assert image["name"] == "img"
    assert image["status"] == "active"
    assert image["disk_format"] == "raw" and image["container_format"] == "bare"
    assert image["size"] == str(len(data))
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert image["min_disk"] == image["min_ram"] == "0"
    assert image["visibility"] == "shared"  # Glance's default for a new image
    assert image["protected"] == image["os_hidden"] == "false"
    assert image["owner"] == "root"
    assert GLANCE_TIME.fullmatch(image["created_at"]) and GLANCE_TIME.fullmatch(image["updated_at"])
    assert image["created_at"] <= image["updated_at"]
    assert "user.image.tags" not in attrs  # no tags yet
    assert attrs["user.imagefs.stores"] == "local"


def test_setfattr_writable_fields_and_custom_properties(library, tmp_path):
    active, data = _upload(library, tmp_path, "old")
    image_id = getfattr_value(active, "user.image.id")
    changes = {
        "user.image.min_ram": "1024",
        "user.image.min_disk": "20",
        "user.image.visibility": "community",
        "user.image.os_hidden": "true",
        "user.image.tags": "alpha,beta,gamma",
        "user.image.os_distro": "ubuntu",
        "user.image.hw_disk_bus": "virtio",
        "user.image.description": "a longer value, with spaces = and commas, and ünïcode",
        "user.image.empty_value": "",
    }
    for attr, value in changes.items():
        result = setfattr(active, attr, value)
        assert result.returncode == 0, (attr, result.stderr)
    attrs = getfattr_dump(active)
    for attr, value in changes.items():
        assert attrs.get(attr) == value, attr
    for visibility in ("private", "public", "shared"):  # public: we are root, an admin
        assert setfattr(active, "user.image.visibility", visibility).returncode == 0
        assert getfattr_value(active, "user.image.visibility") == visibility
    assert setfattr(active, "user.image.protected", "true").returncode == 0
    assert getfattr_value(active, "user.image.protected") == "true"
    assert setfattr(active, "user.image.protected", "false").returncode == 0
    assert getfattr_value(active, "user.image.protected") == "false"
    assert setfattr(active, "user.image.os_distro", "debian").returncode == 0  # overwrite
    assert getfattr_value(active, "user.image.os_distro") == "debian"

    # name renames the file; by-id follows; everything else stays
    before = getfattr_dump(active)
    assert setfattr(active, "user.image.name", "new").returncode == 0
    renamed = library.path("active", "new")
    assert not active.exists()
    assert sorted(p.name for p in (library.mnt / "active").iterdir()) == ["new"]
    after = getfattr_dump(renamed)
    assert after["user.image.name"] == "new"
    assert {k: v for k, v in after.items() if k not in ("user.image.name", "user.image.updated_at")} == {
        k: v for k, v in before.items() if k not in ("user.image.name", "user.image.updated_at")
    }
    assert (library.mnt / "by-id" / image_id).resolve() == renamed.resolve()
    assert hashlib.sha512(renamed.read_bytes()).hexdigest() == after["user.image.os_hash_value"]


def test_setfattr_name_leaves_no_trace_of_the_old_name(library, tmp_path):
    """Right after setfattr returns, the old path is gone for every process (no stale dentry) and
    the new one is there; repeated, since a late invalidation shows only some of the time."""
    old, _ = _upload(library, tmp_path, "n0")
    stale = []
    for i in range(1, 31):
        run("stat", old)  # the kernel now caches old's dentry
        assert setfattr(old, "user.image.name", f"n{i}").returncode == 0
        if run("stat", old, check=False).returncode == 0:
            stale.append(old.name)
        old = library.path("active", f"n{i}")
        assert getfattr_value(old, "user.image.name") == f"n{i}"
    assert stale == []
    assert sorted(p.name for p in (library.mnt / "active").iterdir()) == ["n30"]


def test_setfattr_x_removes_custom_properties_only(library, tmp_path):
    active, _ = _upload(library, tmp_path)
    assert setfattr(active, "user.image.os_distro", "arch").returncode == 0
    assert setfattr(active, "user.image.tags", "a,b").returncode == 0
    assert setfattr(active, "user.image.os_distro", remove=True).returncode == 0
    attrs = getfattr_dump(active)
    assert "user.image.os_distro" not in attrs
    assert attrs["user.image.tags"] == "a,b"
    assert setfattr(active, "user.image.tags", remove=True).returncode == 0
    assert "user.image.tags" not in getfattr_dump(active)
    before = getfattr_dump(active)
    assert_refused(setfattr(active, "user.image.os_distro", remove=True), errno.ENODATA)
    for field in ("min_ram", "name", "id", "status", "checksum", "visibility"):
        assert_refused(setfattr(active, f"user.image.{field}", remove=True), errno.EPERM)
    assert_refused(setfattr(active, "user.imagefs.stores", remove=True), errno.EPERM)
    assert getfattr_dump(active) == before


def test_read_only_and_reserved_fields_are_refused_with_eperm(library, tmp_path):
    active, data = _upload(library, tmp_path)
    read_only = [
        ("user.image.id", "6b1f9a30-8a38-4a4e-9b2e-0f3a9f0a1b2c"),
        ("user.image.status", "deactivated"),
        ("user.image.size", "1"),
        ("user.image.virtual_size", "1"),
        ("user.image.checksum", hashlib.md5(b"x").hexdigest()),
        ("user.image.os_hash_algo", "sha256"),
        ("user.image.os_hash_value", hashlib.sha512(b"x").hexdigest()),
        ("user.image.created_at", "2020-01-01T00:00:00Z"),
        ("user.image.updated_at", "2020-01-01T00:00:00Z"),
        ("user.image.disk_format", "qcow2"),  # formats are fixed once the image is active
        ("user.image.container_format", "ovf"),
        ("user.image.disk_format", "raw"),  # even to the value they have
        ("user.imagefs.reason", "none"),
        ("user.imagefs.stored_format", "qcow2"),
        ("user.imagefs.stores", "elsewhere"),
    ]
    reserved = [
        (f"user.image.{key}", "x")
        for key in (
            "locations", "location", "direct_url", "self", "file", "schema", "stores", "deleted", "deleted_at",
            "os_glance_import_task", "os_glance_failed_import", "os_glance_stores", "os_glance_anything",
        )
    ]
    assert _refusals(active, read_only + reserved, errno.EPERM) == []
    assert_refused(setfattr(active, "user.image.os_glance_x", "y"), errno.EPERM)  # and not as a property either
    assert "user.image.os_glance_x" not in getfattr_dump(active)


def test_invalid_values_are_refused_with_einval_and_change_nothing(library, tmp_path):
    active, _ = _upload(library, tmp_path)
    assert setfattr(active, "user.image.tags", "keep").returncode == 0
    invalid = [
        ("user.image.name", "n" * 256),
        ("user.image.name", ""),
        ("user.image.name", "a/b"),
        ("user.image.min_ram", "-1"),
        ("user.image.min_ram", "1.5"),
        ("user.image.min_ram", "1e3"),
        ("user.image.min_ram", "lots"),
        ("user.image.min_ram", ""),
        ("user.image.min_ram", str(2**31)),  # Glance's columns are 32-bit integers
        ("user.image.min_disk", "-5"),
        ("user.image.min_disk", "0.5"),
        ("user.image.min_disk", "0x10"),
        ("user.image.visibility", "secret"),
        ("user.image.visibility", "Public"),
        ("user.image.visibility", ""),
        ("user.image.protected", "yes"),
        ("user.image.protected", "1"),
        ("user.image.protected", ""),
        ("user.image.os_hidden", "no"),
        ("user.image.os_hidden", "0"),
        ("user.image.tags", ",".join(f"t{i}" for i in range(129))),  # more than 128 tags
        ("user.image.tags", "ok," + "t" * 256),  # one tag over 255 characters
        ("user.image.tags", "a,,b"),  # an empty tag
    ]
    assert _refusals(active, invalid, errno.EINVAL) == []
    assert getfattr_value(active, "user.image.tags") == "keep"


def test_upper_limits_are_accepted_and_exceeding_them_refused(library, tmp_path):
    active, _ = _upload(library, tmp_path)
    assert setfattr(active, "user.image.name", "n" * 255).returncode == 0
    active = library.path("active", "n" * 255)
    assert active.exists()
    tags = [f"tag{i:03d}" for i in range(127)] + ["t" * 255]
    assert setfattr(active, "user.image.tags", ",".join(tags)).returncode == 0
    assert sorted(getfattr_value(active, "user.image.tags").split(",")) == sorted(tags)
    assert setfattr(active, "user.image.min_ram", str(2**31 - 1)).returncode == 0

    # 128 custom properties fit; the 129th is refused; replacing one at the limit is fine
    for i in range(128):
        assert setfattr(active, f"user.image.p{i:03d}", str(i)).returncode == 0
    before = getfattr_dump(active)
    assert len([k for k in before if re.fullmatch(r"user\.image\.p\d{3}", k)]) == 128
    assert_refused(setfattr(active, "user.image.p128", "x"), errno.EINVAL)
    assert getfattr_dump(active) == before
    assert setfattr(active, "user.image.p000", "replaced").returncode == 0
    assert setfattr(active, "user.image.p001", remove=True).returncode == 0
    assert setfattr(active, "user.image.p128", "now it fits").returncode == 0
    assert getfattr_value(active, "user.image.p128") == "now it fits"

    # Property keys: Glance allows 255 characters, but the kernel limits a whole xattr name to 255
    # bytes (XATTR_NAME_MAX), so with "user.image." at most 244 characters reach imagefs; longer
    # names are refused by the kernel itself (ERANGE) before any FUSE request, so imagefs's own
    # 255-character check is not reachable through the mount. Test both edges of what is reachable.
    assert setfattr(active, "user.image.p002", remove=True).returncode == 0  # room for one more
    key = "k" * (255 - len("user.image."))
    assert setfattr(active, f"user.image.{key}", "long key").returncode == 0
    assert getfattr_dump(active)[f"user.image.{key}"] == "long key"
    before = getfattr_dump(active)
    assert_refused(setfattr(active, f"user.image.{key}k", "x"), errno.ERANGE)
    assert getfattr_dump(active) == before


def test_formats_are_validated_while_queued_and_fixed_once_active(library, tmp_path):
    incoming = library.mnt / "incoming" / "fmt"
    run("touch", incoming)
    for disk_format in ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "ploop", "iso"):
        result = setfattr(incoming, "user.image.disk_format", disk_format)
        assert result.returncode == 0, (disk_format, result.stderr)
        assert getfattr_value(incoming, "user.image.disk_format") == disk_format
    for container_format in ("ami", "ari", "aki", "ovf", "ova", "docker", "compressed", "bare"):
        result = setfattr(incoming, "user.image.container_format", container_format)
        assert result.returncode == 0, (container_format, result.stderr)
        assert getfattr_value(incoming, "user.image.container_format") == container_format
    invalid = [
        ("user.image.disk_format", "QCOW2"),
        ("user.image.disk_format", "qcow"),
        ("user.image.disk_format", "img"),
        ("user.image.disk_format", "raw "),
        ("user.image.disk_format", ""),
        ("user.image.container_format", "tar"),
        ("user.image.container_format", "BARE"),
        ("user.image.container_format", ""),
        ("user.image.size", "-1"),
        ("user.image.size", "big"),
        ("user.image.checksum", "abc"),
        ("user.image.checksum", "g" * 32),
        ("user.image.os_hash_value", "0" * 64),  # a sha256 length where sha512 is configured
    ]
    assert _refusals(incoming, invalid, errno.EINVAL) == []
    assert setfattr(incoming, "user.image.disk_format", "raw").returncode == 0
    source = tmp_path / "fmt.src"
    source.write_bytes(b"\x01" * 4096)
    run("cp", source, incoming)
    active = library.path("active", "fmt")
    attrs = getfattr_dump(active)
    assert (attrs["user.image.disk_format"], attrs["user.image.container_format"]) == ("raw", "bare")
    assert _refusals(active, [("user.image.disk_format", "qcow2"), ("user.image.container_format", "ovf")],
                     errno.EPERM) == []


def test_only_user_attributes_exist_and_ls_stops_asking_for_labels_and_acls(library, tmp_path):
    """security.* and system.* are not supported (EOPNOTSUPP, not ENODATA): ls -l asks once per
    mount instead of twice per file, and the kernel's security.capability check before writes
    costs nothing."""
    for i in range(3):
        source = tmp_path / f"img{i}"
        source.write_bytes(os.urandom(1000))
        library.upload(source)
    active = library.path("active", "img0")
    for name in ("security.selinux", "system.posix_acl_access", "security.capability", "trusted.x"):
        with pytest.raises(OSError) as raised:
            os.getxattr(active, name)
        assert raised.value.errno == errno.EOPNOTSUPP, name
    assert os.getxattr(active, "user.image.status") == b"active"  # user.* still answered
    traced = run("strace", "-f", "-c", "-e", "trace=getxattr,lgetxattr", "ls", "-l", library.mnt / "active")
    calls = [line.split() for line in traced.stderr.splitlines() if line.strip().endswith("getxattr")]
    assert sum(int(fields[3]) for fields in calls) <= 2, traced.stderr

"""Metadata as xattrs: Glance's v2 schema rules for setxattr/removexattr, and what getfattr shows."""

import errno
import hashlib
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagefs.catalog import Image
from imagefs.errors import Forbidden, Invalid, NoAttribute, ReadOnlyField
from imagefs.lifecycle import Status
from imagefs.metadata import Change, image_xattrs, parse_remove, parse_set

NOW = 1_700_000_000 * 10**9
DATA = b"image data"

QUEUED = Image(
    seq=1, id="0b4a6f6e-7f5e-4c43-9d2a-3c1f1a2b3c4d", name="cirros", status=Status.QUEUED, disk_format=None,
    container_format=None, size=None, virtual_size=None, checksum=None, os_hash_algo=None, os_hash_value=None,
    min_disk=0, min_ram=0, visibility="shared", protected=False, os_hidden=False, owner="demo", created_ns=NOW,
    updated_ns=NOW + 10**9, deleted_ns=None, blob_key=None, store=None, reason=None, stored_format=None,
    expected_size=None, expected_checksum=None, expected_os_hash_value=None,
)
SAVING = replace(QUEUED, status=Status.SAVING)
ACTIVE = replace(
    QUEUED, status=Status.ACTIVE, disk_format="raw", container_format="bare", size=len(DATA), virtual_size=len(DATA),
    checksum=hashlib.md5(DATA).hexdigest(), os_hash_algo="sha512", os_hash_value=hashlib.sha512(DATA).hexdigest(),
    blob_key="sha512:" + hashlib.sha512(DATA).hexdigest(), store="local", stored_format="raw",
)
UPLOADING = [QUEUED, SAVING]
FINALIZED = [
    ACTIVE, replace(ACTIVE, status=Status.DEACTIVATED), replace(ACTIVE, status=Status.PENDING_DELETE),
    replace(QUEUED, status=Status.KILLED, reason="bad"), replace(QUEUED, status=Status.IMPORTING),
]


def set_(key, value, image=QUEUED, *, admin=False, count=0, has=False, algo="sha512", attr=None) -> Change:
    raw = value if isinstance(value, bytes) else value.encode()
    return parse_set(
        attr or f"user.image.{key}", raw, image, is_admin=admin, property_count=count, has_property=has, hash_algo=algo
    )


def refused(exc, errno_, key, value, image=QUEUED, **kwargs):
    with pytest.raises(exc) as raised:
        set_(key, value, image, **kwargs)
    assert raised.value.errno == errno_
    return raised.value


# --- name -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cirros", "a", "x" * 255, "ubuntu 24.04 (noble).qcow2", ".hidden", "...", "é"])
def test_good_names(name):
    assert set_("name", name, ACTIVE) == Change("column", "name", name)
    refused(ReadOnlyField, errno.EPERM, "name", name)  # an upload is named by its file name


@pytest.mark.parametrize("name", ["", ".", "..", "/", "a/b", "x" * 256, "a\x00b"])
def test_bad_names(name):
    refused(Invalid, errno.EINVAL, "name", name, ACTIVE)


@given(st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1))
@settings(max_examples=200)
def test_any_name_without_slash_fits_or_is_refused_by_length(name):
    if name in (".", ".."):
        return
    if len(name.encode()) <= 255:
        assert set_("name", name, ACTIVE).value == name
    else:
        refused(Invalid, errno.EINVAL, "name", name, ACTIVE)


# --- min_ram / min_disk -------------------------------------------------------------


@pytest.mark.parametrize("key", ["min_ram", "min_disk"])
@given(number=st.integers(0, 2**31 - 1))
def test_any_non_negative_int_is_accepted(key, number):
    assert set_(key, str(number)) == Change("column", key, number)
    assert set_(key, str(number), ACTIVE) == Change("column", key, number)


@pytest.mark.parametrize("key", ["min_ram", "min_disk"])
@given(number=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31)))
def test_negative_or_huge_ints_are_refused(key, number):
    refused(Invalid, errno.EINVAL, key, str(number))


def _has_non_digit(text: str) -> bool:
    return not text.strip() or any(not ("0" <= c <= "9") and not c.isspace() for c in text)


@pytest.mark.parametrize("key", ["min_ram", "min_disk"])
@given(text=st.text().filter(_has_non_digit))
def test_any_non_digit_string_is_refused(key, text):
    refused(Invalid, errno.EINVAL, key, text)


@pytest.mark.parametrize("text", ["1.5", "1e3", "0x10", "+1", "١٢", "½", "²", ""])
def test_number_lookalikes_are_refused(text):
    refused(Invalid, errno.EINVAL, "min_ram", text)


# --- enums and booleans ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["community", "private", "shared"])
def test_visibility_for_anyone(value):
    assert set_("visibility", value) == Change("column", "visibility", value)


def test_public_is_for_admins():
    refused(Forbidden, errno.EPERM, "visibility", "public")
    assert set_("visibility", "public", admin=True) == Change("column", "visibility", "public")


@pytest.mark.parametrize("value", ["Public", "secret", "", "private "])
def test_bad_visibility(value):
    refused(Invalid, errno.EINVAL, "visibility", value, admin=True)


@pytest.mark.parametrize("key", ["protected", "os_hidden"])
def test_booleans(key):
    assert set_(key, "true") == Change("column", key, True)
    assert set_(key, "false", ACTIVE) == Change("column", key, False)
    for bad in ("yes", "1", "", "maybe"):
        refused(Invalid, errno.EINVAL, key, bad)


DISK = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "ploop", "iso"]
CONTAINER = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]


@pytest.mark.parametrize("image", UPLOADING, ids=lambda i: str(i.status))
def test_formats_before_finalize(image):
    for value in DISK:
        assert set_("disk_format", value, image) == Change("column", "disk_format", value)
    for value in CONTAINER:
        assert set_("container_format", value, image) == Change("column", "container_format", value)
    for bad in ("QCOW2", "qcow", "bare", ""):
        refused(Invalid, errno.EINVAL, "disk_format", bad, image)
    for bad in ("raw", "BARE", "tar", ""):
        refused(Invalid, errno.EINVAL, "container_format", bad, image)


@pytest.mark.parametrize("image", FINALIZED, ids=lambda i: str(i.status))
def test_formats_after_finalize_are_read_only(image):
    refused(ReadOnlyField, errno.EPERM, "disk_format", "qcow2", image)
    refused(ReadOnlyField, errno.EPERM, "container_format", "bare", image)


# --- tags and properties -------------------------------------------------------------


def test_tags():
    assert set_("tags", "b,a") == Change("tags", "tags", ["b", "a"])
    assert set_("tags", "") == Change("tags", "tags", [])
    tags = [f"t{i}" for i in range(128)]
    assert set_("tags", ",".join(tags)).value == tags
    refused(Invalid, errno.EINVAL, "tags", ",".join(tags + ["one-more"]))
    assert set_("tags", "x" * 255).value == ["x" * 255]
    refused(Invalid, errno.EINVAL, "tags", "x" * 256)
    refused(Invalid, errno.EINVAL, "tags", "a,,b")


def test_custom_properties():
    assert set_("hw_disk_bus", "virtio") == Change("property", "hw_disk_bus", "virtio")
    assert set_("description", "", ACTIVE) == Change("property", "description", "")
    assert set_("long", "v" * 100_000).value == "v" * 100_000  # Glance's value column is Text


def test_at_most_128_properties():
    assert set_("p", "v", count=127).kind == "property"
    refused(Invalid, errno.EINVAL, "p", "v", count=128)
    assert set_("p", "v", count=128, has=True).kind == "property"  # replacing one is not adding


def test_key_length():
    assert set_("k" * 255, "v").name == "k" * 255
    refused(Invalid, errno.EINVAL, "k" * 256, "v")
    refused(Invalid, errno.EINVAL, "", "v")


@pytest.mark.parametrize(
    "key",
    ["locations", "location", "deleted", "deleted_at", "direct_url", "self", "file", "schema", "stores",
     "os_glance_import_task", "os_glance_stage_host", "os_glance", "os_glancefoo"],
)
@pytest.mark.parametrize("image", [QUEUED, ACTIVE], ids=["queued", "active"])
def test_reserved_keys_are_forbidden(key, image):
    refused(Forbidden, errno.EPERM, key, "x", image, admin=True)


@pytest.mark.parametrize("key", ["id", "status", "os_hash_algo", "virtual_size", "created_at", "updated_at"])
@pytest.mark.parametrize("image", UPLOADING + FINALIZED, ids=lambda i: str(i.status))
def test_read_only_fields(key, image):
    refused(ReadOnlyField, errno.EPERM, key, "1", image, admin=True)


def test_owner_is_for_admins():
    refused(Forbidden, errno.EPERM, "owner", "other")
    assert set_("owner", "other", admin=True) == Change("column", "owner", "other")
    refused(Invalid, errno.EINVAL, "owner", "o" * 256, admin=True)


def test_other_namespaces():
    refused(ReadOnlyField, errno.EPERM, None, "x", attr="user.imagefs.reason")
    refused(Forbidden, errno.EPERM, None, "x", attr="user.other")
    refused(Forbidden, errno.EPERM, None, "x", attr="trusted.image.name")


@pytest.mark.parametrize("key", ["name", "min_ram", "hw_disk_bus", "tags", "disk_format", "size"])
def test_non_utf8_values_are_invalid(key):
    refused(Invalid, errno.EINVAL, key, b"\xff\xfe\x80")


def test_nul_in_a_value_is_invalid():
    refused(Invalid, errno.EINVAL, "description", b"a\x00b")


# --- declared size and hashes ----------------------------------------------------------

LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@pytest.mark.parametrize("image", UPLOADING, ids=lambda i: str(i.status))
def test_declarations_before_finalize(image):
    assert set_("size", "1048576", image) == Change("column", "expected_size", 1048576)
    md5 = hashlib.md5(DATA).hexdigest()
    assert set_("checksum", md5, image) == Change("column", "expected_checksum", md5)
    assert set_("checksum", md5.upper(), image).value == md5
    for algo, length in LENGTHS.items():
        digest = hashlib.new(algo, DATA).hexdigest()
        assert len(digest) == length
        assert set_("os_hash_value", digest, image, algo=algo) == Change("column", "expected_os_hash_value", digest)


@pytest.mark.parametrize("algo", sorted(LENGTHS))
def test_hash_of_the_wrong_length_or_not_hex(algo):
    for other in LENGTHS:
        if other != algo:
            refused(Invalid, errno.EINVAL, "os_hash_value", hashlib.new(other, DATA).hexdigest(), algo=algo)
    refused(Invalid, errno.EINVAL, "os_hash_value", hashlib.md5(DATA).hexdigest(), algo=algo)
    refused(Invalid, errno.EINVAL, "os_hash_value", "g" * LENGTHS[algo], algo=algo)
    refused(Invalid, errno.EINVAL, "os_hash_value", "", algo=algo)


def test_bad_checksums_and_sizes():
    for bad in ("a" * 31, "a" * 33, "z" * 32, hashlib.sha256(DATA).hexdigest()):
        refused(Invalid, errno.EINVAL, "checksum", bad)
    for bad in ("-1", "1.0", "big", ""):
        refused(Invalid, errno.EINVAL, "size", bad)


@pytest.mark.parametrize("key,value", [
    ("size", "10"), ("checksum", "a" * 32), ("os_hash_value", "a" * 128),
])
@pytest.mark.parametrize("image", FINALIZED, ids=lambda i: str(i.status))
def test_declarations_are_read_only_after_finalize(key, value, image):
    refused(ReadOnlyField, errno.EPERM, key, value, image)


# --- removexattr -----------------------------------------------------------------------


def test_remove():
    assert parse_remove("user.image.hw_disk_bus", ACTIVE, has_property=True) == Change("delete_property", "hw_disk_bus")
    assert parse_remove("user.image.tags", ACTIVE, has_property=False) == Change("tags", "tags", [])
    with pytest.raises(NoAttribute) as raised:
        parse_remove("user.image.hw_disk_bus", ACTIVE, has_property=False)
    assert raised.value.errno == errno.ENODATA


@pytest.mark.parametrize("image", UPLOADING, ids=lambda i: str(i.status))
def test_remove_undeclares_before_finalize(image):
    for key, column in [("size", "expected_size"), ("checksum", "expected_checksum"),
                        ("os_hash_value", "expected_os_hash_value")]:
        assert parse_remove(f"user.image.{key}", image, has_property=False) == Change("column", column, None)


@pytest.mark.parametrize(
    "attr",
    ["user.image.id", "user.image.name", "user.image.status", "user.image.size", "user.image.checksum",
     "user.image.disk_format", "user.image.visibility", "user.image.locations", "user.image.os_glance_x",
     "user.imagefs.reason", "user.other"],
)
def test_remove_base_and_reserved_fields_is_refused(attr):
    with pytest.raises(ReadOnlyField) as raised:
        parse_remove(attr, ACTIVE, has_property=True)
    assert raised.value.errno == errno.EPERM


# --- what getfattr shows ---------------------------------------------------------------


def _glance_time(ns):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


def test_xattrs_of_an_active_image():
    attrs = image_xattrs(ACTIVE, {"hw_disk_bus": "virtio"}, ["a", "b"], {"reason": None, "stored_format": "raw"})
    assert attrs == {
        "user.image.id": ACTIVE.id.encode(),
        "user.image.name": b"cirros",
        "user.image.status": b"active",
        "user.image.disk_format": b"raw",
        "user.image.container_format": b"bare",
        "user.image.size": str(len(DATA)).encode(),
        "user.image.virtual_size": str(len(DATA)).encode(),
        "user.image.checksum": hashlib.md5(DATA).hexdigest().encode(),
        "user.image.os_hash_algo": b"sha512",
        "user.image.os_hash_value": hashlib.sha512(DATA).hexdigest().encode(),
        "user.image.min_disk": b"0",
        "user.image.min_ram": b"0",
        "user.image.visibility": b"shared",
        "user.image.protected": b"false",
        "user.image.os_hidden": b"false",
        "user.image.owner": b"demo",
        "user.image.tags": b"a,b",
        "user.image.created_at": _glance_time(NOW).encode(),
        "user.image.updated_at": _glance_time(NOW + 10**9).encode(),
        "user.image.hw_disk_bus": b"virtio",
        "user.imagefs.stored_format": b"raw",
    }
    # Listing order: the v2 schema's, then custom properties, then imagefs' own.
    assert list(attrs)[:3] == ["user.image.id", "user.image.name", "user.image.status"]
    assert list(attrs)[-2:] == ["user.image.hw_disk_bus", "user.imagefs.stored_format"]


def test_xattrs_of_an_upload_show_declarations_not_data():
    declared = replace(SAVING, expected_size=5, expected_checksum="c" * 32, size=99, checksum="d" * 32)
    attrs = image_xattrs(declared, {}, [], {})
    assert attrs["user.image.size"] == b"5"
    assert attrs["user.image.checksum"] == b"c" * 32
    assert "user.image.os_hash_value" not in attrs
    assert "user.image.tags" not in attrs and "user.image.disk_format" not in attrs
    assert attrs["user.image.status"] == b"saving"


def test_xattrs_of_a_killed_image_carry_the_reason():
    attrs = image_xattrs(replace(QUEUED, status=Status.KILLED, protected=True), {}, [], {"reason": "bad data"})
    assert attrs["user.imagefs.reason"] == b"bad data"
    assert attrs["user.image.protected"] == b"true"


def test_settable_values_shown_are_accepted_back():
    # rsync -X / cp --preserve=xattr copy what getfattr shows onto another upload: every
    # settable value imagefs renders must pass its own validation unchanged.
    image = replace(QUEUED, min_ram=512, min_disk=2, visibility="community", protected=True, os_hidden=True,
                    disk_format="qcow2", container_format="bare", expected_size=10, expected_checksum="a" * 32,
                    expected_os_hash_value="b" * 128)
    attrs = image_xattrs(image, {"os_distro": "ubuntu"}, ["x", "y"], {})
    readonly = {"id", "status", "os_hash_algo", "virtual_size", "created_at", "updated_at", "name"}
    for attr, value in attrs.items():
        key = attr[len("user.image."):]
        if key in readonly:
            continue
        change = parse_set(attr, value, image, is_admin=True, property_count=1, has_property=True, hash_algo="sha512")
        shown = change.value
        if isinstance(shown, bool):
            shown = "true" if shown else "false"
        elif isinstance(shown, list):
            shown = ",".join(shown)
        assert str(shown).encode() == value, attr

"""Image metadata as extended attributes, validated as Glance's v2 schema does.

`user.image.<field>` holds every v2 field and every custom property;
`user.imagefs.<key>` holds what Glance has no field for. This module is pure:
it renders an image's attributes and turns one setxattr/removexattr into a
validated `Change`, raising Invalid (EINVAL) or ReadOnlyField/Forbidden
(EPERM) before anything is written.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from .catalog import Image
from .errors import Forbidden, Invalid, NoAttribute, ReadOnlyField
from .lifecycle import UPLOADING
from .signing import PROPERTIES as SIGNATURE_PROPERTIES

IMAGE_PREFIX = "user.image."
IMAGEFS_PREFIX = "user.imagefs."

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "ploop", "iso")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("community", "public", "private", "shared")

# Glance's quotas and column sizes (glance/common/config.py, db models).
MAX_NAME = 255
MAX_PROPERTIES = 128
MAX_TAGS = 128
MAX_TAG = 255
MAX_KEY = 255
MAX_INT32 = 2**31 - 1

# Order of `getfattr -d`: the v2 schema's base properties.
BASE_FIELDS = (
    "id", "name", "status", "disk_format", "container_format", "size", "virtual_size", "checksum",
    "os_hash_algo", "os_hash_value", "min_disk", "min_ram", "visibility", "protected", "os_hidden",
    "owner", "tags", "created_at", "updated_at",
)
ALWAYS_READONLY = frozenset({"id", "status", "os_hash_algo", "virtual_size", "created_at", "updated_at"})
# Read-only once data is finalized; before that, a value set is a declaration checked at finalize.
DECLARABLE = {"size": "expected_size", "checksum": "expected_checksum", "os_hash_value": "expected_os_hash_value"}
# Settable only before the data is finalized (Glance: while queued).
FORMAT_FIELDS = frozenset({"disk_format", "container_format"})
# Glance's reserved and disallowed names, and its reserved namespace.
RESERVED = frozenset({"locations", "location", "deleted", "deleted_at", "direct_url", "self", "file", "schema", "stores"})
RESERVED_PREFIX = "os_glance"
# The img_signature* properties (SPEC §6) are verified at finalize; after it they stay as verified.
SIGNED = frozenset(SIGNATURE_PROPERTIES)

HEX = frozenset(string.hexdigits.lower())
HASH_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Change:
    """One validated metadata change for the tree to apply."""

    kind: str  # "column", "property", "delete_property", "tags"
    name: str  # column or property name
    value: object = None


def _bool(value: str) -> str:
    return "true" if value else "false"


def image_xattrs(image: Image, properties: dict[str, str], tags: list[str], extra: dict[str, str]) -> dict[str, bytes]:
    """Every attribute of an image, in listing order; fields without a value are left out."""
    base = {
        "id": image.id, "name": image.name, "status": str(image.status), "disk_format": image.disk_format,
        "container_format": image.container_format, "size": image.size, "virtual_size": image.virtual_size,
        "checksum": image.checksum, "os_hash_algo": image.os_hash_algo, "os_hash_value": image.os_hash_value,
        "min_disk": image.min_disk, "min_ram": image.min_ram, "visibility": image.visibility,
        "protected": _bool(image.protected), "os_hidden": _bool(image.os_hidden), "owner": image.owner,
        "tags": ",".join(tags) if tags else None, "created_at": image.created_at, "updated_at": image.updated_at,
    }
    if image.status in UPLOADING:
        # Before finalize the declared values stand where the computed ones will.
        for field, column in DECLARABLE.items():
            base[field] = getattr(image, column)
    out = {}
    for key in BASE_FIELDS:
        if base[key] is not None:
            out[IMAGE_PREFIX + key] = str(base[key]).encode()
    for key, value in properties.items():
        out[IMAGE_PREFIX + key] = value.encode()
    for key, value in extra.items():
        if value is not None:
            out[IMAGEFS_PREFIX + key] = value.encode()
    return out


# What a new image has before anyone declares anything.
_UNDECLARED = {"min_disk": b"0", "min_ram": b"0", "visibility": b"shared", "protected": b"false", "os_hidden": b"false"}


def declared_names(attrs: dict[str, bytes]) -> list[str]:
    """The attributes of an upload that someone declared: what listxattr shows in incoming/.

    Tools that mirror xattrs (rsync -X) remove every listed attribute the source
    lacks; listing the computed ones (id, status, created_at...) would make them
    try to remove read-only fields.
    """
    names = []
    for name, value in attrs.items():
        key = name[len(IMAGE_PREFIX):] if name.startswith(IMAGE_PREFIX) else None
        if key is None or key in ALWAYS_READONLY or key in ("name", "owner") or _UNDECLARED.get(key) == value:
            continue
        names.append(name)
    return names


def _decode(value: bytes) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        raise Invalid("value is not UTF-8") from None
    if "\x00" in text:
        raise Invalid("value contains NUL")
    return text


def _non_negative_int(field: str, text: str, limit: int = MAX_INT32) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise Invalid(f"{field} must be a non-negative integer, not {text!r}")
    number = int(text)
    if number > limit:
        raise Invalid(f"{field} must be at most {limit}")
    return number


def _boolean(field: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise Invalid(f"{field} must be true or false, not {text!r}")
    return lowered == "true"


def _one_of(field: str, text: str, choices) -> str:
    if text not in choices:
        raise Invalid(f"{field} must be one of {', '.join(choices)}, not {text!r}")
    return text


def validate_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise Invalid(f"{name!r} is not a usable image name")
    if len(name) > MAX_NAME or len(name.encode()) > MAX_NAME:
        raise Invalid(f"image names are at most {MAX_NAME} characters")
    return name


def _tags(text: str) -> list[str]:
    tags = [t.strip() for t in text.split(",")] if text.strip() else []
    if len(tags) > MAX_TAGS:
        raise Invalid(f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not tag or len(tag) > MAX_TAG:
            raise Invalid(f"tags are 1 to {MAX_TAG} characters, separated by commas")
    return tags


def parse_set(
    attr: str, raw: bytes, image: Image, *, is_admin: bool, property_count: int, has_property: bool, hash_algo: str
) -> Change:
    """Validate `setxattr(attr, raw)` on `image`; raise before anything changes."""
    if attr.startswith(IMAGEFS_PREFIX):
        raise ReadOnlyField(f"{attr} is maintained by imagefs")
    if not attr.startswith(IMAGE_PREFIX):
        # Other namespaces (trusted., security.) have no meaning on an image.
        raise Forbidden(f"only user.image.* attributes can be set, not {attr}")
    key = attr[len(IMAGE_PREFIX):]
    text = _decode(raw)
    uploading = image.status in UPLOADING
    if not key or len(key) > MAX_KEY:
        raise Invalid(f"property names are 1 to {MAX_KEY} characters")
    if key in RESERVED or key.startswith(RESERVED_PREFIX):
        raise Forbidden(f"{key} is reserved by Glance")
    if key in ALWAYS_READONLY:
        raise ReadOnlyField(f"{key} is read-only")
    if key in DECLARABLE:
        if not uploading:
            raise ReadOnlyField(f"{key} is read-only once the data is finalized")
        if key == "size":
            return Change("column", "expected_size", _non_negative_int(key, text, 2**63 - 1))
        value = text.strip().lower()
        length = 32 if key == "checksum" else HASH_LENGTHS[hash_algo]
        if len(value) != length or not set(value) <= HEX:
            raise Invalid(f"{key} must be {length} hex digits ({'md5' if key == 'checksum' else hash_algo})")
        return Change("column", DECLARABLE[key], value)
    if key in FORMAT_FIELDS:
        if not uploading:
            raise ReadOnlyField(f"{key} can only be set before the data is finalized")
        choices = DISK_FORMATS if key == "disk_format" else CONTAINER_FORMATS
        return Change("column", key, _one_of(key, text, choices))
    if key == "name":
        if uploading:
            # An upload's name is its file name (what cp or rsync chose): a name carried in from
            # an exported image would rename it under the writer's feet. Rename the file instead.
            raise ReadOnlyField("an upload is named by its file name: rename the file")
        return Change("column", "name", validate_name(text))
    if key in ("min_disk", "min_ram"):
        return Change("column", key, _non_negative_int(key, text))
    if key in ("protected", "os_hidden"):
        return Change("column", key, _boolean(key, text))
    if key == "visibility":
        value = _one_of(key, text, VISIBILITIES)
        if value == "public" and not is_admin:
            raise Forbidden("publicizing an image is for admins (Glance's publicize_image policy)")
        return Change("column", key, value)
    if key == "owner":
        if not is_admin:
            raise Forbidden("only admins change an image's owner")
        if len(text) > 255:
            raise Invalid("owner is at most 255 characters")
        return Change("column", key, text)
    if key == "tags":
        return Change("tags", key, _tags(text))
    if key in SIGNED and not uploading:
        raise ReadOnlyField(f"{key} is read-only once the data is finalized (the signature was checked with it)")
    if not has_property and property_count >= MAX_PROPERTIES:
        raise Invalid(f"an image has at most {MAX_PROPERTIES} properties")
    return Change("property", key, text)


def parse_remove(attr: str, image: Image, *, has_property: bool) -> Change:
    """Validate `removexattr(attr)`: custom properties, tags and undeclaring expectations."""
    if not attr.startswith(IMAGE_PREFIX):
        raise ReadOnlyField(f"{attr} cannot be removed")
    key = attr[len(IMAGE_PREFIX):]
    if key == "tags":
        return Change("tags", key, [])
    if key in DECLARABLE and image.status in UPLOADING:
        return Change("column", DECLARABLE[key], None)
    if key in BASE_FIELDS or key in RESERVED or key.startswith(RESERVED_PREFIX):
        raise ReadOnlyField(f"{key} is a base field and cannot be removed")
    if key in SIGNED and image.status not in UPLOADING:
        raise ReadOnlyField(f"{key} is read-only once the data is finalized (the signature was checked with it)")
    if not has_property:
        raise NoAttribute(f"no property {key}")
    return Change("delete_property", key)

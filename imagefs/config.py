"""The configuration file: one TOML file, every key optional.

The sections are fixed by SPEC §10; keys inside them are ours. Every key and
its default is listed in the README ("Configuration"); a test checks that the
two agree, so a key added here without documentation fails the suite.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

DEFAULT_CONFIG_FILE = Path("/etc/imagefs/imagefs.toml")
DEFAULT_DATA_DIR = Path("/var/lib/imagefs")

HASH_ALGORITHMS = ("sha256", "sha384", "sha512")

# section -> key -> default; "data_dir" is the only top-level key.
DEFAULTS: dict[str, dict[str, object]] = {
    "hashing": {"algorithm": "sha512"},
    "stores": {"default": "local"},
    "upload": {
        "staging_dir": "",  # empty: <data_dir>/staging
        "flush_every_mib": 64,
        "zero_chunks_as_holes": True,
    },
    "inspection": {"require_image_format_match": True},
    "import": {},
    "signing": {},
    "access": {"admin_uids": [0]},
    "delete": {},
    "cache": {"attr_timeout": 3600.0},
}

STORE_DEFAULTS = {"type": "dir", "path": ""}  # empty path: <data_dir>/store


@dataclass(frozen=True)
class StoreConfig:
    name: str
    type: str
    path: Path


@dataclass(frozen=True)
class Config:
    data_dir: Path
    hash_algorithm: str = "sha512"
    staging_dir: Path | None = None
    flush_every_mib: int = 64
    zero_chunks_as_holes: bool = True
    admin_uids: tuple[int, ...] = (0,)
    require_image_format_match: bool = True
    attr_timeout: float = 3600.0
    default_store: str = "local"
    stores: dict[str, StoreConfig] = field(default_factory=dict)

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def staging_path(self) -> Path:
        return self.staging_dir or self.data_dir / "staging"

    @property
    def store(self) -> StoreConfig:
        return self.stores[self.default_store]


def _section(raw: dict, name: str) -> dict:
    values = raw.get(name, {})
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = DEFAULTS[name]
    if name != "stores":
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    for key, value in values.items():
        if key in known and not _same_type(value, known[key]):
            raise ConfigError(f"[{name}] {key} = {value!r}: expected a {type(known[key]).__name__}")
    return {**known, **values}


def _same_type(value, default) -> bool:
    """A value is of its default's type (an int is fine where a float is; a bool is not an int)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def load_config(path: Path | None = None, data_dir: Path | None = None) -> Config:
    """Read the config file (if any) and apply a --data-dir override."""
    raw: dict = {}
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
    unknown = set(raw) - set(DEFAULTS) - {"data_dir"}
    if unknown:
        raise ConfigError(f"unknown section(s) or key(s): {', '.join(sorted(unknown))}")

    # Absolute, since the daemon runs from / and store locations are file:// URLs.
    data_dir = Path(os.path.abspath(data_dir or raw.get("data_dir") or DEFAULT_DATA_DIR))
    hashing = _section(raw, "hashing")
    if hashing["algorithm"] not in HASH_ALGORITHMS:
        raise ConfigError(f"[hashing] algorithm must be one of {', '.join(HASH_ALGORITHMS)}")
    upload = _section(raw, "upload")
    stores_raw = _section(raw, "stores")
    default_store = stores_raw.pop("default")
    stores = {}
    for name, table in stores_raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[stores.{name}] must be a table")
        unknown = set(table) - set(STORE_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown key(s) in [stores.{name}]: {', '.join(sorted(unknown))}")
        table = {**STORE_DEFAULTS, **table}
        stores[name] = StoreConfig(name, table["type"], Path(os.path.abspath(table["path"] or data_dir / "store")))
    if "local" not in stores:
        stores["local"] = StoreConfig("local", "dir", data_dir / "store")
    if default_store not in stores:
        raise ConfigError(f"[stores] default = {default_store!r} names no [stores.{default_store}] table")
    inspection = _section(raw, "inspection")
    for empty in ("import", "signing", "delete"):
        _section(raw, empty)  # refuses keys until the features that own them land
    cache = _section(raw, "cache")
    return Config(
        data_dir=data_dir,
        hash_algorithm=hashing["algorithm"],
        staging_dir=Path(os.path.abspath(upload["staging_dir"])) if upload["staging_dir"] else None,
        flush_every_mib=int(upload["flush_every_mib"]),
        zero_chunks_as_holes=bool(upload["zero_chunks_as_holes"]),
        admin_uids=tuple(_section(raw, "access")["admin_uids"]),
        require_image_format_match=bool(inspection["require_image_format_match"]),
        attr_timeout=float(cache["attr_timeout"]),
        default_store=default_store,
        stores=stores,
    )

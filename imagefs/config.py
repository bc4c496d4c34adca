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
        "staging_quota_mib": 0,  # 0: no quota, the staging filesystem's free space is the limit
    },
    "inspection": {"require_image_format_match": True},
    "import": {},
    "signing": {
        "certificate_dir": "",  # empty: <data_dir>/certificates
        "trusted_ca_file": "",  # empty: no trust store (Glance's checks only)
        "verify_certificate": True,  # with a trust store: chain, validity period, digitalSignature
    },
    "access": {"admin_uids": [0]},
    "delete": {},
    "cache": {"attr_timeout": 3600.0},
}

STORE_DEFAULTS: dict[str, object] = {
    "type": "dir",
    "path": "",  # empty: <data_dir>/store
    "require_mount": False,  # the path must be a mount point (a share): never written to otherwise
    "probe_interval": 0.5,  # seconds between health probes
    "timeout": 5.0,  # seconds a store call or probe may take before the store counts as failed
}


@dataclass(frozen=True)
class StoreConfig:
    name: str
    type: str
    path: Path
    require_mount: bool = False
    probe_interval: float = 0.5
    timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    data_dir: Path
    hash_algorithm: str = "sha512"
    staging_dir: Path | None = None
    flush_every_mib: int = 64
    zero_chunks_as_holes: bool = True
    staging_quota_mib: int = 0
    admin_uids: tuple[int, ...] = (0,)
    require_image_format_match: bool = True
    attr_timeout: float = 3600.0
    default_store: str = "local"
    stores: dict[str, StoreConfig] = field(default_factory=dict)
    certificate_dir: Path | None = None
    trusted_ca_file: Path | None = None
    verify_certificate: bool = True

    @property
    def certificate_path(self) -> Path:
        """The directory of signing certificates (the certificate store)."""
        return self.certificate_dir or self.data_dir / "certificates"

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


def _uids(values: list) -> tuple[int, ...]:
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(f"[access] admin_uids = {values!r}: expected a list of uids (integers)")
    return tuple(values)


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
    if upload["staging_quota_mib"] < 0:
        raise ConfigError("[upload] staging_quota_mib must be 0 (no quota) or more")
    stores_raw = _section(raw, "stores")
    default_store = stores_raw.pop("default")
    stores = {}
    for name, table in stores_raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[stores.{name}] must be a table")
        unknown = set(table) - set(STORE_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown key(s) in [stores.{name}]: {', '.join(sorted(unknown))}")
        for key, value in table.items():
            if not _same_type(value, STORE_DEFAULTS[key]):
                raise ConfigError(f"[stores.{name}] {key} = {value!r}: expected a {type(STORE_DEFAULTS[key]).__name__}")
        table = {**STORE_DEFAULTS, **table}
        if table["probe_interval"] <= 0 or table["timeout"] <= 0:
            raise ConfigError(f"[stores.{name}] probe_interval and timeout must be positive")
        stores[name] = StoreConfig(
            name, table["type"], Path(os.path.abspath(table["path"] or data_dir / "store")),
            require_mount=table["require_mount"], probe_interval=float(table["probe_interval"]),
            timeout=float(table["timeout"]),
        )
    if "local" not in stores:
        stores["local"] = StoreConfig("local", "dir", data_dir / "store")
    if default_store not in stores:
        raise ConfigError(f"[stores] default = {default_store!r} names no [stores.{default_store}] table")
    inspection = _section(raw, "inspection")
    for empty in ("import", "delete"):
        _section(raw, empty)  # refuses keys until the features that own them land
    signing = _section(raw, "signing")
    cache = _section(raw, "cache")
    return Config(
        data_dir=data_dir,
        hash_algorithm=hashing["algorithm"],
        staging_dir=Path(os.path.abspath(upload["staging_dir"])) if upload["staging_dir"] else None,
        flush_every_mib=int(upload["flush_every_mib"]),
        zero_chunks_as_holes=bool(upload["zero_chunks_as_holes"]),
        staging_quota_mib=int(upload["staging_quota_mib"]),
        admin_uids=_uids(_section(raw, "access")["admin_uids"]),
        require_image_format_match=bool(inspection["require_image_format_match"]),
        attr_timeout=float(cache["attr_timeout"]),
        default_store=default_store,
        stores=stores,
        certificate_dir=Path(os.path.abspath(signing["certificate_dir"])) if signing["certificate_dir"] else None,
        trusted_ca_file=Path(os.path.abspath(signing["trusted_ca_file"])) if signing["trusted_ca_file"] else None,
        verify_certificate=signing["verify_certificate"],
    )

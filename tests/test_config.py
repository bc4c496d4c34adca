"""The TOML configuration: defaults, and refusals that name the mistake."""

from pathlib import Path

import pytest

import imagefs.config
from imagefs.config import load_config
from imagefs.errors import ConfigError


@pytest.fixture(autouse=True)
def no_host_config(monkeypatch, tmp_path):
    """A host's /etc/imagefs/imagefs.toml or IMAGEFS_DATA_DIR must not leak into these tests."""
    monkeypatch.setattr(imagefs.config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    monkeypatch.delenv("IMAGEFS_DATA_DIR", raising=False)


def load(tmp_path, text, data_dir=None):
    path = tmp_path / "imagefs.toml"
    path.write_text(text)
    return load_config(path, data_dir)


def test_defaults(tmp_path):
    config = load_config(None, tmp_path)
    assert config.data_dir == tmp_path
    assert config.hash_algorithm == "sha512"  # Glance's hashing_algorithm default
    assert config.catalog_path == tmp_path / "catalog.db"
    assert config.staging_path == tmp_path / "staging"
    assert config.default_store == "local"
    assert config.store.name == "local" and config.store.type == "dir"
    assert config.store.path == tmp_path / "store"
    assert config.admin_uids == (0,)
    assert config.zero_chunks_as_holes is True
    assert config.flush_every_mib == 64


def test_empty_file_is_all_defaults(tmp_path):
    assert load(tmp_path, "", tmp_path / "d") == load_config(None, tmp_path / "d")


def test_without_data_dir_the_default_is_var_lib(tmp_path):
    assert load_config(None, None).data_dir == Path("/var/lib/imagefs")


def test_data_dir_from_file_and_override(tmp_path):
    text = f'data_dir = "{tmp_path / "fromfile"}"\n'
    assert load(tmp_path, text).data_dir == tmp_path / "fromfile"
    assert load(tmp_path, text, tmp_path / "cli").data_dir == tmp_path / "cli"


def test_values_are_read(tmp_path):
    config = load(
        tmp_path,
        f"""
        [hashing]
        algorithm = "sha256"
        [upload]
        staging_dir = "{tmp_path / "stage"}"
        flush_every_mib = 8
        zero_chunks_as_holes = false
        [access]
        admin_uids = [0, 1234]
        [stores]
        default = "big"
        [stores.big]
        type = "dir"
        path = "{tmp_path / "big"}"
        """,
        tmp_path / "data",
    )
    assert config.hash_algorithm == "sha256"
    assert config.staging_path == tmp_path / "stage"
    assert config.flush_every_mib == 8
    assert config.zero_chunks_as_holes is False
    assert config.admin_uids == (0, 1234)
    assert config.store.name == "big" and config.store.path == tmp_path / "big"
    assert config.stores["local"].path == tmp_path / "data" / "store"  # the embedded default is still there


@pytest.mark.parametrize("algorithm", ["sha384", "sha512"])
def test_other_hash_algorithms(tmp_path, algorithm):
    assert load(tmp_path, f'[hashing]\nalgorithm = "{algorithm}"\n').hash_algorithm == algorithm


@pytest.mark.parametrize(
    "text",
    [
        "[hashes]\nalgorithm = 'sha512'\n",  # unknown section
        "datadir = '/x'\n",  # unknown top-level key
        "[hashing]\nalgo = 'sha512'\n",
        "[upload]\nflush_every = 3\n",
        "[access]\nadmin_group = 5\nbogus = 1\n",
        "[cache]\nsize = 5\n",
        "[delete]\nwhatever = true\n",
        "[hashing]\n[hashing.sub]\nx = 1\n",
    ],
)
def test_unknown_sections_and_keys_are_refused(tmp_path, text):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert raised.value.exit_code == 2


def test_unknown_key_in_a_store_table_is_refused(tmp_path):
    # A typo in a store's path must not silently put the data somewhere else.
    with pytest.raises(ConfigError, match="pth"):
        load(tmp_path, "[stores.local]\npth = '/srv/images'\n")


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "SHA512", "", "sha3_512"])
def test_bad_hash_algorithm_is_refused(tmp_path, algorithm):
    with pytest.raises(ConfigError, match="algorithm"):
        load(tmp_path, f'[hashing]\nalgorithm = "{algorithm}"\n')


def test_default_store_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="nowhere"):
        load(tmp_path, '[stores]\ndefault = "nowhere"\n')


def test_store_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError):
        load(tmp_path, '[stores]\nlocal = "dir"\n')


def test_section_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError):
        load(tmp_path, 'hashing = "sha512"\n')


@pytest.mark.parametrize(
    "text",
    [
        "[upload]\nflush_every_mib = 'lots'\n",
        "[upload]\nzero_chunks_as_holes = 'no'\n",
        "[cache]\nattr_timeout = 'soon'\n",
        "[access]\nadmin_uids = 0\n",
        "[access]\nadmin_uids = ['root']\n",
        "[access]\nadmin_uids = [1.5]\n",
        "[access]\nadmin_uids = [true]\n",
        "[stores.local]\nrequire_mount = 'yes'\n",
        "[stores.local]\ntimeout = 0\n",
        "[upload]\nstaging_quota_mib = -1\n",
    ],
)
def test_values_of_the_wrong_type_are_refused(tmp_path, text):
    # A ConfigError is a message and exit code 2; a ValueError would be a traceback.
    with pytest.raises(ConfigError):
        load(tmp_path, text)


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        load(tmp_path, "[hashing\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", tmp_path)

"""Signed images on a real mount (SPEC §6): openssl- and imagefs-signed uploads verify, whichever way
their properties arrive (setfattr on incoming/N, cp --preserve=xattr, rsync -X); every failure is
killed with its reason; the properties freeze once active; `imagefs verify` catches a corrupted blob."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import uuid

import pytest

from conftest import (
    Library, assert_refused, blob_files, getfattr_dump, imagefs, mounted, run, setfattr, staged_files,
)
from helpers_signing import PKI

pytestmark = pytest.mark.fuse

PREHASH_LOG = "not streamed (declared after the data began)"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def signed_library(tmp_path, pki):
    with mounted(Library(tmp_path / "lib", pki.config_text())) as lib:
        yield lib


def _source(tmp_path, name: str, seed: int, size: int = 300_000):
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _declare_then_copy(lib, source, name, props: dict[str, str]) -> None:
    incoming = lib.mnt / "incoming" / name
    run("touch", incoming)
    for key, value in props.items():
        result = setfattr(incoming, f"user.image.{key}", value)
        assert result.returncode == 0, result.stderr
    run("cp", source, incoming)


def _sign_xattrs(source, props: dict[str, str]) -> None:
    for key, value in props.items():
        assert setfattr(source, f"user.image.{key}", value).returncode == 0


def _log(lib) -> str:
    return (lib.data / "imagefs.log").read_text()


def _verified(lib, name, signer):
    attrs = getfattr_dump(lib.path("active", name))
    assert attrs["user.image.status"] == "active"
    assert attrs["user.imagefs.signature_verified"].startswith(f"{signer.uuid} ")
    assert f"CN=signer {signer.name}" in attrs["user.imagefs.signature_verified"]
    return attrs


def test_signed_uploads_verify_however_the_properties_arrive(signed_library, pki, tmp_path):
    lib = signed_library
    # setfattr on the incoming file, then cp: openssl signatures of every key type (the binary curves'
    # keys and certificates made with openssl, verified through it)
    cases = [("rsa", "SHA-256"), ("rsa4096", "SHA-512"), ("dsa", "SHA-224"), ("p384", "SHA-384"), ("p521", "SHA-512"),
             ("sect571k1", "SHA-256"), ("sect409k1", "SHA-384"), ("sect571r1", "SHA-512"), ("sect409r1", "SHA-224")]
    for i, (signer, method) in enumerate(cases):
        source = _source(tmp_path, f"{signer}.raw", i)
        _declare_then_copy(lib, source, f"{signer}.raw", pki.signers[signer].properties(source, method))
    for signer, _ in cases:
        attrs = _verified(lib, f"{signer}.raw", pki.signers[signer])
        assert attrs["user.image.img_signature_key_type"] == pki.signers[signer].key_type
    # declared before the data: the signature's digest streamed, the staged file was not hashed again
    assert PREHASH_LOG not in _log(lib)

    # cp --preserve=xattr and rsync -X of a signed source file (openssl, and imagefs sign --write-xattrs)
    source = _source(tmp_path, "carried.raw", 10)
    _sign_xattrs(source, pki.signers["p384"].properties(source, "SHA-256"))
    run("cp", "--preserve=xattr", source, lib.mnt / "incoming" / "cp-preserve.raw")
    _verified(lib, "cp-preserve.raw", pki.signers["p384"])
    rsa = pki.signers["rsa"]
    source2 = _source(tmp_path, "carried2.raw", 11)
    imagefs("sign", "--key", rsa.key_path, "--cert-uuid", rsa.uuid, "--hash-method", "SHA-384", "--write-xattrs",
            source2)
    result = run("rsync", "-X", source2, lib.mnt / "incoming" / "rsync-X.raw", check=False)
    assert result.returncode == 0, result.stderr
    attrs = _verified(lib, "rsync-X.raw", rsa)
    assert attrs["user.image.img_signature_hash_method"] == "SHA-384"
    # these arrived after the data: finalize hashed the staged file once
    assert _log(lib).count(PREHASH_LOG) == 2

    # frozen once active: like the other fields computed from the data
    active = lib.path("active", "rsa.raw")
    for key in ("img_signature", "img_signature_hash_method", "img_signature_key_type",
                "img_signature_certificate_uuid"):
        assert_refused(setfattr(active, f"user.image.{key}", "x"), errno.EPERM)
        assert_refused(setfattr(active, f"user.image.{key}", remove=True), errno.EPERM)
    assert_refused(setfattr(active, "user.imagefs.signature_verified", "x"), errno.EPERM)
    assert getfattr_dump(active)["user.image.img_signature_key_type"] == "RSA-PSS"
    # an unsigned upload is still fine, and carries no signature_verified
    plain = _source(tmp_path, "plain.raw", 12)
    run("cp", plain, lib.mnt / "incoming")
    assert "user.imagefs.signature_verified" not in getfattr_dump(lib.path("active", "plain.raw"))
    shown = imagefs("show", "rsa.raw", "--data-dir", lib.data).stdout
    assert "imagefs.signature_verified" in shown and rsa.uuid in shown


def test_sha512_signature_reuses_the_os_hash_digest(signed_library, pki, tmp_path):
    """SHA-512 with the default os_hash sha512: no extra hashing at all, even declared late."""
    lib = signed_library
    source = _source(tmp_path, "late512.raw", 20)
    _sign_xattrs(source, pki.signers["p521"].properties(source, "SHA-512"))
    run("cp", "--preserve=xattr", source, lib.mnt / "incoming")
    _verified(lib, "late512.raw", pki.signers["p521"])
    assert PREHASH_LOG not in _log(lib)


def test_every_failure_is_killed_with_its_reason(signed_library, pki, tmp_path):
    lib = signed_library
    source = _source(tmp_path, "image.raw", 30)
    rsa = pki.signers["rsa"]
    good = rsa.properties(source, "SHA-256")
    tampered = _source(tmp_path, "tampered.raw", 30)
    with open(tampered, "r+b") as f:
        f.seek(150_000)
        f.write(b"\xff")
    three = dict(list(good.items())[:3])
    cases = {
        "tampered": (tampered, good, "verify_signature: bad signature"),
        "wrong-cert": (source, {**good, "img_signature_certificate_uuid": pki.signers["rsa4096"].uuid},
                       "verify_signature: bad signature"),
        "unknown-cert": (source, {**good, "img_signature_certificate_uuid": str(uuid.uuid4())}, "not found in"),
        "key-type-mismatch": (source, {**good, "img_signature_key_type": "ECC_SECP384R1"},
                              "verify_signature: key type mismatch: img_signature_key_type is ECC_SECP384R1"),
        "sect-tampered": (tampered, pki.signers["sect571k1"].properties(source, "SHA-256"),
                          "verify_signature: bad signature"),
        "sect-mismatch": (source, pki.signers["sect571k1"].properties(source, "SHA-256") | {
            "img_signature_key_type": "ECC_SECT409K1"}, "but certificate"),
        "expired": (source, pki.signers["expired"].properties(source, "SHA-256"), "expired at"),
        "untrusted": (source, pki.signers["untrusted"].properties(source, "SHA-256"), "not issued by a trusted CA"),
        "no-digital-signature": (source, pki.signers["no_signing"].properties(source, "SHA-256"),
                                 "does not allow digital signatures"),
        "bad-base64": (source, {**good, "img_signature": "not*base64*at*all"},
                       "verify_signature: img_signature is not valid base64"),
        "three-of-four": (source, three,
                          "verify_signature: incomplete signature properties: img_signature_certificate_uuid missing"),
    }
    for name, (data, props, _) in cases.items():
        _declare_then_copy(lib, data, name, props)
    for name, (_, _, reason) in cases.items():
        assert not lib.path("active", name).exists(), name
        attrs = getfattr_dump(lib.path("killed", name))
        assert attrs["user.image.status"] == "killed"
        assert reason in attrs["user.imagefs.reason"], (name, attrs["user.imagefs.reason"])
        assert "user.imagefs.signature_verified" not in attrs
    # three of four also when carried by cp --preserve=xattr
    carried = _source(tmp_path, "carried3.raw", 31)
    _sign_xattrs(carried, three)
    run("cp", "--preserve=xattr", carried, lib.mnt / "incoming")
    assert "incomplete signature" in getfattr_dump(lib.path("killed", "carried3.raw"))["user.imagefs.reason"]
    assert blob_files(lib) == []  # nothing refused reached the store
    assert staged_files(lib) == []


class _LibraryWithoutOpenssl(Library):
    def __init__(self, root, config_text, *, path):
        super().__init__(root, config_text)
        self.env = {**os.environ, "PATH": str(path)}

    def mount(self) -> None:
        imagefs("mount", self.mnt, "--data-dir", self.data, "--config", self.config_path, env=self.env)
        self.mounted = True


def test_binary_curve_signatures_without_openssl_are_killed_with_a_reason(tmp_path, pki):
    """The daemon finds no openssl on its PATH: a binary-curve signature cannot be checked, so it is refused."""
    signer = pki.signers["sect409k1"]
    empty = tmp_path / "no-openssl"
    empty.mkdir()
    with mounted(_LibraryWithoutOpenssl(tmp_path / "lib", pki.config_text(), path=empty)) as lib:
        source = _source(tmp_path, "sect.raw", 40)
        _declare_then_copy(lib, source, "sect.raw", signer.properties(source, "SHA-256"))
        reason = getfattr_dump(lib.path("killed", "sect.raw"))["user.imagefs.reason"]
        assert "ECC_SECT409K1 cannot be verified: the openssl command is not installed" in reason


def test_verify_catches_a_blob_corrupted_after_activation(signed_library, pki, tmp_path):
    lib = signed_library
    source = _source(tmp_path, "golden.raw", 50, size=1_000_000)
    dsa = pki.signers["dsa"]
    _declare_then_copy(lib, source, "golden.raw", dsa.properties(source, "SHA-256"))
    active = lib.path("active", "golden.raw")
    config = ["--config", lib.config_path]
    result = imagefs("verify", active, *config, check=False)
    assert result.returncode == 0, result.stderr
    assert f"signature verified with certificate {dsa.uuid}" in result.stdout
    # a local copy carrying the xattrs (what a compute host has) verifies too
    copy = tmp_path / "copy.raw"
    run("cp", "-a", active, copy)
    assert imagefs("verify", copy, *config, check=False).returncode == 0
    # the blob rots in the store: the mount serves the bad bytes, verify says so
    (blob,) = blob_files(lib)
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.seek(500_000)
        byte = f.read(1)
        f.seek(500_000)
        f.write(bytes([byte[0] ^ 0x55]))
    try:
        lib.remount()  # a compute host's first read: nothing of the image in the page cache
        result = imagefs("verify", active, *config, check=False)
        assert result.returncode == 1, result.stdout
        assert "does not match os_hash_value" in result.stderr
        assert hashlib.sha512(active.read_bytes()).hexdigest() != getfattr_dump(active)["user.image.os_hash_value"]
    finally:  # put it back, or the library's invariant check (fsck) would rightly complain
        with open(blob, "r+b") as f:
            f.seek(500_000)
            f.write(byte)

"""Signature verification without a mount: cursive's algorithm against openssl-made signatures,
every failure's reason, the certificate store and trust checks, streaming digests, frozen properties,
the [signing] config and the sign/verify commands."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import random

import pytest
import trio
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from helpers_signing import BINARY_CURVES, NOW, PKI, openssl, openssl_issue, openssl_key, openssl_self_signed
from imagefs import metadata, signing
from imagefs.catalog import Image
from imagefs.cli import main
from imagefs.config import load_config
from imagefs.errors import ConfigError, ReadOnlyField
from imagefs.hashing import StreamHasher
from imagefs.lifecycle import Status

HASHLIB = {"SHA-224": "sha224", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "image.raw"
    path.write_bytes(random.Random(4).randbytes(200_000))
    return path


def _verify(pki, props: dict, data: bytes, *, trust=True, check=True, now=None):
    parsed = signing.parse_properties(props)
    digest = hashlib.new(HASHLIB[parsed.hash_method], data).digest()
    trusted = signing.load_trust_store(pki.ca_file if trust else None, check)
    store = signing.DirectoryCertificateStore(pki.cert_dir)
    return signing.verify_digest(parsed, digest, store, trusted=trusted, now=now)


CASES = [
    ("rsa", "SHA-224"), ("rsa", "SHA-256"), ("rsa", "SHA-384"), ("rsa", "SHA-512"), ("rsa4096", "SHA-256"),
    ("dsa", "SHA-224"), ("dsa", "SHA-256"), ("p384", "SHA-384"), ("p384", "SHA-256"), ("p521", "SHA-512"),
    # binary curves: openssl-made keys and certificates (issued by the same CA), verified through openssl
    ("sect571k1", "SHA-256"), ("sect409k1", "SHA-224"), ("sect571r1", "SHA-512"), ("sect409r1", "SHA-384"),
]


@pytest.mark.parametrize(("signer", "method"), CASES)
def test_openssl_signatures_verify_as_cursive_does(pki, image, signer, method):
    s = pki.signers[signer]
    props = s.properties(image, method)
    verified = _verify(pki, props, image.read_bytes())
    assert verified.certificate_uuid == s.uuid
    assert f"CN=signer {signer}" in verified.subject
    assert str(verified).startswith(f"{s.uuid} ")
    # one byte more and it fails
    with pytest.raises(signing.SignatureError, match="^bad signature"):
        _verify(pki, props, image.read_bytes() + b"\0")


@pytest.mark.parametrize("signer", ["rsa", "dsa", "p384", "p521"])
def test_sign_digest_matches_what_openssl_verifies(pki, image, signer, tmp_path):
    """imagefs's signer is checked by openssl itself (pkeyutl), not only by imagefs's verifier."""
    s = pki.signers[signer]
    key = serialization.load_pem_private_key(s.key_path.read_bytes(), password=None)
    digest = hashlib.sha256(image.read_bytes()).digest()
    key_type, signature = signing.sign_digest(key, digest, "SHA-256")
    assert key_type.name == s.key_type
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "pub.pem").write_bytes(s.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    args = ["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig")]
    if s.key_type == "RSA-PSS":
        args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-2"]  # -2: maximum salt
    import subprocess

    result = subprocess.run([*args, str(image)], capture_output=True, text=True)
    assert result.returncode == 0 and "Verified OK" in result.stdout, result.stdout + result.stderr


def test_failures_name_their_cause(pki, image):
    data = image.read_bytes()
    rsa = pki.signers["rsa"]
    good = rsa.properties(image, "SHA-256")
    cases = {
        "unknown certificate": ({**good, "img_signature_certificate_uuid": "0f0e0d0c-no-such-cert"}, "not found in"),
        "wrong certificate": ({**good, "img_signature_certificate_uuid": pki.signers["rsa4096"].uuid}, "bad signature"),
        "key type mismatch": ({**good, "img_signature_key_type": "DSA"}, "key type mismatch.*RSA 2048-bit"),
        "curve mismatch": (pki.signers["p384"].properties(image, "SHA-256") | {
            "img_signature_key_type": "ECC_SECP521R1"}, "key type mismatch.*secp384r1"),
        "expired": (pki.signers["expired"].properties(image, "SHA-256"), "expired at"),
        "untrusted": (pki.signers["untrusted"].properties(image, "SHA-256"), "not issued by a trusted CA"),
        "no digitalSignature": (pki.signers["no_signing"].properties(image, "SHA-256"), "digital signatures"),
        "malformed base64": ({**good, "img_signature": good["img_signature"][:-3] + "!!="}, "not valid base64"),
        "unknown hash": ({**good, "img_signature_hash_method": "MD5"}, "hash_method 'MD5' is not one of"),
        "unknown key type": ({**good, "img_signature_key_type": "RSA"}, "key_type 'RSA' is not one of"),
        "bad id": ({**good, "img_signature_certificate_uuid": "../trusted"}, "not a usable name"),
    }
    for name, (props, reason) in cases.items():
        with pytest.raises(signing.SignatureError, match=reason):
            _verify(pki, props, data)
            pytest.fail(f"{name} verified")


def test_some_but_not_all_properties_are_refused_none_are_unsigned(pki, image):
    good = pki.signers["rsa"].properties(image, "SHA-256")
    assert signing.parse_properties({"os_distro": "cirros"}) is None
    for missing in good:
        partial = {k: v for k, v in good.items() if k != missing}
        with pytest.raises(signing.SignatureError, match=f"incomplete signature properties: {missing} missing"):
            signing.parse_properties(partial)
    with pytest.raises(signing.SignatureError, match="img_signature_hash_method, img_signature_key_type"):
        signing.parse_properties({"img_signature": good["img_signature"], "img_signature_certificate_uuid": "x"})


def test_trust_checks_are_beyond_glance_and_can_be_switched_off(pki, image):
    data = image.read_bytes()
    for name in ("expired", "untrusted", "no_signing"):
        props = pki.signers[name].properties(image, "SHA-256")
        with pytest.raises(signing.SignatureError):
            _verify(pki, props, data)
        # Glance's behaviour: no trust store, or the checks switched off
        assert _verify(pki, props, data, trust=False).certificate_uuid == pki.signers[name].uuid
        assert _verify(pki, props, data, check=False).certificate_uuid == pki.signers[name].uuid
    # validity is judged at `now`: a good certificate before its start is refused too
    props = pki.signers["rsa"].properties(image, "SHA-256")
    with pytest.raises(signing.SignatureError, match="not valid before"):
        _verify(pki, props, data, now=NOW - datetime.timedelta(days=3))


def test_an_unreadable_trust_store_refuses_everything(pki, tmp_path):
    with pytest.raises(signing.SignatureError, match="cannot be read"):
        signing.load_trust_store(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_bytes(b"not a certificate")
    with pytest.raises(signing.SignatureError, match="holds no X.509 certificate"):
        signing.load_trust_store(tmp_path / "junk.pem")
    assert signing.load_trust_store(tmp_path / "missing.pem", enabled=False) is None


def test_directory_store_reads_pem_and_der_by_id(pki, tmp_path):
    store = signing.DirectoryCertificateStore(pki.cert_dir)
    suffixes = {p.suffix for p in pki.cert_dir.iterdir()}
    assert suffixes == {".pem", ".der"}
    for s in pki.signers.values():
        assert store.get(s.uuid) == s.cert
    (tmp_path / "plain").write_bytes(pki.signers["rsa"].cert.public_bytes(serialization.Encoding.DER))
    assert signing.DirectoryCertificateStore(tmp_path).get("plain") == pki.signers["rsa"].cert
    (tmp_path / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(signing.CertificateNotFound, match="not an X.509 certificate"):
        signing.DirectoryCertificateStore(tmp_path).get("broken")
    for bad in ("", ".hidden", "a/b", "..", "x" * 300):
        with pytest.raises(signing.CertificateNotFound, match="not a usable name"):
            store.get(bad)


def test_every_glance_key_type_is_known():
    assert set(signing.KEY_TYPES) == {
        "RSA-PSS", "DSA", "ECC_SECT571K1", "ECC_SECT409K1", "ECC_SECT571R1", "ECC_SECT409R1", "ECC_SECP521R1",
        "ECC_SECP384R1",
    }
    assert {name for name, kt in signing.KEY_TYPES.items() if kt.binary_curve} == {
        f"ECC_{c.upper()}" for c in BINARY_CURVES}


# --- binary curves (cryptography 50 has none: the openssl command line verifies and signs) ---------
@pytest.fixture(scope="module")
def sect_ca(pki, tmp_path_factory):
    """A CA whose own key is on a binary curve, a signer it issued, and a forger with the same CA name."""
    root = tmp_path_factory.mktemp("sect-ca")
    ca_key = openssl_key("sect571r1", root / "ca.key")
    ca_cert = openssl_self_signed(ca_key, "binary-curve CA", root / "ca.pem", ca=True)
    forger_key = openssl_key("sect571r1", root / "forger.key")
    openssl_self_signed(forger_key, "binary-curve CA", root / "forger.pem", ca=True)  # same subject, other key
    key = openssl_key("sect409r1", root / "leaf.key")
    leaf = openssl_issue(key, "signer under a sect CA", root / "ca.pem", ca_key, root / "leaf.pem")
    forged = openssl_issue(key, "forged signer", root / "forger.pem", forger_key, root / "forged.pem")
    p384_leaf = openssl_issue(pki.signers["p384"].key_path, "p384 under a sect CA", root / "ca.pem", ca_key,
                              root / "p384.pem")
    certs = {}
    for name, cert in (("leaf", leaf), ("forged", forged), ("p384", p384_leaf)):
        certs[name] = f"sect-ca-{name}"
        (pki.cert_dir / f"{certs[name]}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"trusted": [ca_cert], "key": key, "certs": certs}


def _openssl_props(image, key_path, key_type, cert_uuid, method="SHA-256"):
    """openssl dgst -sign, then base64, as OpenStack's docs show."""
    sig = image.with_name(f"{image.name}.{cert_uuid}.signature")
    openssl("dgst", "-" + HASHLIB[method], "-sign", key_path, "-out", sig, image)
    return {"img_signature": base64.b64encode(sig.read_bytes()).decode(), "img_signature_hash_method": method,
            "img_signature_key_type": key_type, "img_signature_certificate_uuid": cert_uuid}


@pytest.mark.parametrize("curve", BINARY_CURVES)
def test_binary_curve_self_signed_openssl_certificates(pki, image, curve):
    """The recipe end to end: openssl ecparam -genkey, openssl req -new -x509, openssl dgst -sign, base64."""
    s = pki.self_signed(f"self-{curve}", curve)
    props = s.properties(image, "SHA-256")
    assert _verify(pki, props, image.read_bytes(), trust=False).certificate_uuid == s.uuid
    # a self-signed certificate in the trust store is trusted itself (and its KeyUsage allows signing)
    digest = hashlib.sha256(image.read_bytes()).digest()
    store = signing.DirectoryCertificateStore(pki.cert_dir)
    assert signing.verify_digest(signing.parse_properties(props), digest, store, trusted=[s.cert]).subject == (
        f"CN=signer self-{curve},O=imagefs tests")
    with pytest.raises(signing.SignatureError, match="^bad signature"):
        _verify(pki, props, image.read_bytes()[:-1], trust=False)


@pytest.mark.parametrize("curve", BINARY_CURVES)
def test_imagefs_sign_with_a_binary_curve_key(pki, image, curve, tmp_path):
    """imagefs sign hands binary-curve keys to openssl; the result verifies here and with openssl dgst."""
    s = pki.signers[curve]
    result = CliRunner().invoke(main, ["sign", "--key", str(s.key_path), "--cert-uuid", s.uuid, "--hash-method",
                                       "SHA-384", str(image)])
    assert result.exit_code == 0, result.output
    printed = dict(line.split("=", 1) for line in result.output.splitlines())
    assert printed["img_signature_key_type"] == f"ECC_{curve.upper()}"
    assert _verify(pki, printed, image.read_bytes()).certificate_uuid == s.uuid
    with pytest.raises(signing.SignatureError, match="^bad signature"):
        _verify(pki, printed, image.read_bytes() + b"\0")
    (tmp_path / "sig").write_bytes(base64.b64decode(printed["img_signature"]))
    openssl("pkey", "-in", s.key_path, "-pubout", "-out", tmp_path / "pub.pem")
    openssl("dgst", "-sha384", "-verify", tmp_path / "pub.pem", "-signature", tmp_path / "sig", image)


def test_imagefs_sign_with_an_encrypted_binary_curve_key(pki, image, tmp_path):
    s = pki.signers["sect409k1"]
    encrypted, password = tmp_path / "enc.pem", tmp_path / "password"
    password.write_text("s3cret\n")
    openssl("pkey", "-in", s.key_path, "-aes256", "-passout", "pass:s3cret", "-out", encrypted)
    runner = CliRunner()
    args = ["sign", "--key", str(encrypted), "--cert-uuid", s.uuid, str(image)]
    result = runner.invoke(main, [*args, "--password-file", str(password)])
    assert result.exit_code == 0, result.output
    printed = dict(line.split("=", 1) for line in result.output.splitlines())
    assert _verify(pki, printed, image.read_bytes()).certificate_uuid == s.uuid
    password.write_text("wrong\n")
    result = runner.invoke(main, [*args, "--password-file", str(password)])
    assert result.exit_code != 0 and "Incorrect password" in result.output
    result = runner.invoke(main, args)
    assert result.exit_code != 0 and "see --password-file" in result.output


def test_binary_curve_key_type_mismatches_are_refused(pki, image):
    data = image.read_bytes()
    sect571k1 = pki.signers["sect571k1"].properties(image, "SHA-256")
    cases = {
        "ECC_SECT409K1": (sect571k1, "certificate .* has an EC key on sect571k1"),
        "ECC_SECT571R1": (sect571k1, "certificate .* has an EC key on sect571k1"),
        "ECC_SECP384R1": (sect571k1, "certificate .* has an EC key on sect571k1"),
        "RSA-PSS": (sect571k1, "certificate .* has an EC key on sect571k1"),
    }
    for declared, (props, reason) in cases.items():
        with pytest.raises(signing.SignatureError, match=f"key type mismatch: img_signature_key_type is {declared} "
                                                         f"but {reason}"):
            _verify(pki, {**props, "img_signature_key_type": declared}, data)
    # an RSA, and a P-384, certificate declared as a binary curve
    rsa = pki.signers["rsa"].properties(image, "SHA-256") | {"img_signature_key_type": "ECC_SECT571K1"}
    with pytest.raises(signing.SignatureError, match="is ECC_SECT571K1 but certificate .* has an RSA 2048-bit key"):
        _verify(pki, rsa, data)
    p384 = pki.signers["p384"].properties(image, "SHA-256") | {"img_signature_key_type": "ECC_SECT409R1"}
    with pytest.raises(signing.SignatureError, match="is ECC_SECT409R1 but certificate .* has an EC key on secp384r1"):
        _verify(pki, p384, data)
    # another binary-curve certificate: the right key type, the wrong key
    other = {**sect571k1, "img_signature_key_type": "ECC_SECT409K1",
             "img_signature_certificate_uuid": pki.signers["sect409k1"].uuid}
    with pytest.raises(signing.SignatureError, match="^bad signature"):
        _verify(pki, other, data)
    # a signature that is not even DER
    garbled = {**sect571k1, "img_signature": base64.b64encode(b"garbage").decode()}
    with pytest.raises(signing.SignatureError, match="^bad signature"):
        _verify(pki, garbled, data)


def test_trust_checks_hold_for_binary_curve_certificates_and_cas(pki, image, sect_ca):
    data = image.read_bytes()
    certs, trusted = sect_ca["certs"], sect_ca["trusted"]
    store = signing.DirectoryCertificateStore(pki.cert_dir)

    def verify(props, trusted, now=None):
        parsed = signing.parse_properties(props)
        digest = hashlib.new(HASHLIB[parsed.hash_method], data).digest()
        return signing.verify_digest(parsed, digest, store, trusted=trusted, now=now)

    # a binary-curve signer issued by a binary-curve CA: the CA's signature is checked by openssl
    leaf = _openssl_props(image, sect_ca["key"], "ECC_SECT409R1", certs["leaf"])
    assert verify(leaf, trusted).certificate_uuid == certs["leaf"]
    # a P-384 signer under that CA too
    p384 = _openssl_props(image, pki.signers["p384"].key_path, "ECC_SECP384R1", certs["p384"])
    assert verify(p384, trusted).certificate_uuid == certs["p384"]
    # the same CA name, another key: not issued by the trusted CA
    forged = _openssl_props(image, sect_ca["key"], "ECC_SECT409R1", certs["forged"])
    with pytest.raises(signing.SignatureError, match="not issued by a trusted CA"):
        verify(forged, trusted)
    assert verify(forged, None).certificate_uuid == certs["forged"]  # Glance's checks only
    # the test CA (P-384) did not issue these; nor did the binary-curve CA issue the test CA's signers
    with pytest.raises(signing.SignatureError, match="not issued by a trusted CA"):
        verify(leaf, signing.load_trust_store(pki.ca_file))
    sect571k1 = pki.signers["sect571k1"].properties(image, "SHA-256")
    with pytest.raises(signing.SignatureError, match="not issued by a trusted CA"):
        verify(sect571k1, trusted)
    # validity still applies to binary-curve certificates (issued for 2 days)
    with pytest.raises(signing.SignatureError, match="expired at"):
        verify(leaf, trusted, now=NOW + datetime.timedelta(days=5))
    with pytest.raises(signing.SignatureError, match="not valid before"):
        verify(sect571k1, signing.load_trust_store(pki.ca_file), now=NOW - datetime.timedelta(days=3))


def test_binary_curve_without_a_digital_signature_key_usage_is_refused(pki, image, tmp_path):
    key = openssl_key("sect571k1", tmp_path / "k.pem")
    openssl("req", "-new", "-x509", "-key", key, "-subj", "/CN=encipher only", "-days", "2",
            "-addext", "keyUsage=critical,keyAgreement", "-out", pki.cert_dir / "sect-no-signing.pem")
    props = _openssl_props(image, key, "ECC_SECT571K1", "sect-no-signing")
    parsed = signing.parse_properties(props)
    digest = hashlib.sha256(image.read_bytes()).digest()
    store = signing.DirectoryCertificateStore(pki.cert_dir)
    cert = store.get("sect-no-signing")
    with pytest.raises(signing.SignatureError, match="does not allow digital signatures"):
        signing.verify_digest(parsed, digest, store, trusted=[cert])
    assert signing.verify_digest(parsed, digest, store, trusted=None).certificate_uuid == "sect-no-signing"


def test_binary_curves_without_openssl_are_refused_with_a_reason(pki, image, sect_ca, tmp_path, monkeypatch):
    data = image.read_bytes()
    props = pki.signers["sect571k1"].properties(image, "SHA-256")
    leaf = _openssl_props(image, sect_ca["key"], "ECC_SECT409R1", sect_ca["certs"]["leaf"])
    p384 = pki.signers["p384"].properties(image, "SHA-256")
    monkeypatch.setenv("PATH", str(tmp_path))  # no openssl on it
    with pytest.raises(signing.SignatureError, match="ECC_SECT571K1 cannot be verified: the openssl command is not "
                                                     "installed"):
        _verify(pki, props, data)
    with pytest.raises(signing.SignatureError, match="cannot be checked against the trust store: the openssl command"):
        parsed = signing.parse_properties(leaf)
        signing.verify_digest(parsed, hashlib.sha256(data).digest(), signing.DirectoryCertificateStore(pki.cert_dir),
                              trusted=sect_ca["trusted"])
    # everything else is cryptography's: unaffected
    assert _verify(pki, p384, data).certificate_uuid == pki.signers["p384"].uuid
    result = CliRunner().invoke(main, ["sign", "--key", str(pki.signers["sect571k1"].key_path), "--cert-uuid", "x",
                                       str(image)])
    assert result.exit_code != 0 and "the openssl command is not installed" in result.output


# --- streaming digests --------------------------------------------------------------------
def _stream(chunks, algorithm, add_before=(), add_after=()):
    async def run():
        hasher = StreamHasher(algorithm, add_before)
        results = []
        async with trio.open_nursery() as nursery:
            for i, chunk in enumerate(chunks):
                await hasher.feed(chunk, nursery.start_soon)
                if i == 0:
                    results = [hasher.add(a) for a in add_after]
            digests = await hasher.finish()
        return digests, results

    return trio.run(run)


def test_stream_hasher_computes_extra_digests_declared_before_the_data():
    chunks = [random.Random(i).randbytes(70_000) for i in range(5)]
    data = b"".join(chunks)
    digests, late = _stream(chunks, "sha512", add_before=["sha256", "sha224"], add_after=["sha384", "sha512"])
    assert digests.extra == {"sha256": hashlib.sha256(data).digest(), "sha224": hashlib.sha224(data).digest()}
    assert late == [False, True]  # too late for sha384; sha512 is os_hash's own
    assert digests.digest("sha512") == hashlib.sha512(data).digest()  # reused, not computed twice
    assert digests.digest("sha384") is None
    assert digests.checksum == hashlib.md5(data).hexdigest()


# --- metadata, config, commands -------------------------------------------------------------
def _image(status: Status) -> Image:
    return Image(
        seq=1, id="6f1a", name="n", status=status, disk_format=None, container_format=None, size=None,
        virtual_size=None, checksum=None, os_hash_algo=None, os_hash_value=None, min_disk=0, min_ram=0,
        visibility="shared", protected=False, os_hidden=False, owner="root", created_ns=0, updated_ns=0,
        deleted_ns=None, blob_key=None, store=None, reason=None, stored_format=None, expected_size=None,
        expected_checksum=None, expected_os_hash_value=None,
    )


@pytest.mark.parametrize("key", signing.PROPERTIES)
def test_signature_properties_are_frozen_once_the_data_is_finalized(key):
    kwargs = dict(is_admin=True, property_count=0, has_property=True, hash_algo="sha512")
    attr = metadata.IMAGE_PREFIX + key
    for status in (Status.QUEUED, Status.SAVING):
        assert metadata.parse_set(attr, b"v", _image(status), **kwargs) == metadata.Change("property", key, "v")
        assert metadata.parse_remove(attr, _image(status), has_property=True).kind == "delete_property"
    for status in (Status.ACTIVE, Status.DEACTIVATED, Status.KILLED):
        with pytest.raises(ReadOnlyField):
            metadata.parse_set(attr, b"v", _image(status), **kwargs)
        with pytest.raises(ReadOnlyField):
            metadata.parse_remove(attr, _image(status), has_property=True)
    # other custom properties stay settable
    assert metadata.parse_set("user.image.os_distro", b"x", _image(Status.ACTIVE), **kwargs).kind == "property"


def test_signing_config(tmp_path):
    config = load_config(None, tmp_path)
    assert config.certificate_path == tmp_path / "certificates"
    assert config.trusted_ca_file is None and config.verify_certificate is True
    path = tmp_path / "c.toml"
    path.write_text('[signing]\ncertificate_dir = "/etc/certs"\ntrusted_ca_file = "/etc/ca.pem"\n'
                    "verify_certificate = false\n")
    config = load_config(path, tmp_path)
    assert (str(config.certificate_path), str(config.trusted_ca_file), config.verify_certificate) == (
        "/etc/certs", "/etc/ca.pem", False)
    for bad in ('[signing]\nverify_certificate = "yes"\n', "[signing]\nkeymanager = 1\n"):
        path.write_text(bad)
        with pytest.raises(ConfigError):
            load_config(path, tmp_path)


def test_sign_and_verify_commands(pki, image, tmp_path):
    runner = CliRunner()
    target = tmp_path / "signed.raw"
    target.write_bytes(image.read_bytes())
    s = pki.signers["p384"]
    result = runner.invoke(main, ["sign", "--key", str(s.key_path), "--cert-uuid", s.uuid, "--hash-method",
                                  "SHA-384", "--write-xattrs", str(target)])
    assert result.exit_code == 0, result.output
    printed = dict(line.split("=", 1) for line in result.output.splitlines())
    assert printed["img_signature_key_type"] == "ECC_SECP384R1"
    assert printed["img_signature_hash_method"] == "SHA-384"
    assert base64.b64decode(printed["img_signature"], validate=True)
    for name, value in printed.items():
        assert os.getxattr(target, f"user.image.{name}").decode() == value
    assert _verify(pki, printed, target.read_bytes()).certificate_uuid == s.uuid
    # verify needs os_hash too (as a copy from the mount carries it)
    config = tmp_path / "c.toml"
    config.write_text(pki.config_text())
    args = ["verify", str(target), "--config", str(config)]
    assert runner.invoke(main, args).exit_code == 2  # no os_hash_value: cannot be checked
    os.setxattr(target, "user.image.os_hash_algo", b"sha512")
    os.setxattr(target, "user.image.os_hash_value", hashlib.sha512(target.read_bytes()).hexdigest().encode())
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"signature verified with certificate {s.uuid}" in result.output
    with open(target, "r+b") as f:  # corrupt one byte in the middle
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and "does not match os_hash_value" in result.output
    # os_hash rewritten to match the tampered bytes: the signature still catches it
    os.setxattr(target, "user.image.os_hash_value", hashlib.sha512(target.read_bytes()).hexdigest().encode())
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and "bad signature" in result.output


def test_sign_refuses_curves_glance_does_not_know(tmp_path, image):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "p256.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    result = CliRunner().invoke(main, ["sign", "--key", str(path), "--cert-uuid", "x", str(image)])
    assert result.exit_code != 0 and "secp256r1 is not one Glance signatures use" in result.output


"""Image signatures as OpenStack's cursive verifies them, and the certificates they are checked against.

Pure: no trio, no FUSE, no catalog. The finalize step (imports.verify_signature)
and `imagefs verify` feed it the digest of the image bytes and the image's
four signature properties; it answers with the certificate that vouched for
them, or raises SignatureError naming the cause.

The algorithm is cursive's (signature_utils.get_verifier, as Glance uses it):
the signature is over the image bytes, hashed with `img_signature_hash_method`
and verified as a pre-hashed digest (`utils.Prehashed`): RSA-PSS with MGF1 on
the same hash and the maximum salt length, DSA, or ECDSA on one of six named
curves. The four binary (sect) curves, which recent cryptography releases no
longer have, are verified the same way by the `openssl` command line
(`openssl_cli`). Beyond Glance, a configured trust store makes the signing certificate
chain to a trusted CA, be within its validity period and allow digital
signatures (see `check_certificate`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa, utils

from . import openssl_cli
from .certificates import (
    CertificateNotFound,
    CertificateStore,
    DirectoryCertificateStore,
    check_certificate,
    load_certificates,
)

__all__ = [
    "CERTIFICATE_UUID", "HASH_METHOD", "KEY_TYPE", "SIGNATURE", "HASH_METHODS", "KEY_TYPES", "PROPERTIES", "CertificateNotFound", "CertificateStore",
    "CertificateKey", "DirectoryCertificateStore", "KeyType", "SignatureError", "SignatureProperties", "Verified",
    "certificate_key", "check_certificate", "describe_certificate", "hash_method_name", "key_type_of",
    "load_certificates", "load_trust_store", "parse_properties", "sign_digest", "sign_digest_with_openssl",
    "verify_digest", "verify_image",
]

# The four image properties, as Glance names them (etc/metadefs/image-signature-verification.json).
SIGNATURE = "img_signature"
HASH_METHOD = "img_signature_hash_method"
KEY_TYPE = "img_signature_key_type"
CERTIFICATE_UUID = "img_signature_certificate_uuid"
PROPERTIES = (SIGNATURE, HASH_METHOD, KEY_TYPE, CERTIFICATE_UUID)

# img_signature_hash_method -> (hashlib name, cryptography hash class)
HASH_METHODS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "SHA-224": ("sha224", hashes.SHA224),
    "SHA-256": ("sha256", hashes.SHA256),
    "SHA-384": ("sha384", hashes.SHA384),
    "SHA-512": ("sha512", hashes.SHA512),
}


class SignatureError(Exception):
    """The signature cannot be trusted; the message names why (it becomes the image's reason)."""


@dataclass(frozen=True)
class CertificateKey:
    """What a certificate's public key is: the key itself when cryptography can load it; for a
    binary-curve key (which cryptography 50 cannot load) only its family and curve, from the SPKI."""

    family: str  # "RSA", "DSA", "EC", or the class name of another key
    curve: str | None
    description: str  # for a mismatch's reason: "an EC key on sect571k1"
    public_key: object | None = None


def certificate_key(cert: x509.Certificate, uuid: str) -> CertificateKey:
    """The certificate's key, without failing on a binary curve; SignatureError if it is unusable."""
    try:
        public_key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as e:
        curve = openssl_cli.spki_curve(cert)
        if curve not in openssl_cli.CURVES:
            raise SignatureError(f"certificate {uuid}: its public key cannot be used here: {e}") from None
        return CertificateKey("EC", curve, f"an EC key on {curve}")
    if isinstance(public_key, rsa.RSAPublicKey):
        return CertificateKey("RSA", None, f"an RSA {public_key.key_size}-bit key", public_key)
    if isinstance(public_key, dsa.DSAPublicKey):
        return CertificateKey("DSA", None, f"a DSA {public_key.key_size}-bit key", public_key)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return CertificateKey("EC", public_key.curve.name, f"an EC key on {public_key.curve.name}", public_key)
    name = type(public_key).__name__
    return CertificateKey(name, None, f"a {name}", public_key)


@dataclass(frozen=True)
class KeyType:
    """One img_signature_key_type: the public key class it needs and how cursive verifies with it."""

    name: str
    family: str  # "RSA", "DSA", "EC": what the certificate's key must be
    curve: str | None = None  # the EC curve's name as cryptography spells it (secp384r1, sect571k1)

    @property
    def binary_curve(self) -> bool:
        """A sect curve: verified (and signed) with the openssl command line, not cryptography."""
        return self.curve in openssl_cli.CURVES

    def matches(self, key: CertificateKey) -> str | None:
        """None if the certificate's key is of this type, else what it is (for the reason)."""
        if key.family == self.family and key.curve == self.curve:
            return None
        return key.description

    def verify(self, key: CertificateKey, cert: x509.Certificate, signature: bytes, digest: bytes, hash_cls) -> None:
        """cursive's verifier: raises InvalidSignature (openssl_cli.OpenSSLError: openssl could not answer)."""
        if self.binary_curve:
            openssl_cli.verify_digest(cert, signature, digest, hash_cls.name)
            return
        public_key = key.public_key
        prehashed = utils.Prehashed(hash_cls())
        if self.family == "RSA":
            pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.MAX_LENGTH)
            public_key.verify(signature, digest, pss, prehashed)
        elif self.family == "DSA":
            public_key.verify(signature, digest, prehashed)
        else:
            public_key.verify(signature, digest, ec.ECDSA(prehashed))

    def sign(self, private_key, digest: bytes, hash_cls) -> bytes:
        """What `openssl dgst -sign` produces for this key type (the inverse of verify)."""
        prehashed = utils.Prehashed(hash_cls())
        if self.family == "RSA":
            pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.MAX_LENGTH)
            return private_key.sign(digest, pss, prehashed)
        if self.family == "DSA":
            return private_key.sign(digest, prehashed)
        return private_key.sign(digest, ec.ECDSA(prehashed))


_CURVES = ("sect571k1", "sect409k1", "sect571r1", "sect409r1", "secp521r1", "secp384r1")
KEY_TYPES: dict[str, KeyType] = {
    "RSA-PSS": KeyType("RSA-PSS", "RSA"),
    "DSA": KeyType("DSA", "DSA"),
    **{f"ECC_{c.upper()}": KeyType(f"ECC_{c.upper()}", "EC", c) for c in _CURVES},
}


def key_type_of(private_key) -> KeyType:
    """The img_signature_key_type of a private key: RSA -> RSA-PSS, DSA -> DSA, EC -> ECC_<curve>."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return KEY_TYPES["RSA-PSS"]
    if isinstance(private_key, dsa.DSAPrivateKey):
        return KEY_TYPES["DSA"]
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        name = f"ECC_{private_key.curve.name.upper()}"
        if name in KEY_TYPES:
            return KEY_TYPES[name]
        raise SignatureError(
            f"curve {private_key.curve.name} is not one Glance signatures use ({', '.join(_CURVES)})"
        )
    raise SignatureError(f"{type(private_key).__name__} keys cannot sign images (RSA, DSA or EC)")


@dataclass(frozen=True)
class SignatureProperties:
    signature: bytes  # decoded img_signature
    hash_method: str  # SHA-256 ...
    key_type: KeyType
    certificate_uuid: str

    @property
    def hash_name(self) -> str:
        """The hashlib name of the hash method (what the image bytes are hashed with)."""
        return HASH_METHODS[self.hash_method][0]


def hash_method_name(value: str | None) -> str | None:
    """The hashlib name for an img_signature_hash_method value, None if it is not one."""
    entry = HASH_METHODS.get((value or "").strip())
    return entry[0] if entry else None


def parse_properties(properties: dict[str, str]) -> SignatureProperties | None:
    """The image's signature properties, or None when it has none of them.

    Some but not all four is refused: Glance would silently skip verification,
    which would let a stripped property turn a signed image into an unverified one.
    """
    present = [p for p in PROPERTIES if properties.get(p) not in (None, "")]
    if not present:
        return None
    missing = [p for p in PROPERTIES if p not in present]
    if missing:
        raise SignatureError(f"incomplete signature properties: {', '.join(missing)} missing")
    text = "".join(properties[SIGNATURE].split())  # line breaks in a pasted signature mean nothing
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("img_signature is not valid base64") from None
    if not signature:
        raise SignatureError("img_signature is empty")
    method = properties[HASH_METHOD].strip()
    if method not in HASH_METHODS:
        raise SignatureError(f"img_signature_hash_method {method!r} is not one of {', '.join(HASH_METHODS)}")
    key_name = properties[KEY_TYPE].strip()
    key_type = KEY_TYPES.get(key_name)
    if key_type is None:
        raise SignatureError(f"img_signature_key_type {key_name!r} is not one of {', '.join(KEY_TYPES)}")
    return SignatureProperties(signature, method, key_type, properties[CERTIFICATE_UUID].strip())


@dataclass(frozen=True)
class Verified:
    certificate_uuid: str
    subject: str  # RFC 4514

    def __str__(self) -> str:
        """What user.imagefs.signature_verified shows."""
        return f"{self.certificate_uuid} {self.subject}"


def describe_certificate(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def verify_digest(
    props: SignatureProperties,
    digest: bytes,
    store: CertificateStore,
    *,
    trusted: list[x509.Certificate] | None = None,
    now: datetime.datetime | None = None,
) -> Verified:
    """Check `digest` (of the image bytes, with props.hash_method) against the signature.

    `trusted`: the trust store's CA certificates; when given (even empty), the signing
    certificate must chain to one of them, be valid at `now` and allow digital signatures.
    None means Glance's checks only (the key type matches the certificate's key).
    """
    uuid = props.certificate_uuid
    try:
        cert = store.get(uuid)
    except CertificateNotFound as e:
        raise SignatureError(str(e)) from None
    key = certificate_key(cert, uuid)
    mismatch = props.key_type.matches(key)
    if mismatch:
        raise SignatureError(
            f"key type mismatch: img_signature_key_type is {props.key_type.name} but certificate {uuid} has {mismatch}"
        )
    if trusted is not None:
        try:
            problem = check_certificate(cert, trusted, now or datetime.datetime.now(datetime.timezone.utc))
        except openssl_cli.OpenSSLError as e:  # a binary-curve CA's signature could not be checked
            raise SignatureError(f"certificate {uuid} cannot be checked against the trust store: {e}") from None
        if problem:
            raise SignatureError(f"certificate {uuid} {problem}")
    hash_cls = HASH_METHODS[props.hash_method][1]
    if len(digest) != hash_cls.digest_size:
        raise ValueError(f"a {props.hash_method} digest is {hash_cls.digest_size} bytes, not {len(digest)}")
    try:
        props.key_type.verify(key, cert, props.signature, digest, hash_cls)
    except InvalidSignature:
        raise SignatureError(f"bad signature: the data does not match img_signature (certificate {uuid})") from None
    except openssl_cli.OpenSSLError as e:
        raise SignatureError(f"img_signature_key_type {props.key_type.name} cannot be verified: {e}") from None
    return Verified(uuid, describe_certificate(cert))


def sign_digest(private_key, digest: bytes, hash_method: str) -> tuple[KeyType, bytes]:
    """Sign a digest as `openssl dgst -<hash> -sign` would (RSA: PSS, maximum salt)."""
    key_type = key_type_of(private_key)
    return key_type, key_type.sign(private_key, digest, HASH_METHODS[hash_method][1])


def sign_digest_with_openssl(
    key_path: Path, digest: bytes, hash_method: str, password: bytes | None = None,
) -> tuple[KeyType, bytes]:
    """Sign a digest with a binary-curve private key file (cryptography cannot load one) via openssl.

    Raises SignatureError when the key is not on one of Glance's binary curves, or openssl fails."""
    try:
        curve = openssl_cli.key_curve(key_path, password)
        if curve not in openssl_cli.CURVES:
            what = f"curve {curve}" if curve else "a key that is not EC"
            raise SignatureError(f"{what} cannot sign images here (RSA, DSA, or EC on one of {', '.join(_CURVES)})")
        key_type = KEY_TYPES[f"ECC_{curve.upper()}"]
        return key_type, openssl_cli.sign_digest(key_path, digest, HASH_METHODS[hash_method][0], password)
    except openssl_cli.OpenSSLError as e:
        raise SignatureError(str(e)) from None


def load_trust_store(trusted_ca_file: Path | None, enabled: bool = True) -> list[x509.Certificate] | None:
    """The trusted CA certificates (None: no trust store configured, or its checks switched off).

    A configured file that cannot be read refuses every signature (fail closed)."""
    if trusted_ca_file is None or not enabled:
        return None
    try:
        return load_certificates(Path(trusted_ca_file).read_bytes())
    except OSError as e:
        raise SignatureError(f"trusted_ca_file {trusted_ca_file} cannot be read: {e.strerror or e}") from None
    except ValueError:
        raise SignatureError(f"trusted_ca_file {trusted_ca_file} holds no X.509 certificate") from None


def verify_image(
    props: SignatureProperties, digest: bytes, *, certificate_dir: Path, trusted_ca_file: Path | None = None,
    verify_certificate: bool = True,
) -> Verified:
    """verify_digest against a directory certificate store and an optional trust store file
    (what `[signing]` configures). Blocking: reads the files."""
    trusted = load_trust_store(trusted_ca_file, verify_certificate)
    return verify_digest(props, digest, DirectoryCertificateStore(certificate_dir), trusted=trusted)

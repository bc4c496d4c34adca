"""Where signing certificates come from, and what makes one trustworthy.

`CertificateStore` is the interface (Glance fetches certificates from a key
manager, castellan/Barbican, by UUID; one can be added behind it later).
`DirectoryCertificateStore` is the first implementation: a directory of X.509
files, PEM or DER, each named by its UUID (`<uuid>`, `<uuid>.pem`,
`<uuid>.crt`, `<uuid>.cer` or `<uuid>.der`).

`check_certificate` is what imagefs adds to Glance (which checks no chain,
dates or usage on upload): with a trust store configured, the signing
certificate must be issued by a trusted CA (or be one of the trusted
certificates itself), be within its validity period, as must its issuer,
and allow digital signatures when it carries a KeyUsage extension. A CA whose
key is on a binary curve (which cryptography 50 cannot load) has its signature
over the certificate checked by the openssl command line (`openssl_cli`).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import SignatureAlgorithmOID

from . import openssl_cli

# Certificate ids become file names: no separators, no dot files, nothing to escape.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
SUFFIXES = ("", ".pem", ".crt", ".cer", ".der")


class CertificateNotFound(LookupError):
    """The store has no (usable) certificate under that id; the message says which and why."""


class CertificateStore(ABC):
    """Signing certificates by id (img_signature_certificate_uuid)."""

    @abstractmethod
    def get(self, certificate_id: str) -> x509.Certificate:
        """The certificate; raises CertificateNotFound (unknown id, unreadable or not X.509)."""


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM data (a bundle may hold several), or the one DER certificate."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


class DirectoryCertificateStore(CertificateStore):
    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DirectoryCertificateStore({str(self.path)!r})"

    def get(self, certificate_id: str) -> x509.Certificate:
        if not _SAFE_ID.fullmatch(certificate_id):
            raise CertificateNotFound(f"certificate id {certificate_id!r} is not a usable name")
        for suffix in SUFFIXES:
            candidate = self.path / f"{certificate_id}{suffix}"
            try:
                data = candidate.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
            except OSError as e:
                raise CertificateNotFound(f"certificate {certificate_id}: cannot read {candidate}: {e.strerror}") from None
            try:
                certs = load_certificates(data)
            except ValueError:
                raise CertificateNotFound(f"certificate {certificate_id}: {candidate} is not an X.509 certificate") from None
            if len(certs) != 1:
                raise CertificateNotFound(f"certificate {certificate_id}: {candidate} holds {len(certs)} certificates")
            return certs[0]
        raise CertificateNotFound(f"certificate {certificate_id} not found in {self.path}")


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"is not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
    if now > cert.not_valid_after_utc:
        return f"expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return None


def _extension(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _can_issue(ca: x509.Certificate) -> bool:
    """A CA certificate: BasicConstraints CA, and keyCertSign if it has a KeyUsage."""
    constraints = _extension(ca, x509.BasicConstraints)
    usage = _extension(ca, x509.KeyUsage)
    return bool(constraints and constraints.ca) and (usage is None or usage.key_cert_sign)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except UnsupportedAlgorithm:
        return _issued_by_binary_curve_ca(cert, issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA224: "sha224",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "sha256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "sha384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "sha512",
}


def _issued_by_binary_curve_ca(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """verify_directly_issued_by for an issuer whose key is on a binary curve (cryptography 50 cannot
    load it): the ECDSA signature over the hash of the TBSCertificate, checked by openssl as a
    pre-hashed digest. Raises openssl_cli.OpenSSLError when openssl cannot answer."""
    hash_name = _ECDSA.get(cert.signature_algorithm_oid)
    if hash_name is None or cert.issuer != issuer.subject or openssl_cli.spki_curve(issuer) not in openssl_cli.CURVES:
        return False
    digest = hashlib.new(hash_name, cert.tbs_certificate_bytes).digest()
    try:
        openssl_cli.verify_digest(issuer, cert.signature, digest, hash_name)
    except InvalidSignature:
        return False
    return True


def check_certificate(cert: x509.Certificate, trusted: list[x509.Certificate], now: datetime.datetime) -> str | None:
    """Why `cert` may not sign images under this trust store (None: it may).

    The message completes "certificate <uuid> ...".
    """
    problem = _valid_at(cert, now)
    if problem:
        return problem
    usage = _extension(cert, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        return "does not allow digital signatures (KeyUsage without digitalSignature)"
    if any(cert == anchor for anchor in trusted):
        return None  # trusted itself
    issuers = [ca for ca in trusted if ca.subject == cert.issuer and _issued_by(cert, ca)]
    if not issuers:
        subject = cert.issuer.rfc4514_string()
        return f"is not issued by a trusted CA (its issuer {subject} is not in the trust store, or did not sign it)"
    reasons = []
    for ca in issuers:
        if not _can_issue(ca):
            reasons.append(f"its issuer {ca.subject.rfc4514_string()} is not a CA certificate")
            continue
        expired = _valid_at(ca, now)
        if expired:
            reasons.append(f"its issuer {ca.subject.rfc4514_string()} {expired}")
            continue
        return None
    return reasons[0]

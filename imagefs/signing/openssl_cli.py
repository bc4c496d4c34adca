"""The binary-curve (sect) key types, verified and signed with the `openssl` command line.

Recent `cryptography` releases (50, the one installed here) dropped the binary
curves Glance lists (ECC_SECT409K1, ECC_SECT409R1, ECC_SECT571K1,
ECC_SECT571R1): they still parse such a certificate but cannot load its public
key. OpenSSL 3's command line still has them, so these key types go through it
with cursive's algorithm unchanged: ECDSA over the image digest (hashed with
img_signature_hash_method), checked as a pre-hashed digest
(`openssl pkeyutl -verify -certin -inkey CERT -sigfile SIG -in DIGEST
-pkeyopt digest:<hash>`), which is what `openssl dgst -<hash> -sign key.pem`
(OpenStack's recipe) produces and checks.

Pure: no trio, no FUSE. Blocking: callers run it in a worker thread. openssl
runs without a shell, with a timeout, on files in a private temporary
directory removed afterwards. The curve of a certificate's key is read from
its SubjectPublicKeyInfo's named-curve OID (`spki_curve`), without loading the key.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

__all__ = [
    "CURVES", "TIMEOUT", "OpenSSLError", "find_openssl", "key_curve", "sign_digest", "spki_curve", "verify_digest",
]

# The binary curves Glance's key types name, by their OIDs (SEC 2 / RFC 5480).
CURVES = {
    "sect409k1": "1.3.132.0.36",
    "sect409r1": "1.3.132.0.37",
    "sect571k1": "1.3.132.0.38",
    "sect571r1": "1.3.132.0.39",
}
# Other named curves, so a mismatch says which curve a key is on.
_CURVE_NAMES = {
    **{oid: name for name, oid in CURVES.items()},
    "1.3.132.0.34": "secp384r1",
    "1.3.132.0.35": "secp521r1",
    "1.3.132.0.33": "secp224r1",
    "1.3.132.0.10": "secp256k1",
    "1.2.840.10045.3.1.7": "secp256r1",
    "1.2.840.10045.3.1.1": "secp192r1",
}
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
TIMEOUT = 30  # seconds: one ECDSA operation takes milliseconds
_HASHES = ("sha224", "sha256", "sha384", "sha512")


class OpenSSLError(Exception):
    """openssl could not do it (not installed, timed out, refused the input); the message says why."""


# --- the certificate's key, from its DER ------------------------------------------------------
def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out, pos = [], start
    while pos < end:
        tag, vstart, vend = _tlv(data, pos)
        out.append((tag, vstart, vend))
        pos = vend
    return out


def _oid(value: bytes) -> str:
    if not value:
        raise ValueError("empty OID")
    arcs, n = [], 0
    for byte in value:
        n = (n << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(n)
            n = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _spki_curve_der(spki: bytes) -> str | None:
    """The named curve of a DER SubjectPublicKeyInfo of an EC key (its name, or its OID when unknown);
    None when the key is not EC or its parameters are not a named curve."""
    tag, start, end = _tlv(spki, 0)
    if tag != 0x30:
        raise ValueError("SubjectPublicKeyInfo is not a SEQUENCE")
    algorithm = _children(spki, start, end)[0]
    parts = _children(spki, algorithm[1], algorithm[2])
    if not parts or parts[0][0] != 0x06 or _oid(spki[parts[0][1]:parts[0][2]]) != _EC_PUBLIC_KEY:
        return None
    if len(parts) < 2 or parts[1][0] != 0x06:
        return None  # explicit curve parameters: no named curve
    oid = _oid(spki[parts[1][1]:parts[1][2]])
    return _CURVE_NAMES.get(oid, oid)


def spki_curve(cert: x509.Certificate) -> str | None:
    """The named curve of the certificate's EC key, read from its SubjectPublicKeyInfo in the DER
    (cryptography parses the certificate but cannot load a binary-curve key). None: not an EC key
    on a named curve."""
    tbs = cert.tbs_certificate_bytes
    try:
        tag, start, end = _tlv(tbs, 0)
        fields = _children(tbs, start, end)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        return _spki_curve_der(tbs[fields[4][2]:fields[5][2]])  # the whole SPKI element, after the subject
    except (ValueError, IndexError):
        return None


# --- running openssl --------------------------------------------------------------------------
def find_openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise OpenSSLError(
            "the openssl command is not installed (binary-curve signatures are verified with it;"
            " tools/install.sh installs it)"
        )
    return path


def _run(args: list[str], *, input: bytes | None = None) -> subprocess.CompletedProcess:
    command = [find_openssl(), *args]
    try:
        return subprocess.run(
            command, input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, timeout=TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise OpenSSLError(f"openssl {args[0]} did not finish within {TIMEOUT} seconds") from None
    except OSError as e:
        raise OpenSSLError(f"cannot run {command[0]}: {e.strerror or e}") from None


def _failure(args: list[str], result: subprocess.CompletedProcess) -> OpenSSLError:
    lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
    detail = "; ".join(lines[:2]) or f"exit status {result.returncode}"
    return OpenSSLError(f"openssl {args[0]} failed: {detail}")


def _check_hash(hash_name: str) -> None:
    if hash_name not in _HASHES:
        raise ValueError(f"{hash_name} is not one of {', '.join(_HASHES)}")


def verify_digest(cert: x509.Certificate, signature: bytes, digest: bytes, hash_name: str) -> None:
    """Check an ECDSA signature over a pre-hashed digest with the certificate's key.

    Raises InvalidSignature when it does not verify (including a malformed signature),
    OpenSSLError when openssl cannot answer."""
    _check_hash(hash_name)
    with tempfile.TemporaryDirectory(prefix="imagefs-openssl-") as tmp:
        d = Path(tmp)
        (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / "signature").write_bytes(signature)
        (d / "digest").write_bytes(digest)
        args = ["pkeyutl", "-verify", "-certin", "-inkey", str(d / "cert.pem"), "-sigfile", str(d / "signature"),
                "-in", str(d / "digest"), "-pkeyopt", f"digest:{hash_name}"]
        result = _run(args)
    out = result.stdout.decode(errors="replace")
    if result.returncode == 0 and "Signature Verified Successfully" in out:
        return
    if result.returncode == 1 and "Signature Verification Failure" in out:
        raise InvalidSignature()
    raise _failure(args, result)


def _password_input(password: bytes | None) -> bytes:
    return (password or b"") + b"\n"  # -passin stdin reads the first line; ignored for a plain key


def key_curve(key_path: Path, password: bytes | None = None) -> str | None:
    """The named curve of a private key file (PEM or DER) openssl reads, None if it is not EC."""
    args = ["pkey", "-in", str(key_path), "-passin", "stdin", "-pubout", "-outform", "DER"]
    result = _run(args, input=_password_input(password))
    if result.returncode != 0:
        raise _failure(args, result)
    try:
        return _spki_curve_der(result.stdout)
    except (ValueError, IndexError):
        raise OpenSSLError(f"openssl pkey gave no usable public key for {key_path}") from None


def sign_digest(key_path: Path, digest: bytes, hash_name: str, password: bytes | None = None) -> bytes:
    """ECDSA-sign a pre-hashed digest with a private key file: what `openssl dgst -<hash> -sign` makes."""
    _check_hash(hash_name)
    with tempfile.TemporaryDirectory(prefix="imagefs-openssl-") as tmp:
        d = Path(tmp)
        (d / "digest").write_bytes(digest)
        args = ["pkeyutl", "-sign", "-inkey", str(key_path), "-passin", "stdin", "-in", str(d / "digest"),
                "-out", str(d / "signature"), "-pkeyopt", f"digest:{hash_name}"]
        result = _run(args, input=_password_input(password))
        if result.returncode != 0:
            raise _failure(args, result)
        return (d / "signature").read_bytes()

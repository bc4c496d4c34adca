"""Keys, certificates and signatures for the signing tests, made independently of imagefs.

Keys and certificates come from `cryptography` (a small CA, leaf certificates of
every key type, an expired one, one without digitalSignature, one from a CA
nobody trusts); the binary-curve (sect) keys and certificates from the openssl
command line (`openssl ecparam -genkey`, `openssl req`, `openssl x509 -req`),
since recent cryptography releases cannot make them. Signatures come from the
`openssl` command line exactly as OpenStack's documentation shows
(`openssl dgst -sha256 -sign private_key.pem -sigopt rsa_padding_mode:pss -out
image.signature image`, then `base64 -w 0`), never from imagefs's own code.
"""

from __future__ import annotations

import datetime
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
BINARY_CURVES = ("sect571k1", "sect409k1", "sect571r1", "sect409r1")
OPENSSL_DIGEST = {"SHA-224": "-sha224", "SHA-256": "-sha256", "SHA-384": "-sha384", "SHA-512": "-sha512"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagefs tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(digital_signature: bool, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )


@dataclass
class Authority:
    key: object
    cert: x509.Certificate

    @classmethod
    def make(cls, cn: str) -> Authority:
        key = ec.generate_private_key(ec.SECP384R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(False, cert_sign=True), critical=True)
            .sign(key, hashes.SHA384())
        )
        return cls(key, cert)

    def issue(self, public_key, cn: str, *, not_before=None, not_after=None, digital_signature=True,
              key_usage=True) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if key_usage:
            builder = builder.add_extension(_key_usage(digital_signature), critical=True)
        return builder.sign(self.key, hashes.SHA384())


@dataclass
class Signer:
    """A private key on disk and its certificate, stored under `uuid` in a certificate dir."""

    name: str
    key_path: Path
    cert: x509.Certificate | None
    uuid: str
    key_type: str

    def openssl_sign(self, image: Path, hash_method: str) -> str:
        """The base64 signature, made with openssl as OpenStack's docs show."""
        out = image.with_name(image.name + f".{self.name}.signature")
        args = ["openssl", "dgst", OPENSSL_DIGEST[hash_method], "-sign", str(self.key_path)]
        if self.key_type == "RSA-PSS":
            args += ["-sigopt", "rsa_padding_mode:pss"]
        subprocess.run([*args, "-out", str(out), str(image)], check=True, capture_output=True)
        encoded = subprocess.run(["base64", "-w", "0", str(out)], check=True, capture_output=True, text=True)
        return encoded.stdout

    def properties(self, image: Path, hash_method: str, *, cert_uuid: str | None = None) -> dict[str, str]:
        return {
            "img_signature": self.openssl_sign(image, hash_method),
            "img_signature_hash_method": hash_method,
            "img_signature_key_type": self.key_type,
            "img_signature_certificate_uuid": cert_uuid or self.uuid,
        }


def openssl(*args) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def openssl_key(curve: str, path: Path) -> Path:
    openssl("ecparam", "-name", curve, "-genkey", "-noout", "-out", path)
    return path


def openssl_self_signed(key: Path, cn: str, out: Path, *, ca: bool = False) -> x509.Certificate:
    """`openssl req -new -x509`: a CA (keyCertSign) or a signer (digitalSignature)."""
    usage = "keyUsage=critical,keyCertSign,cRLSign" if ca else "keyUsage=critical,digitalSignature"
    openssl("req", "-new", "-x509", "-key", key, "-subj", f"/O=imagefs tests/CN={cn}", "-days", "2",
            "-addext", usage, "-out", out)
    return x509.load_pem_x509_certificate(out.read_bytes())


def openssl_issue(key: Path, cn: str, ca_cert: Path, ca_key: Path, out: Path) -> x509.Certificate:
    """`openssl x509 -req`: a signer's certificate (digitalSignature) issued by a CA (any key type)."""
    csr, ext = out.with_suffix(".csr"), out.with_suffix(".ext")
    openssl("req", "-new", "-key", key, "-subj", f"/O=imagefs tests/CN={cn}", "-out", csr)
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-set_serial", str(uuid.uuid4().int >> 64),
            "-days", "2", "-sha384", "-extfile", ext, "-out", out)
    return x509.load_pem_x509_certificate(out.read_bytes())


def _write_key(key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return path


def store_certificate(cert: x509.Certificate, cert_dir: Path, cert_id: str, *, der: bool = False) -> None:
    cert_dir.mkdir(parents=True, exist_ok=True)
    if der:
        (cert_dir / f"{cert_id}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    else:
        (cert_dir / f"{cert_id}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class PKI:
    """Everything a module's tests sign with: made once per module (DSA and RSA 4096 are slow)."""

    def __init__(self, root: Path):
        self.root = root
        self.cert_dir = root / "certificates"
        self.ca = Authority.make("imagefs test CA")
        self.rogue_ca = Authority.make("nobody trusts this CA")
        self.ca_file = root / "trusted.pem"
        self.ca_file.write_bytes(self.ca.cert.public_bytes(serialization.Encoding.PEM))
        self.ca_key = _write_key(self.ca.key, root / "ca.key")
        keys = {
            "rsa": (rsa.generate_private_key(65537, 2048), "RSA-PSS"),
            "rsa4096": (rsa.generate_private_key(65537, 4096), "RSA-PSS"),
            "dsa": (dsa.generate_private_key(2048), "DSA"),
            "p384": (ec.generate_private_key(ec.SECP384R1()), "ECC_SECP384R1"),
            "p521": (ec.generate_private_key(ec.SECP521R1()), "ECC_SECP521R1"),
        }
        self.signers: dict[str, Signer] = {}
        for i, (name, (key, key_type)) in enumerate(keys.items()):
            cert = self.ca.issue(key.public_key(), f"signer {name}")
            self._add(name, key, cert, key_type, der=i % 2 == 1)  # half of them stored as DER
        for i, curve in enumerate(BINARY_CURVES):  # openssl-made, issued by the same CA
            key_path = openssl_key(curve, root / f"{curve}.key")
            cert = openssl_issue(key_path, f"signer {curve}", self.ca_file, self.ca_key, root / f"{curve}.pem")
            self._add_file(curve, key_path, cert, f"ECC_{curve.upper()}", der=i % 2 == 1)
        rsa_key = keys["rsa"][0]
        self._add("expired", rsa_key, self.ca.issue(rsa_key.public_key(), "expired signer",
                  not_before=NOW - 60 * DAY, not_after=NOW - DAY), "RSA-PSS")
        self._add("no_signing", rsa_key, self.ca.issue(rsa_key.public_key(), "encipher only",
                  digital_signature=False), "RSA-PSS")
        self._add("untrusted", rsa_key, self.rogue_ca.issue(rsa_key.public_key(), "rogue signer"), "RSA-PSS")

    def _add(self, name, key, cert, key_type, der=False) -> Signer:
        return self._add_file(name, _write_key(key, self.root / f"{name}.key"), cert, key_type, der)

    def _add_file(self, name, key_path, cert, key_type, der=False) -> Signer:
        cert_id = str(uuid.uuid4())
        store_certificate(cert, self.cert_dir, cert_id, der=der)
        signer = Signer(name, key_path, cert, cert_id, key_type)
        self.signers[name] = signer
        return signer

    def self_signed(self, name: str, curve: str) -> Signer:
        """A binary-curve key and a self-signed certificate (`openssl req -new -x509`), not in self.signers."""
        key_path = openssl_key(curve, self.root / f"{name}.key")
        cert = openssl_self_signed(key_path, f"signer {name}", self.root / f"{name}.pem")
        cert_id = str(uuid.uuid4())
        store_certificate(cert, self.cert_dir, cert_id)
        return Signer(name, key_path, cert, cert_id, f"ECC_{curve.upper()}")

    def config_text(self, *, trust: bool = True, extra: str = "") -> str:
        lines = ["[signing]", f'certificate_dir = "{self.cert_dir}"']
        if trust:
            lines.append(f'trusted_ca_file = "{self.ca_file}"')
        return "\n".join(lines) + "\n" + extra

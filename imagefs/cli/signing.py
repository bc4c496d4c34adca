"""imagefs sign / verify: produce an image's signature properties, and re-check a signed image.

`sign` is what an image's publisher runs (the equivalent of OpenStack's
`openssl dgst -sign` recipe); `verify` is what a compute host runs before it
boots an image, on the mount or on a local copy whose xattrs came along
(`cp -a`, `rsync -X`): it re-reads the data, so a blob corrupted after
activation is caught.

verify's exit codes: 0 the data matches os_hash_value and the signature
verifies; 1 it does not (or the certificate is not trusted); 2 it cannot be
checked (unreadable file, missing attributes, a bad config).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

import click

from .. import signing
from ..hashing import hash_path
from ..metadata import IMAGE_PREFIX
from . import main
from .options import library_options, read_config


def _load_private_key(path: Path, password: bytes | None):
    """The key, or None when cryptography cannot load its algorithm (a binary-curve EC key: openssl signs)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        return loader(data, password=password)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise click.ClickException(f"{path}: {e} (see --password-file)") from None
    except UnsupportedAlgorithm:
        return None
    except ValueError as e:
        raise click.ClickException(f"{path}: not a usable private key: {e}") from None


@main.command()
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Private key (PEM or DER): RSA, DSA or EC on one of Glance's curves (the binary sect curves"
                   " are signed with the openssl command).")
@click.option("--cert-uuid", required=True, help="The signing certificate's id in the certificate store.")
@click.option("--hash-method", type=click.Choice(list(signing.HASH_METHODS)), default="SHA-256", show_default=True)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File holding the private key's password.")
@click.option("--write-xattrs", is_flag=True,
              help="Also set the properties as user.image.* xattrs on FILE, for cp -a / rsync -X to carry.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def sign(key_path, cert_uuid, hash_method, password_file, write_xattrs, file) -> None:
    """Sign FILE as Glance expects: print its four img_signature* properties (name=value lines)."""
    password = password_file.read_bytes().rstrip(b"\r\n") if password_file else None
    private_key = _load_private_key(key_path, password)
    if private_key is not None:
        try:
            signing.key_type_of(private_key)  # refuse an unusable key before reading the image
        except signing.SignatureError as e:
            raise click.ClickException(str(e)) from None
    hash_name = signing.HASH_METHODS[hash_method][0]
    digest = hash_path(file, [hash_name])[hash_name]
    try:
        if private_key is None:
            key_type, signature = signing.sign_digest_with_openssl(key_path, digest, hash_method, password)
        else:
            key_type, signature = signing.sign_digest(private_key, digest, hash_method)
    except signing.SignatureError as e:
        raise click.ClickException(f"{key_path}: {e}") from None
    properties = {
        signing.SIGNATURE: base64.b64encode(signature).decode(),
        signing.HASH_METHOD: hash_method,
        signing.KEY_TYPE: key_type.name,
        signing.CERTIFICATE_UUID: cert_uuid,
    }
    if write_xattrs:
        for name, value in properties.items():
            os.setxattr(file, IMAGE_PREFIX + name, value.encode())
    for name, value in properties.items():
        click.echo(f"{name}={value}")


def _fail(code: int, message: str):
    click.echo(f"imagefs verify: {message}", err=True)
    sys.exit(code)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@library_options
def verify(path, config_path, data_dir) -> None:
    """Re-read an image (on the mount, or a copy carrying its xattrs): os_hash_value and signature must hold."""
    config = read_config(config_path, data_dir)
    try:
        attrs = {name[len(IMAGE_PREFIX):]: os.getxattr(path, name).decode(errors="replace")
                 for name in os.listxattr(path) if name.startswith(IMAGE_PREFIX)}
    except OSError as e:
        _fail(2, f"cannot read the attributes of {path}: {e.strerror or e}")
    algo, expected = attrs.get("os_hash_algo"), attrs.get("os_hash_value")
    if not algo or not expected:
        _fail(2, f"{path} carries no user.image.os_hash_algo / os_hash_value (copy it with cp -a or rsync -X)")
    if algo not in hashlib.algorithms_available:
        _fail(2, f"{path}: unknown os_hash_algo {algo!r}")
    try:
        props = signing.parse_properties(attrs)
    except signing.SignatureError as e:
        _fail(1, f"{path}: {e}")
    if props is None:
        _fail(2, f"{path} is not signed (no user.image.img_signature* attributes)")
    try:
        digests = hash_path(path, [algo, props.hash_name])
    except OSError as e:
        _fail(2, f"cannot read {path}: {e.strerror or e}")
    actual = digests[algo].hex()
    if actual != expected.strip().lower():
        _fail(1, f"{path}: the data does not match os_hash_value ({algo} is {actual}, expected {expected})")
    try:
        verified = signing.verify_image(
            props, digests[props.hash_name], certificate_dir=config.certificate_path,
            trusted_ca_file=config.trusted_ca_file, verify_certificate=config.verify_certificate,
        )
    except signing.SignatureError as e:
        _fail(1, f"{path}: {e}")
    click.echo(f"{path}: os_hash_value ({algo}) matches; signature verified with certificate {verified}")

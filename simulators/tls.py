"""Certificates for the simulators: a private CA and a server certificate it signs.

Why: the environment may set REQUESTS_CA_BUNDLE (which overrides verify=False) and
vcsim's built-in certificate is RSA-1024 ("key too weak"). With our own CA, clients
keep TLS verification on exactly as in production and pass ``verify=<ca file>``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_VALID_DAYS = 3650
_RENEW_BEFORE = dt.timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    """Paths of the PEM files in a certificate directory."""

    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path


def _files(directory: Path) -> CertFiles:
    return CertFiles(
        ca_file=directory / "ca.pem",
        ca_key_file=directory / "ca-key.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _san(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def _still_valid(files: CertFiles, hosts: tuple[str, ...]) -> bool:
    """True if all files exist, the server cert is signed by the CA, covers hosts and
    is not about to expire."""
    try:
        ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        serialization.load_pem_private_key(files.key_file.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # missing, unreadable, foreign or badly signed: regenerate
        return False
    now = dt.datetime.now(dt.UTC)
    if min(cert.not_valid_after_utc, ca.not_valid_after_utc) - now < _RENEW_BEFORE:
        return False
    return all(name in list(san) for name in _san(hosts))


def ensure_certs(directory: Path | str, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> CertFiles:
    """Create (or reuse, if present and valid) a CA and a 2048-bit RSA server
    certificate for ``hosts`` (SAN IP and DNS entries) in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = _files(directory)
    if _still_valid(files, hosts):
        return files

    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(minutes=5)
    end = now + dt.timedelta(days=_VALID_DAYS)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dpflow simulators test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    _write(files.ca_key_file, ca_key.private_bytes(pem, pkcs8, none), private=True)
    _write(files.key_file, key.private_bytes(pem, pkcs8, none), private=True)
    _write(files.ca_file, ca.public_bytes(pem))
    _write(files.cert_file, cert.public_bytes(pem))
    return files

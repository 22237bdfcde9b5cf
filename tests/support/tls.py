"""Certificates and web configs for the tests: a self-signed server certificate for 127.0.0.1
written where a web config points, so a test can renew it under a running server."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(directory: Path, common_name: str) -> tuple[Path, Path]:
    """Write ``tls.crt`` and ``tls.key`` (a new key each time) in ``directory``; the certificate
    is for 127.0.0.1 and localhost, named ``common_name``. Returns (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    # The key first, then the certificate, as a renewal that is caught half-way would leave them.
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def common_name(der: bytes) -> str:
    """The common name of a DER certificate (what a TLS client was served)."""
    certificate = x509.load_der_x509_certificate(der)
    [attribute] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def write_bcrypt_web_config(directory: Path, user: str, password: str) -> Path:
    """``web.yml`` in ``directory`` with one basic auth user (a cheap bcrypt cost)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = directory / "web.yml"
    path.write_text(f"basic_auth_users:\n  {user}: '{hashed}'\n", encoding="utf-8")
    return path


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` header value for ``user``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

"""Certificates for a TLS-verified test engine, made at test time with ``cryptography``.

``make_pki(dir)`` writes, under ``dir``:

- ``server/``: ``ca.pem``, ``server-cert.pem``, ``server-key.pem`` for ``dockerd --tlsverify``
  (the server certificate names only the IP 127.0.0.1, so ``localhost`` is a name mismatch);
- ``client/``: ``ca.pem``, ``cert.pem``, ``key.pem``, the ``DOCKER_CERT_PATH`` layout;
- ``wrong-ca/``: the same client files, but ``ca.pem`` is another CA's;
- ``foreign-client/``: the right ``ca.pem``, a client certificate signed by another CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pki:
    server: Path
    client: Path
    wrong_ca: Path
    foreign_client: Path


def make_pki(root: Path) -> Pki:
    ca_key, ca_cert = _authority("pipes-docker test CA")
    other_key, other_cert = _authority("another CA")
    server_key, server_cert = _leaf(
        "dind", ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1"
    )
    client_key, client_cert = _leaf("client", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH)
    foreign_key, foreign_cert = _leaf(
        "client", other_key, other_cert, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    pki = Pki(root / "server", root / "client", root / "wrong-ca", root / "foreign-client")
    _write(
        pki.server,
        {"ca.pem": ca_cert, "server-cert.pem": server_cert},
        {"server-key.pem": server_key},
    )
    _write(pki.client, {"ca.pem": ca_cert, "cert.pem": client_cert}, {"key.pem": client_key})
    _write(pki.wrong_ca, {"ca.pem": other_cert, "cert.pem": client_cert}, {"key.pem": client_key})
    _write(
        pki.foreign_client, {"ca.pem": ca_cert, "cert.pem": foreign_cert}, {"key.pem": foreign_key}
    )
    return pki


def _authority(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def _leaf(
    name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    usage: x509.ObjectIdentifier,
    ip: str | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if ip is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(
    directory: Path,
    certs: dict[str, x509.Certificate],
    keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    directory.mkdir(parents=True)
    for name, cert in certs.items():
        (directory / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for name, key in keys.items():
        path = directory / name
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o644)  # dockerd in the container reads it as root; any reader is fine here

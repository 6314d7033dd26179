"""TLS for the offsite replica: a CA of the stack's own and the primary's server certificate.

Made once and kept in the output (keys 0600, like .env); every render reuses them. The server certificate
is made again, by the same CA, only when `dbc.offsite.host` is no longer in it or it nears its end, so a
replica exported earlier (which trusts the CA, not the server certificate) keeps connecting.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploystack.plan.dbc import TLS_CERT, TLS_KEY
from deploystack.plan.patroni import TLS_CERT as PATRONI_CERT
from deploystack.plan.patroni import TLS_KEY as PATRONI_KEY
from deploystack.render.sourcetree import FileData
from deploystack.render.state import OFFSITE_CA_CERT as CA_CERT
from deploystack.render.state import OFFSITE_CA_KEY as CA_KEY

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_DAYS = 30  # a server certificate with less left than this is made again


def offsite_tls(project: str, host: str, kept: Mapping[str, bytes], patroni: bool = False) -> dict[str, FileData]:
    """The CA and server files for the output, reusing those of `kept` (the output's, by path) when still good.
    `patroni`: the server certificate goes to the nodes' folder (every node may lead)."""
    cert_path, key_path = (PATRONI_CERT, PATRONI_KEY) if patroni else (TLS_CERT, TLS_KEY)
    ca = _read_pair(kept, CA_CERT, CA_KEY)
    if ca is None:
        ca = _new_ca(project)
    server = _read_pair(kept, cert_path, key_path)
    if server is None or not _serves(server[0], ca[0], host):
        server = _new_server(host, ca)
    return {
        CA_CERT: FileData(_pem(ca[0])), CA_KEY: FileData(_key_pem(ca[1]), 0o600),
        cert_path: FileData(_pem(server[0])), key_path: FileData(_key_pem(server[1]), 0o600),
    }


Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _read_pair(kept: Mapping[str, bytes], cert_path: str, key_path: str) -> Pair | None:
    """A certificate and its key from the PEM files `kept` has; None when either is missing, unreadable or
    they differ."""
    if cert_path not in kept or key_path not in kept:
        return None
    try:
        cert = x509.load_pem_x509_certificate(kept[cert_path])
        key = serialization.load_pem_private_key(kept[key_path], password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return None
    return cert, key


def _serves(cert: x509.Certificate, ca: x509.Certificate, host: str) -> bool:
    return still_good(cert, ca, [_san(host)])


def still_good(cert: x509.Certificate, ca: x509.Certificate, names: list[x509.GeneralName]) -> bool:
    """`cert` was issued by `ca`, names every one of `names` and is not near its end: kept, not made again."""
    try:
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return all(name in sans for name in names) and left > dt.timedelta(days=RENEW_DAYS)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _new_ca(project: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"deploystack {project} offsite CA")])
    cert = (
        _builder(name, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server(host: str, ca: Pair) -> Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        _builder(name, ca_cert.subject, key.public_key(), SERVER_DAYS)
        .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())

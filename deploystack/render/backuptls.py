"""TLS between pgBackRest's servers on the database nodes and on the backup service (plan/backups.py): a CA of
the stack's own, one certificate for the nodes and one for the backup service, each usable as server and
client (pgBackRest's TLS servers admit a client by its certificate's common name).

Made once and kept in the output (keys 0600, like .env); a certificate is made again by the same CA only
when it no longer names what it must or nears its end.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploystack.plan.backups import (
    BACKUP_CN,
    BACKUP_TLS,
    CA_CERT,
    CA_KEY,
    MAX_NODES,
    NODE_CN,
    NODE_PREFIX,
    NODE_TLS,
    SERVICE,
)
from deploystack.render.dbtls import (
    SERVER_DAYS,
    Pair,
    _builder,
    _key_pem,
    _new_ca,
    _pem,
    _read_pair,
    still_good,
)
from deploystack.render.sourcetree import FileData


def backup_tls(project: str, kept: Mapping[str, bytes]) -> dict[str, FileData]:
    """The CA and the two certificates for the output, reusing those of `kept` (the output's, by path) when
    still good."""
    ca = _read_pair(kept, CA_CERT, CA_KEY) or _new_ca(f"{project} backups")
    files = {CA_CERT: FileData(_pem(ca[0])), CA_KEY: FileData(_key_pem(ca[1]), 0o600)}
    node_names = [f"{NODE_PREFIX}{n}" for n in range(1, MAX_NODES + 1)]
    for (ca_path, cert_path, key_path), cn, names in ((NODE_TLS, NODE_CN, node_names),
                                                       (BACKUP_TLS, BACKUP_CN, [SERVICE])):
        pair = _read_pair(kept, cert_path, key_path)
        if pair is None or not still_good(pair[0], ca[0], [x509.DNSName(name) for name in names]):
            pair = _issue(cn, names, ca)
        files |= {ca_path: FileData(_pem(ca[0])), cert_path: FileData(_pem(pair[0])),
                  key_path: FileData(_key_pem(pair[1]), 0o600)}
    return files


def _issue(cn: str, names: list[str], ca: Pair) -> Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), SERVER_DAYS)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key

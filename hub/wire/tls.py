"""TLS material for a local deployment, and binding servers with it.

``fraudhub init --data-dir DIR`` (:func:`init_tls`) creates, under ``DIR/tls/``:

- ``ca.pem`` / ``ca.key``: a local certificate authority (ECDSA P-256),
- ``hub.pem`` / ``hub.key`` and ``keyholder-<i>.pem`` / ``keyholder-<i>.key``
  for ``i`` in 1..holders: server certificates for ``localhost``,
  ``127.0.0.1`` and ``::1`` (plus any extra host names), signed by the CA.

Private keys are created with mode 0600 and never overwritten; ``init``
refuses a directory that already holds a CA.  Clients trust ``ca.pem``
(``client_sdk.wire.channels.ChannelSecurity.from_ca_file``).

Servers always use TLS unless started with an explicit ``--insecure``, which
:func:`bind` logs as a WARNING.  (Production deployments bring certificates
from their own PKI; this CA is for development and single-site pilots.)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client_sdk.core.errors import ConfigurationError

__all__ = [
    "CA_VALIDITY",
    "LOOPBACK_NAMES",
    "SERVER_OPTIONS",
    "SERVER_VALIDITY",
    "TlsFiles",
    "bind",
    "init_tls",
    "keyholder_name",
    "load_server_credentials",
    "tls_files",
]

log = logging.getLogger(__name__)

LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CA_VALIDITY = dt.timedelta(days=3 * 365)
SERVER_VALIDITY = dt.timedelta(days=365)
PRIVATE_MODE = 0o600
HUB_NAME = "hub"


def keyholder_name(index: int) -> str:
    """The file stem of key holder ``index``'s certificate."""
    return f"keyholder-{index}"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one server's certificate chain and key, and of the CA."""

    ca: Path
    certificate: Path
    key: Path


def tls_files(data_dir: Path, name: str) -> TlsFiles:
    """Where ``init`` puts the files of server ``name`` (``hub``, ``keyholder-1``...)."""
    tls = data_dir / "tls"
    return TlsFiles(tls / "ca.pem", tls / f"{name}.pem", tls / f"{name}.key")


def _write_private(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # ordered, without duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _make_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fraudhub local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server(
    name: str,
    hosts: Sequence[str],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fraudhub {name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subject_alt_names(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def init_tls(data_dir: Path, holders: int = 3, extra_hosts: Sequence[str] = ()) -> list[Path]:
    """Create the CA and the server certificates; return the files written.

    Raises ConfigurationError if ``DIR/tls/ca.pem`` already exists or
    ``holders`` is not 1..255.
    """
    if not 1 <= holders <= 255:
        raise ConfigurationError("holders must be 1..255")
    tls = data_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_path, ca_key_path = tls / "ca.pem", tls / "ca.key"
    if ca_path.exists():
        raise ConfigurationError(f"{ca_path} exists; this data directory is initialised")
    now = dt.datetime.now(dt.UTC)
    hosts = (*LOOPBACK_NAMES, *extra_hosts)
    ca_key, ca_cert = _make_ca(now)
    _write_private(ca_key_path, _key_pem(ca_key))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    written = [ca_path, ca_key_path]
    for name in (HUB_NAME, *(keyholder_name(i) for i in range(1, holders + 1))):
        files = tls_files(data_dir, name)
        key, cert = _make_server(name, hosts, ca_key, ca_cert, now)
        _write_private(files.key, _key_pem(key))
        files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        written += [files.certificate, files.key]
    return written


def load_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials from a certificate and key; raises ConfigurationError."""
    try:
        certificate = files.certificate.read_bytes()
        key = files.key.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read TLS files ({exc.filename}): {exc.strerror}; run `fraudhub init`"
        ) from None
    return grpc.ssl_server_credentials([(key, certificate)])


#: gRPC options for every fraudhub server.  gRPC sets SO_REUSEPORT by default on
#: Linux, so a second server on a busy port would start and silently share the
#: port's calls with the first; with it off, the second fails to bind.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.so_reuseport", 0),)


def bind(
    server: grpc.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    *,
    insecure: bool = False,
) -> int:
    """Listen on ``address``; return the bound port (useful with port 0).

    TLS with ``credentials``; plaintext only with ``insecure=True`` (logged
    as a WARNING).  Raises ConfigurationError if neither is given or the
    address cannot be bound.
    """
    try:
        if insecure:
            log.warning(
                "serving on %s WITHOUT TLS (--insecure; tokens travel in clear, development only)",
                address,
            )
            port = server.add_insecure_port(address)
        elif credentials is None:
            raise ConfigurationError("TLS credentials are required unless --insecure is given")
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigurationError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise ConfigurationError(f"cannot listen on {address}")
    return port

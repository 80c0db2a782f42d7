"""Each party's own TLS identity, and binding servers with it.

Every server (the hub, each key holder) makes its own identity in its own
directory (:func:`init_identity`; ``fraudhub init`` for the hub, ``fraudhub
keyholder init`` for a holder), under ``DIR/tls/``:

- ``ca.pem``: a certificate authority of this party alone (ECDSA P-256).  Its
  private key signs the one server certificate and is then discarded, so no
  file anywhere can issue a second certificate for this party.  ``ca.pem`` is
  public: the party hands it to the clients that will reach it.
- ``<stem>.pem`` / ``<stem>.key``: the server certificate for the party's
  server name only (``hub.fraudhub.internal``, ``holder-<i>.fraudhub.internal``,
  see ``client_sdk.wire.channels``), plus any extra host names asked for.

Private keys are created with mode 0600 in a 0700 directory and never
overwritten; :func:`init_identity` refuses a directory that already holds an
identity.  A client pins each endpoint separately (its ``ca.pem`` and expected
server name), so a key holder's certificate cannot pass as the hub's and the
TLS handshake fails before any call metadata (a JWT) is sent (ADR 0012).

Servers always use TLS unless started with an explicit ``--insecure``, which
:func:`bind` logs as a WARNING.  (Production deployments may bring certificates
from their own PKI; the clients then pin that PKI's CA per endpoint.)
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
from client_sdk.wire.channels import HUB_SERVER_NAME

__all__ = [
    "CA_VALIDITY",
    "HOLDER_STEM",
    "HUB_STEM",
    "SERVER_OPTIONS",
    "SERVER_VALIDITY",
    "TlsFiles",
    "bind",
    "init_identity",
    "init_tls",
    "load_server_credentials",
    "tls_files",
]

log = logging.getLogger(__name__)

CA_VALIDITY = dt.timedelta(days=3 * 365)
SERVER_VALIDITY = dt.timedelta(days=365)
PRIVATE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
#: File stems of the hub's and a key holder's certificate and key in their ``tls/``.
HUB_STEM = "hub"
HOLDER_STEM = "keyholder"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one server's certificate chain and key, and of the CA."""

    ca: Path
    certificate: Path
    key: Path


def tls_files(data_dir: Path, name: str) -> TlsFiles:
    """Where :func:`init_identity` puts server ``name``'s files (``hub``, ``keyholder``)."""
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


def _make_ca(
    server_name: str, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fraudhub CA of {server_name}")])
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


def init_identity(
    directory: Path, stem: str, server_name: str, extra_hosts: Sequence[str] = ()
) -> list[Path]:
    """Create one party's CA and server certificate under ``directory/tls``.

    Returns the files written (the CA's key is never written).  Raises
    ConfigurationError if ``directory/tls/ca.pem`` already exists.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    tls = directory / "tls"
    tls.mkdir(exist_ok=True, mode=PRIVATE_DIR_MODE)
    # mkdir's mode is masked by the umask and ignored for existing directories.
    tls.chmod(PRIVATE_DIR_MODE)
    files = tls_files(directory, stem)
    if files.ca.exists():
        raise ConfigurationError(f"{files.ca} exists; this directory is initialised")
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _make_ca(server_name, now)
    key, cert = _make_server(server_name, (server_name, *extra_hosts), ca_key, ca_cert, now)
    _write_private(files.key, _key_pem(key))
    files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return [files.ca, files.certificate, files.key]


def init_tls(data_dir: Path, extra_hosts: Sequence[str] = ()) -> list[Path]:
    """The hub's own identity (``fraudhub init``): :func:`init_identity` for the hub."""
    return init_identity(data_dir, HUB_STEM, HUB_SERVER_NAME, extra_hosts)


def load_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials from a certificate and key; raises ConfigurationError."""
    try:
        certificate = files.certificate.read_bytes()
        key = files.key.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read TLS files ({exc.filename}): {exc.strerror}; "
            "run `fraudhub init` (hub) or `fraudhub keyholder init` (key holder)"
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

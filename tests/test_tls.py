"""``fraudhub init`` TLS material (hub.wire.tls) and binding servers."""

from __future__ import annotations

import ipaddress
import logging
import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from client_sdk.core.errors import ConfigurationError
from client_sdk.wire.channels import HUB_SERVER_NAME, holder_server_name
from hub.wire.tls import (
    HOLDER_STEM,
    HUB_STEM,
    SERVER_OPTIONS,
    bind,
    init_identity,
    init_tls,
    load_server_credentials,
    tls_files,
)


def test_init_writes_the_hubs_own_identity_only(tmp_path: Path) -> None:
    written = init_tls(tmp_path, extra_hosts=["hub.example", "127.0.0.1"])
    assert {p.name for p in written} == {"ca.pem", "hub.pem", "hub.key"}
    # No CA key is kept (nothing can issue a second certificate), no holder's key.
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["ca.pem", "hub.key", "hub.pem"]
    assert stat.S_IMODE((tmp_path / "tls" / "hub.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((tmp_path / "tls" / "ca.pem").read_bytes())
    files = tls_files(tmp_path, HUB_STEM)
    cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises if not
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {HUB_SERVER_NAME, "hub.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1")}


def test_every_party_has_its_own_ca_and_name(tmp_path: Path) -> None:
    init_tls(tmp_path / "hub")
    init_identity(tmp_path / "holder-1", HOLDER_STEM, holder_server_name(1))
    hub_ca = x509.load_pem_x509_certificate(tls_files(tmp_path / "hub", HUB_STEM).ca.read_bytes())
    holder = tls_files(tmp_path / "holder-1", HOLDER_STEM)
    cert = x509.load_pem_x509_certificate(holder.certificate.read_bytes())
    with pytest.raises((ValueError, TypeError, InvalidSignature)):
        cert.verify_directly_issued_by(hub_ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["holder-1.fraudhub.internal"]
    assert stat.S_IMODE((tmp_path / "holder-1").stat().st_mode) == 0o700


def test_init_refuses_an_initialised_directory(tmp_path: Path) -> None:
    init_tls(tmp_path)
    with pytest.raises(ConfigurationError, match="initialised"):
        init_tls(tmp_path)


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="fraudhub init"):
        load_server_credentials(tls_files(tmp_path, "hub"))


@pytest.mark.e2e
def test_bind_requires_tls_unless_insecure(caplog: pytest.LogCaptureFixture) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(1))
    try:
        with pytest.raises(ConfigurationError, match="TLS"):
            bind(server, "127.0.0.1:0", None)
        with caplog.at_level(logging.WARNING, logger="hub.wire.tls"):
            port = bind(server, "127.0.0.1:0", None, insecure=True)
        assert port > 0
        assert any("WITHOUT TLS" in r.getMessage() for r in caplog.records)
    finally:
        server.stop(None)


@pytest.mark.e2e
def test_a_busy_port_is_refused_not_shared() -> None:
    first = grpc.server(futures.ThreadPoolExecutor(1), options=SERVER_OPTIONS)
    second = grpc.server(futures.ThreadPoolExecutor(1), options=SERVER_OPTIONS)
    try:
        port = bind(first, "127.0.0.1:0", None, insecure=True)
        first.start()
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind(second, f"127.0.0.1:{port}", None, insecure=True)
    finally:
        first.stop(None)
        second.stop(None)

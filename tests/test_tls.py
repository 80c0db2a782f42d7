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

from client_sdk.core.errors import ConfigurationError
from hub.wire.tls import (
    SERVER_OPTIONS,
    bind,
    init_tls,
    keyholder_name,
    load_server_credentials,
    tls_files,
)


def test_init_writes_a_ca_and_server_certificates(tmp_path: Path) -> None:
    written = init_tls(tmp_path, holders=2, extra_hosts=["hub.example"])
    names = {p.name for p in written}
    assert names == {
        "ca.pem", "ca.key", "hub.pem", "hub.key",
        "keyholder-1.pem", "keyholder-1.key", "keyholder-2.pem", "keyholder-2.key",
    }  # fmt: skip
    for path in written:
        if path.suffix == ".key":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((tmp_path / "tls" / "ca.pem").read_bytes())
    for name in ("hub", keyholder_name(1), keyholder_name(2)):
        files = tls_files(tmp_path, name)
        cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        cert.verify_directly_issued_by(ca)  # raises if not
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "hub.example"}
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        }


def test_init_refuses_an_initialised_directory(tmp_path: Path) -> None:
    init_tls(tmp_path, holders=1)
    with pytest.raises(ConfigurationError, match="initialised"):
        init_tls(tmp_path, holders=1)


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

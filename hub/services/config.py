"""The hub's configuration and its hot-reloadable policy.

:class:`HubConfig` is everything ``fraudhub serve`` needs, with defaults
rooted in one data directory.  :class:`LivePolicy` holds the policy the
servicers decide with; :meth:`LivePolicy.reload` swaps it atomically and only
after the new files validate, so a broken file is refused and the running
policy stays (Admin.ReloadPolicy, ``fraudhub policy reload``, SIGHUP).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client_sdk.core.errors import ConfigurationError
from hub.audit.cosignature import CosignatureVerifier
from hub.infra.resources import shipped
from hub.policy.engine import Policy
from hub.policy.reader import load_policy
from hub.storage.store import sqlite_url

__all__ = [
    "CHECKPOINT_EVERY_EVENTS",
    "CHECKPOINT_EVERY_SECONDS",
    "DEFAULT_LISTEN",
    "HubConfig",
    "LivePolicy",
    "WitnessEndpoint",
    "WitnessIdentity",
    "default_policy",
]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:7443"
#: Default audit checkpoint cadence: sign one every N events or T seconds.
CHECKPOINT_EVERY_EVENTS = 1000
CHECKPOINT_EVERY_SECONDS = 60.0
#: Ask the witnesses again for the current head once its newest cosignature is
#: this old (seconds): half of ``audit verify --max-age``'s default day.
COSIGNATURE_REFRESH_SECONDS = 43_200.0


def default_policy() -> Path:
    """``policies/default.yaml`` where it is installed (source tree or share/fraudhub)."""
    return shipped("policies/default.yaml")


@dataclass(frozen=True)
class WitnessEndpoint:
    """One witness the hub asks: where, which key must cosign, which JWT audience.

    ``ca`` is the CA certificate of its TLS (``None``: the hub's own
    ``tls/ca.pem``, or plaintext when the hub itself runs insecure).
    """

    address: str
    verifier_key: str
    audience: str
    ca: Path | None = None
    server_name: str | None = None

    @classmethod
    def parse(cls, text: str) -> WitnessEndpoint:
        """``HOST:PORT,VKEY,AUDIENCE[,CA_FILE[,SERVER_NAME]]`` (the ``serve --witness``
        syntax; a key holder's own ``tls/ca.pem`` and name, ADR 0012); raises
        ConfigurationError naming what is malformed."""
        parts = [part.strip() for part in text.split(",")]
        if not 3 <= len(parts) <= 5 or not all(parts):
            raise ConfigurationError(
                f"--witness {text!r}: expected HOST:PORT,WITNESS_VKEY,AUDIENCE"
                "[,CA_FILE[,SERVER_NAME]]"
            )
        ca = Path(parts[3]) if len(parts) > 3 else None
        name = parts[4] if len(parts) > 4 else None
        endpoint = cls(parts[0], parts[1], parts[2], ca, name)
        CosignatureVerifier.from_verifier_key(endpoint.verifier_key)
        return endpoint


@dataclass(frozen=True)
class WitnessIdentity:
    """The hub's operator institution: its id and Ed25519 key (PEM)."""

    institution: str
    key: Path


@dataclass(frozen=True)
class HubConfig:
    """Settings of one hub process.

    ``database_url`` ``None`` means the SQLite file in ``data_dir``.
    ``public_key`` is the key ceremony's ``public.json``: the hub's current key
    epoch.  ``previous_epochs`` are earlier epochs it still accepts and matches
    during a key change (ADR 0013; ``serve --accept-epoch``); empty outside one.
    ``insecure`` serves plaintext (development only; the server logs a
    warning); otherwise ``tls_dir`` holds the material written by ``fraudhub init``.
    """

    data_dir: Path
    public_key: Path
    listen: str = DEFAULT_LISTEN
    database_url: str | None = None
    policy_paths: tuple[Path, ...] = field(default_factory=lambda: (default_policy(),))
    tls_dir: Path | None = None
    insecure: bool = False
    max_workers: int = 8
    # Grace period for in-flight RPCs on SIGTERM.
    shutdown_grace: float = 5.0
    # Seconds between deletions of expired indicators.
    expiry_sweep_interval: float = 3600.0
    # A signed audit checkpoint every N events or T seconds, whichever comes first.
    checkpoint_every_events: int = CHECKPOINT_EVERY_EVENTS
    checkpoint_every_seconds: float = CHECKPOINT_EVERY_SECONDS
    # Witnesses asked to cosign each checkpoint (ADR 0010), and who the hub is to them.
    witnesses: tuple[WitnessEndpoint, ...] = ()
    witness_identity: WitnessIdentity | None = None
    # Re-ask witnesses for an unchanged head once its newest cosignature is this old
    # (seconds; at most half the regulators' --max-age).
    cosignature_refresh_seconds: float = COSIGNATURE_REFRESH_SECONDS
    # Earlier OPRF key epochs still accepted (the overlap of a key change, ADR 0013).
    previous_epochs: tuple[int, ...] = ()
    # Prometheus endpoint (hub.wire.metrics): None serves none; 0 any free port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)


class LivePolicy:
    """The current policy, swapped atomically on reload."""

    def __init__(
        self, paths: tuple[Path, ...], on_change: Callable[[Policy], None] | None = None
    ) -> None:
        self._paths = paths
        self._lock = threading.Lock()
        self._policy = load_policy(*map(str, paths))
        # Told of each policy that starts running (the hub records its text).
        self._on_change = on_change

    @property
    def current(self) -> Policy:
        return self._policy

    def reload(self) -> tuple[str, str]:
        """Re-read the files; return ``(new_version, previous_version)``.

        Raises :class:`~client_sdk.core.errors.PolicyError` (file, line, field) if
        they do not validate, or what ``on_change`` raises; the running policy
        is then unchanged.
        """
        with self._lock:
            fresh = load_policy(*map(str, self._paths))
            previous = self._policy.version
            if self._on_change is not None:
                # Before the swap: no decision names a version the hub has not
                # recorded.  If recording fails, the reload fails.
                self._on_change(fresh)
            self._policy = fresh
        log.info("policy reloaded: version %s (was %s)", fresh.version[:12], previous[:12])
        return fresh.version, previous

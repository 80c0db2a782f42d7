"""A complete fraudhub deployment on loopback: hub, ``n`` key holders, institutions.

Used by ``fraudhub demo``, ``fraudhub sandbox``, the end-to-end tests and
``bench/e2e.py``.  Every party has its own directory and TLS identity, as three
separate organisations would (ADR 0012, docs/ONBOARDING.md):

- ``data_dir`` is the hub's: its TLS identity (``fraudhub init``), database,
  audit key, the key it calls witnesses with, and the servers' logs.  It holds
  no key of any key holder.
- ``holders_dir/holder-<i>`` is key holder ``i``'s state directory: its own
  TLS identity (``fraudhub keyholder init``, server name
  ``holder-<i>.fraudhub.internal``), its own registry of admitted institutions
  with their quotas, its quota, token-id and witness files.
  With ``key="deal"`` (the default, fast: test fixtures) a trusted dealer
  writes every share to ``holders_dir/keys``; with ``key="dkg"`` (the demo
  and the sandbox) the holders run the dealerless key generation (ADR 0009),
  each in its own process per round, and each share lands in its holder's
  own directory (``holder-<i>/share-<i>.json``); no process ever holds the
  key.  The public file every holder wrote (they must agree) is copied to
  ``data_dir`` for the hub and to ``client_dir`` for the clients;
  :attr:`LocalDeployment.dkg_stats` has the session fingerprint and each
  holder's CPU and wall time.
- Institution private keys and client configurations go to ``client_dir``;
  a client pins the hub and each holder by that party's own CA and name.
- :meth:`LocalDeployment.register` onboards an institution as the three
  parties do: its key is generated in ``client_dir``, the hub registers it
  (database row and audit event in one transaction, as ``fraudhub institution
  add``), and each holder's operator admits it in that holder's own registry
  (as ``fraudhub keyholder institution add``); holders never read the hub's
  registry.
- :meth:`LocalDeployment.close` stops every server it started (graceful,
  ``grace`` seconds) and is safe to call twice.
- With ``reuse=True`` an existing deployment's TLS material, key shares and
  database are used as they are (``fraudhub sandbox`` restarted on its
  directory); what is missing is created.  Nothing is overwritten either way.
- With ``witnesses=True`` (the default) every key holder also witnesses the
  audit log (``hub.keyholder.witness``; its key in its own directory) and the
  hub asks them to cosign each checkpoint as the operator institution
  ``hub-operator`` (key ``data_dir/witness-client.pem``), which every holder
  admits.  The holders are
  bound before the hub is built, so the hub knows their addresses; a restarted
  holder keeps its port.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.client.config import ClientConfig, HolderConfig
from client_sdk.client.hub import HubClient
from client_sdk.client.tokenizer import HolderEndpoint
from client_sdk.core.errors import ConfigurationError
from client_sdk.core.threshold import KeyShare, PublicKeyInfo
from client_sdk.wire.auth import (
    InstitutionKey,
    generate_key,
    keyholder_audience,
    load_private_key,
    public_key_bytes,
    save_private_key,
)
from client_sdk.wire.channels import HUB_SERVER_NAME, ChannelSecurity, holder_server_name
from hub.audit.cosignature import Cosigner
from hub.keyholder.admission import HolderRegistry, admit, load_admissions
from hub.keyholder.ceremony import deal_to_directory
from hub.keyholder.cli import init_holder
from hub.keyholder.dkg_local import RunStats, run_dkg_locally
from hub.keyholder.keyfiles import PUBLIC_NAME, SHARE_NAME, load_public, load_share
from hub.keyholder.server import KeyHolderServer, KeyHolderServicer, QuotaLedger, SeenTokenFile
from hub.keyholder.witness import (
    WitnessServicer,
    WitnessStateFile,
    default_witness_name,
    load_cosigner,
    open_witness,
)
from hub.services.admin import add_institution_locally
from hub.services.audit import log_signer
from hub.services.config import HubConfig, WitnessEndpoint, WitnessIdentity, default_policy
from hub.services.server import HubServer
from hub.storage.models import Institution, utcnow
from hub.wire.auth import Institution as AdmittedInstitution
from hub.wire.auth import TokenVerifier
from hub.wire.tls import HOLDER_STEM, HUB_STEM, init_tls, load_server_credentials, tls_files

__all__ = ["LOG_FILENAME", "WITNESS_CLIENT", "LocalDeployment", "RunningHolder"]

log = logging.getLogger(__name__)

LOG_FILENAME = "servers.log"
#: The operator institution the hub calls the witnesses as, and its key file.
WITNESS_CLIENT = "hub-operator"
WITNESS_CLIENT_KEY = "witness-client.pem"
#: Each holder's daily quota per institution in a local deployment (load tests need room).
LOCAL_DAILY_QUOTA = 10**9


def holder_dir_name(index: int) -> str:
    """The directory of key holder ``index`` under ``holders_dir``."""
    return f"holder-{index}"


@dataclass
class RunningHolder:
    """A key holder server, its quota ledger, its token-id file and witness state."""

    server: KeyHolderServer
    quota: QuotaLedger
    seen: SeenTokenFile
    witness: WitnessStateFile | None = None

    def stop(self, grace: float) -> None:
        self.server.stop(grace)
        self.quota.close()
        self.seen.close()
        if self.witness is not None:
            self.witness.close()


class LocalDeployment:
    """Hub and key holders on loopback (see the module docstring).

    ``holders_dir`` defaults to ``holders`` next to ``data_dir``.
    ``servicers`` replaces the key holder servicer class per share index
    (fault tests use a lying holder).  Raises ConfigurationError if
    ``data_dir`` or a holder's directory already holds a TLS identity or key
    shares, unless ``reuse`` is set (then they are loaded; ConfigurationError
    if a file of them is missing or unreadable).  ``epoch`` is the key epoch
    dealt for new shares; ``previous_epochs`` the earlier ones the hub still
    accepts (a key change, ADR 0013).
    """

    def __init__(
        self,
        data_dir: Path,
        client_dir: Path,
        *,
        holders_dir: Path | None = None,
        database_url: str | None = None,
        threshold: int = 2,
        holders: int = 3,
        policy_paths: tuple[Path, ...] | None = None,
        servicers: dict[int, type[KeyHolderServicer]] | None = None,
        log_to_file: bool = True,
        grace: float = 1.0,
        reuse: bool = False,
        witnesses: bool = True,
        epoch: int = 1,
        previous_epochs: tuple[int, ...] = (),
        key: Literal["deal", "dkg"] = "deal",
    ) -> None:
        self.data_dir = data_dir
        self.client_dir = client_dir
        self.holders_dir = holders_dir or data_dir.parent / "holders"
        self.grace = grace
        self._servicers = servicers or {}
        data_dir.mkdir(parents=True, exist_ok=True)
        client_dir.mkdir(parents=True, exist_ok=True)
        if not (reuse and tls_files(data_dir, HUB_STEM).ca.exists()):
            init_tls(data_dir)
        self.holder_dirs = {i: self.holders_dir / holder_dir_name(i) for i in range(1, holders + 1)}
        self.dkg_stats: RunStats | None = None
        if key == "dkg":
            public_path = self._generate_by_dkg(threshold, reuse, epoch)
        else:
            public_path = self._prepare_holders(threshold, reuse, epoch)
        self.holders: dict[int, RunningHolder] = {}
        self.holder_ports: dict[int, int] = {}
        self.witness_keys: list[str] = []
        self._witnesses = witnesses
        endpoints: list[WitnessEndpoint] = []
        identity = None
        if witnesses:
            # Bound (not started) now: the hub is configured with their addresses.
            self._log_key = log_signer(data_dir).verifier_key()
            for index in self.shares:
                self._create_holder(index)
                self.witness_keys.append(self._cosigner(index).verifier_key())
                endpoints.append(
                    WitnessEndpoint(
                        f"127.0.0.1:{self.holder_ports[index]}",
                        self.witness_keys[-1],
                        keyholder_audience(index),
                        ca=self._holder_ca(index),
                        server_name=holder_server_name(index),
                    )
                )
            identity = WitnessIdentity(WITNESS_CLIENT, data_dir / WITNESS_CLIENT_KEY)
            if not identity.key.exists():
                save_private_key(generate_key(), identity.key)
        self.hub = HubServer(
            HubConfig(
                data_dir=data_dir,
                public_key=public_path,
                listen="127.0.0.1:0",
                database_url=database_url,
                policy_paths=policy_paths or (default_policy(),),
                max_workers=8,
                shutdown_grace=grace,
                witnesses=tuple(endpoints),
                witness_identity=identity,
                previous_epochs=previous_epochs,
            )
        )
        self.hub.store.migrate()
        if identity is not None:
            with self.hub.store.session() as session:
                known = session.get(Institution, WITNESS_CLIENT) is not None
            if not known:
                self._add(WITNESS_CLIENT, "operator", load_private_key(identity.key), "the hub")
            # Each holder's operator admits the hub's operator, which asks it to cosign.
            self._admit_everywhere(WITNESS_CLIENT, "operator", load_private_key(identity.key))
        # Last, so a constructor that failed above leaves logging as it was.
        self._log_handler: logging.Handler | None = None
        if log_to_file:
            self._log_handler = _log_servers_to(data_dir / "logs" / LOG_FILENAME)
        self.keys: dict[str, InstitutionKey] = {}
        self._clients: list[HubClient] = []
        self._closed = False

    def _prepare_holders(self, threshold: int, reuse: bool, epoch: int) -> Path:
        """Each holder's own identity, and the key shares; return ``public.json``."""
        for index, directory in self.holder_dirs.items():
            if not (reuse and tls_files(directory, HOLDER_STEM).ca.exists()):
                init_holder(directory, holder_server_name(index))
        holders = len(self.holder_dirs)
        keys_dir = self.holders_dir / "keys"
        if reuse and (keys_dir / PUBLIC_NAME).exists():
            public_path = keys_dir / PUBLIC_NAME
            share_paths = [keys_dir / SHARE_NAME.format(index=i) for i in range(1, holders + 1)]
        else:
            share_paths, public_path = deal_to_directory(threshold, holders, keys_dir, epoch=epoch)
        self.public_path = public_path
        self.public: PublicKeyInfo = load_public(public_path)
        self.shares: dict[int, KeyShare] = {}
        for path in share_paths:
            share = load_share(path)
            self.shares[share.index] = share
        return public_path

    def _generate_by_dkg(self, threshold: int, reuse: bool, epoch: int) -> Path:
        """Each holder's identity, then a DKG among them; return the hub's ``public.json``.

        With ``reuse`` and every share already in place, the shares are loaded
        (and a key dealt earlier to ``holders_dir/keys`` is kept).
        Raises ConfigurationError if a holder's share is missing on reuse, a
        holder's directory already has a share without ``reuse``, or the
        holders' public files differ.
        """
        if reuse and (self.holders_dir / "keys" / PUBLIC_NAME).exists():
            return self._prepare_holders(threshold, reuse, epoch)  # a dealt key is kept
        for index, directory in self.holder_dirs.items():
            if not (reuse and tls_files(directory, HOLDER_STEM).ca.exists()):
                init_holder(directory, holder_server_name(index))
        share_paths = {i: d / SHARE_NAME.format(index=i) for i, d in self.holder_dirs.items()}
        existing = [i for i, p in share_paths.items() if p.exists()]
        if existing and not reuse:
            raise ConfigurationError(f"key holders {existing} already have a key share")
        if not existing:
            exchange = self.holders_dir / "dkg-exchange"
            exchange.mkdir(parents=True, exist_ok=reuse)
            self.dkg_stats = run_dkg_locally(
                list(self.holder_dirs.values()),
                threshold,
                len(self.holder_dirs),
                exchange,
                epoch=epoch,
            )
        publics = {(d / PUBLIC_NAME).read_text() for d in self.holder_dirs.values()}
        if len(publics) != 1:
            raise ConfigurationError("the key holders' public files differ")
        text = publics.pop()
        hub_public, client_public = self.data_dir / PUBLIC_NAME, self.client_dir / PUBLIC_NAME
        hub_public.write_text(text)
        client_public.write_text(text)
        self.public_path = client_public
        self.public = load_public(hub_public)
        self.shares = {}
        for index, path in share_paths.items():
            if not path.exists():
                raise ConfigurationError(f"key holder {index} has no key share at {path}")
            self.shares[index] = load_share(path)
        return hub_public

    # --- servers ------------------------------------------------------------------

    def start(self) -> LocalDeployment:
        """Start the hub and every key holder; return self."""
        self.hub.start()
        for index in self.shares:
            if index in self.holders:
                self.holders[index].server.start()
            else:
                self.start_holder(index)
        return self

    @property
    def hub_address(self) -> str:
        return f"127.0.0.1:{self.hub.port}"

    def start_holder(self, index: int) -> None:
        """(Re)start key holder ``index``, on its previous port if it had one."""
        self._create_holder(index)
        self.holders[index].server.start()

    def _cosigner(self, index: int) -> Cosigner:
        return load_cosigner(self.holder_dirs[index], default_witness_name(index))

    def _create_holder(self, index: int) -> None:
        """Build and bind key holder ``index`` (and its witness), not started."""
        share = self.shares[index]
        directory = self.holder_dirs[index]
        witness_state = None
        witness_servicer = None
        if self._witnesses:
            witness, witness_state = open_witness(
                directory, default_witness_name(index), [self._log_key]
            )
            witness_servicer = WitnessServicer(witness)
        registry = HolderRegistry(directory, holder_server_name(index))
        quota = QuotaLedger(
            directory / "quota.sqlite3", LOCAL_DAILY_QUOTA, limits=registry.quota_limits
        )
        seen = SeenTokenFile(directory / "seen-tokens.sqlite3")
        verifier = TokenVerifier(registry, keyholder_audience(index), replay=seen)
        servicer_class = self._servicers.get(index, KeyHolderServicer)
        server = KeyHolderServer.create(
            servicer_class(share, self.public, quota),
            verifier,
            f"127.0.0.1:{self.holder_ports.get(index, 0)}",
            load_server_credentials(tls_files(directory, HOLDER_STEM)),
            max_workers=4,
            witness=witness_servicer,
        )
        self.holders[index] = RunningHolder(server, quota, seen, witness_state)
        self.holder_ports[index] = server.port

    def stop_holder(self, index: int) -> None:
        """Stop key holder ``index`` (its port is kept for :meth:`start_holder`)."""
        running = self.holders.pop(index, None)
        if running is not None:
            running.stop(0)

    # --- institutions and clients ---------------------------------------------------

    def register(
        self,
        institution_id: str,
        role: str,
        name: str = "",
        *,
        admitted_by: Collection[int] | None = None,
    ) -> InstitutionKey:
        """Onboard an institution with a fresh key (private key in ``client_dir``).

        The hub registers it; each holder in ``admitted_by`` (default: all)
        admits it in its own registry.  ``admitted_by=()`` is a registration
        that reaches only the hub (tests of the shadow-institution attack).
        """
        private = generate_key()
        key_path = self.client_dir / f"{institution_id}.pem"
        save_private_key(private, key_path)
        self._add(institution_id, role, private, name)
        self.hub.registry.invalidate()
        chosen = self.holder_dirs if admitted_by is None else admitted_by
        for index in chosen:
            self.admit(index, institution_id, role, public_key_bytes(private), name)
        key = InstitutionKey(institution_id, private)
        self.keys[institution_id] = key
        return key

    def admit(
        self, index: int, institution_id: str, role: str, public_key: bytes, name: str = ""
    ) -> None:
        """Holder ``index``'s operator admits an institution (its own registry, own quota)."""
        institution = AdmittedInstitution(institution_id, name or institution_id, role, public_key)
        admit(self.holder_dirs[index], institution, LOCAL_DAILY_QUOTA, LOCAL_DAILY_QUOTA)

    def _admit_everywhere(
        self, institution_id: str, role: str, private: Ed25519PrivateKey, name: str = ""
    ) -> None:
        """Admit at every holder that has not admitted ``institution_id`` yet (reuse)."""
        for index, directory in self.holder_dirs.items():
            if all(a.institution.id != institution_id for a in load_admissions(directory)):
                self.admit(index, institution_id, role, public_key_bytes(private), name)

    def _add(self, institution_id: str, role: str, private: Ed25519PrivateKey, name: str) -> None:
        row = Institution(
            id=institution_id,
            role=role,
            public_key=public_key_bytes(private),
            display_name=name or institution_id,
            created_at=utcnow(),
        )
        add_institution_locally(self.hub.store, row, "local")

    def enroll(self, institution_id: str, role: str, name: str = "") -> InstitutionKey:
        """Register ``institution_id`` unless it already is, with its key in ``client_dir``.

        A registered institution keeps its key: ``client_dir/<id>.pem`` is
        loaded and must be the registered one.  Raises ConfigurationError if
        the institution is registered with another role or key, or its key
        file is missing.
        """
        with self.hub.store.session() as session:
            row = session.get(Institution, institution_id)
        if row is None:
            return self.register(institution_id, role, name)
        key_path = self.client_dir / f"{institution_id}.pem"
        if not key_path.exists():
            raise ConfigurationError(
                f"{institution_id} is registered but its key {key_path} is missing"
            )
        private = load_private_key(key_path)
        if row.role != role or row.public_key != public_key_bytes(private):
            raise ConfigurationError(
                f"{institution_id} is registered with another role or key than {key_path}"
            )
        self._admit_everywhere(institution_id, role, private, name)
        key = InstitutionKey(institution_id, private)
        self.keys[institution_id] = key
        return key

    @property
    def security(self) -> ChannelSecurity:
        """The hub's pin: its own CA and its server name."""
        return ChannelSecurity.from_ca_file(
            str(tls_files(self.data_dir, HUB_STEM).ca), HUB_SERVER_NAME
        )

    def _holder_ca(self, index: int) -> Path:
        return tls_files(self.holder_dirs[index], HOLDER_STEM).ca

    def holder_security(self, index: int) -> ChannelSecurity:
        """Key holder ``index``'s pin: its own CA and its server name."""
        return ChannelSecurity.from_ca_file(str(self._holder_ca(index)), holder_server_name(index))

    def holder_endpoints(self) -> list[HolderEndpoint]:
        """Each holder's address, pinned to that holder alone."""
        return [
            HolderEndpoint(i, f"127.0.0.1:{p}", security=self.holder_security(i))
            for i, p in sorted(self.holder_ports.items())
        ]

    def client(self, institution_id: str, **options: Any) -> HubClient:
        """A HubClient for a registered institution (closed with the deployment)."""
        client = HubClient.connect(
            self.hub_address,
            self.holder_endpoints(),
            self.public,
            self.keys[institution_id],
            self.security,
            **options,
        )
        self._clients.append(client)
        return client

    def client_config(self, institution_id: str) -> Path:
        """Write ``client_dir/<id>.json`` (for ``fraudhub contribute|match``); return it.

        Paths in it are relative to ``client_dir`` (as :meth:`ClientConfig.load`
        reads them), so the configuration does not depend on the working directory.
        """

        def relative(path: Path) -> Path:
            return Path(os.path.relpath(path.resolve(), self.client_dir.resolve()))

        config = ClientConfig(
            institution=institution_id,
            key=Path(f"{institution_id}.pem"),
            hub=self.hub_address,
            holders=tuple(
                HolderConfig(i, f"127.0.0.1:{port}", relative(self._holder_ca(i)))
                for i, port in sorted(self.holder_ports.items())
            ),
            public=relative(self.public_path),
            ca=relative(tls_files(self.data_dir, HUB_STEM).ca),
        )
        path = self.client_dir / f"{institution_id}.json"
        path.write_text(config.dump() + "\n")
        return path

    # --- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        """Close clients, stop key holders and the hub (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for client in self._clients:
            client.close()
        for index in list(self.holders):
            running = self.holders.pop(index)
            running.stop(self.grace)
        self.hub.stop(self.grace)
        if self._log_handler is not None:
            logger = logging.getLogger("hub")
            logger.removeHandler(self._log_handler)
            logger.propagate = True
            self._log_handler.close()

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _log_servers_to(path: Path) -> logging.Handler:
    """Send the servers' log records (logger ``hub``) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("hub")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    # The servers' records go to their file only, not to the console of the
    # process that happens to host them.
    logger.propagate = False
    return handler

"""An institution's client configuration (a JSON file): where its hub, key holders and key are.

The format ``fraudhub match --config`` and :meth:`HubClient.from_config
<client_sdk.client.hub.HubClient.from_config>` read.  Loading validates every
field and raises :class:`~client_sdk.core.errors.ConfigurationError` naming
the file and what is wrong; nothing else escapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client_sdk.client.tokenizer import HolderEndpoint
from client_sdk.core.errors import ConfigurationError
from client_sdk.wire.channels import HUB_SERVER_NAME, ChannelSecurity, holder_server_name

__all__ = ["ClientConfig", "HolderConfig", "check_separate_pins"]


@dataclass(frozen=True)
class HolderConfig:
    """One key holder in a :class:`ClientConfig`: its address and its own pin."""

    index: int
    address: str
    ca: Path | None = None
    server_name: str | None = None

    def endpoint(self) -> HolderEndpoint:
        """The tokenizer's endpoint, pinned to this holder alone; raises ConfigurationError."""
        security = _pinned(self.ca, self.server_name, holder_server_name(self.index))
        return HolderEndpoint(self.index, self.address, security=security)

    @classmethod
    def from_json(cls, entry: dict[str, Any], base: Path) -> HolderConfig:
        return cls(
            int(entry["index"]),
            str(entry["address"]),
            base / str(entry["ca"]) if entry.get("ca") else None,
            entry.get("server_name"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "address": self.address,
            "ca": str(self.ca) if self.ca else None,
            "server_name": self.server_name,
        }


@dataclass(frozen=True)
class ClientConfig:
    """Where an institution's client finds the hub, the key holders and its key.

    Read from a JSON file (:meth:`load`): ``institution``, ``key`` (PEM
    private key file), ``hub`` (host:port), ``holders`` (list of ``{"index",
    "address", "ca", "server_name"}``), ``public`` (public.json of the OPRF
    key), ``ca`` (the hub's CA file) and optional ``server_name``.  Every
    endpoint is pinned on its own (ADR 0012): the hub by ``ca``, holder ``i``
    by its own ``ca``; with a CA file the expected server name defaults to the
    role's (``hub.fraudhub.internal``, ``holder-<i>.fraudhub.internal``); an
    endpoint without a CA file uses the system roots and its address's host
    name.  During an OPRF key change (ADR 0013) an optional ``previous``
    object names the previous epoch's ``public`` and ``holders`` (entries as
    above): the client then screens, revokes and disputes under both epochs
    and contributes under the current one.  Relative paths are relative to
    the file.
    """

    institution: str
    key: Path
    hub: str
    holders: tuple[HolderConfig, ...]
    public: Path
    ca: Path | None = None
    server_name: str | None = None
    previous_public: Path | None = None
    previous_holders: tuple[HolderConfig, ...] = ()

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        """Parse ``path``; raises ConfigurationError naming the missing or bad field."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"{path}: not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path}: not JSON (line {exc.lineno})") from None
        base = path.parent
        try:
            previous = data.get("previous")
            return cls(
                institution=str(data["institution"]),
                key=base / str(data["key"]),
                hub=str(data["hub"]),
                holders=tuple(HolderConfig.from_json(h, base) for h in data["holders"]),
                public=base / str(data["public"]),
                ca=base / str(data["ca"]) if data.get("ca") else None,
                server_name=data.get("server_name"),
                previous_public=base / str(previous["public"]) if previous else None,
                previous_holders=tuple(
                    HolderConfig.from_json(h, base) for h in (previous or {}).get("holders", ())
                ),
            )
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise ConfigurationError(f"{path}: missing or invalid field {exc}") from None

    def dump(self) -> str:
        """The JSON text :meth:`load` reads (paths as given)."""
        return json.dumps(
            {
                "institution": self.institution,
                "key": str(self.key),
                "hub": self.hub,
                "holders": [h.to_json() for h in self.holders],
                "public": str(self.public),
                "ca": str(self.ca) if self.ca else None,
                "server_name": self.server_name,
            }
            | (
                {}
                if self.previous_public is None
                else {
                    "previous": {
                        "public": str(self.previous_public),
                        "holders": [h.to_json() for h in self.previous_holders],
                    }
                }
            ),
            indent=2,
        )

    def hub_security(self) -> ChannelSecurity:
        """The hub's pin: its CA file and expected name; raises ConfigurationError."""
        return _pinned(self.ca, self.server_name, HUB_SERVER_NAME)


def _pinned(ca: Path | None, server_name: str | None, role_name: str) -> ChannelSecurity:
    if ca is None:
        return ChannelSecurity(server_name=server_name)
    return ChannelSecurity.from_ca_file(str(ca), server_name or role_name)


def check_separate_pins(hub: ChannelSecurity, holders: Sequence[HolderEndpoint]) -> None:
    """Raise ConfigurationError unless every holder has its own pin, apart from the hub's."""
    owners: dict[bytes, str] = {}
    if hub.root_certificates is not None:
        owners[hub.root_certificates] = "the hub"
    for holder in holders:
        ca = holder.security.root_certificates
        if ca is None or holder.security.insecure:
            continue
        other = owners.setdefault(ca, f"key holder {holder.index}")
        if other != f"key holder {holder.index}":
            raise ConfigurationError(
                f"key holder {holder.index} is pinned to the same CA certificate as {other}; "
                "each party has its own CA (ADR 0012): ask that holder's operator for its ca.pem"
            )

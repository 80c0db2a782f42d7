"""An institution's client configuration (a JSON file): where its hub, key holders and key are.

The format ``fraudhub match --config`` and :meth:`HubClient.from_config
<client_sdk.client.hub.HubClient.from_config>` read.  Loading validates every
field and raises :class:`~client_sdk.core.errors.ConfigurationError` naming
the file and what is wrong; nothing else escapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from client_sdk.client.tokenizer import HolderEndpoint
from client_sdk.core.errors import ConfigurationError

__all__ = ["ClientConfig"]


@dataclass(frozen=True)
class ClientConfig:
    """Where an institution's client finds the hub, the key holders and its key.

    Read from a JSON file (:meth:`load`): ``institution``, ``key`` (PEM
    private key file), ``hub`` (host:port), ``holders`` (list of ``{"index",
    "address"}``), ``public`` (public.json of the OPRF key), ``ca`` (CA file;
    omitted means the system roots) and optional ``server_name``.  Relative
    paths are relative to the file.
    """

    institution: str
    key: Path
    hub: str
    holders: tuple[HolderEndpoint, ...]
    public: Path
    ca: Path | None = None
    server_name: str | None = None

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
            return cls(
                institution=str(data["institution"]),
                key=base / str(data["key"]),
                hub=str(data["hub"]),
                holders=tuple(
                    HolderEndpoint(int(h["index"]), str(h["address"])) for h in data["holders"]
                ),
                public=base / str(data["public"]),
                ca=base / str(data["ca"]) if data.get("ca") else None,
                server_name=data.get("server_name"),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigurationError(f"{path}: missing or invalid field {exc}") from None

    def dump(self) -> str:
        """The JSON text :meth:`load` reads (paths as given)."""
        return json.dumps(
            {
                "institution": self.institution,
                "key": str(self.key),
                "hub": self.hub,
                "holders": [{"index": h.index, "address": h.address} for h in self.holders],
                "public": str(self.public),
                "ca": str(self.ca) if self.ca else None,
                "server_name": self.server_name,
            },
            indent=2,
        )

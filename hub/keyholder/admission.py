"""A key holder's own registry: the institutions ITS operator admitted (ADR 0012).

The hub's registry is not trusted by a key holder: a hub operator who lists a
"shadow" institution must not get evaluations from any holder.  Each holder
keeps its registry in its own state directory (``admitted.json``), written
only by its own operator through ``fraudhub keyholder institution ...``.
Guarantees:

- :class:`HolderRegistry` is the holder's :class:`~hub.wire.auth.InstitutionRegistry`.
  An institution it does not list is refused with PermissionDenied, whose
  message says it is not admitted by this holder (the id is not a secret; the
  caller learns where to ask).  The file is re-read when it changes, so an
  admission or a disable takes effect on the next call, without a restart; a
  file that stops parsing keeps the last good registry and logs an error.
- Each entry carries the holder's own ``daily_quota`` (elements per UTC day)
  and ``monthly_quota`` (elements per rolling 30 days) for that institution
  (``hub.keyholder.server.QuotaLedger`` charges against both).  A registry
  written before the 30-day cap existed gets :data:`DEFAULT_MONTHLY_QUOTA`.
  The defaults are deliberately low: at them one admitted institution needs
  decades to enumerate a kind of 1.8e9 values (docs/TRUST.md, "Enumeration").
- The file holds ids, names, roles, public keys and quotas: never a raw value,
  token, element or secret.
- :func:`review_proposal` compares the hub's export (``fraudhub institution
  export``) with this registry: it is a proposal, nothing is admitted until the
  holder's operator imports it with ``--yes`` and the fingerprint of the
  proposal it reviewed (:meth:`Proposal.fingerprint`), and an entry whose key
  or role differs from an admitted one is never imported (it is shown as a
  conflict).
- Writes replace the file atomically (a temporary file renamed over it), so a
  server never reads half a registry.

Raises ConfigurationError for unreadable or invalid files and for admissions
that contradict the registry (a second admission of an id, an unknown id).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, TypeGuard

from client_sdk.core.errors import ConfigurationError, PermissionDenied
from hub.wire.auth import Institution, parse_registry

__all__ = [
    "DEFAULT_DAILY_QUOTA",
    "DEFAULT_MONTHLY_QUOTA",
    "QUOTA_WINDOW_DAYS",
    "REGISTRY_FILENAME",
    "Admission",
    "HolderRegistry",
    "Proposal",
    "QuotaLimits",
    "admit",
    "fingerprint",
    "load_admissions",
    "review_proposal",
    "save_admissions",
    "set_disabled",
    "set_quota",
]

log = logging.getLogger(__name__)

REGISTRY_FILENAME = "admitted.json"
#: A registry changed this recently is re-read on every call (coarse file times).
_RECENT_SECONDS = 5.0
FORMAT = "fraudhub-holder-registry/1"
#: Elements per institution per UTC day at one holder, unless its operator sets
#: another (``keyholder institution add|import-proposal|quota --daily-quota``).
DEFAULT_DAILY_QUOTA = 200_000
#: Elements per institution per rolling :data:`QUOTA_WINDOW_DAYS` at one holder
#: (``--monthly-quota``): bounds sustained use far below 30 full days.
DEFAULT_MONTHLY_QUOTA = 2_000_000
#: The rolling window of the monthly cap: today and the 29 UTC days before it.
QUOTA_WINDOW_DAYS = 30


class QuotaLimits(NamedTuple):
    """What one holder lets one institution evaluate."""

    daily: int
    monthly: int


@dataclass(frozen=True)
class Admission:
    """One institution this holder's operator admitted, with its quotas."""

    institution: Institution
    daily_quota: int
    admitted_at: str
    monthly_quota: int = DEFAULT_MONTHLY_QUOTA

    def __post_init__(self) -> None:
        if self.daily_quota < 1:
            raise ConfigurationError(
                f"institution {self.institution.id}: daily quota must be at least 1 element"
            )
        if self.monthly_quota < 1:
            raise ConfigurationError(
                f"institution {self.institution.id}: 30-day quota must be at least 1 element"
            )

    @property
    def limits(self) -> QuotaLimits:
        return QuotaLimits(self.daily_quota, self.monthly_quota)


def fingerprint(public_key: bytes) -> str:
    """A short SHA-256 fingerprint of a public key, for operators to compare by phone."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(text: str, source: str) -> list[Admission]:
    """Admissions from the registry text; raises ConfigurationError naming the entry."""
    institutions = parse_registry(text, source)
    data = json.loads(text)  # parse_registry proved it is an object with a list
    if data.get("format") != FORMAT:
        raise ConfigurationError(f"{source}: format must be {FORMAT!r}")
    admissions: list[Admission] = []
    for position, (institution, entry) in enumerate(
        zip(institutions, data["institutions"], strict=True)
    ):
        quota = entry.get("daily_quota")
        # Registries written before the 30-day cap get the default one.
        monthly = entry.get("monthly_quota", DEFAULT_MONTHLY_QUOTA)
        admitted_at = entry.get("admitted_at", "")
        if not _whole(quota) or not _whole(monthly):
            name = "daily_quota" if not _whole(quota) else "monthly_quota"
            raise ConfigurationError(
                f"{source}: institutions[{position}].{name}: must be a whole number"
            )
        if not isinstance(admitted_at, str):
            raise ConfigurationError(f"{source}: institutions[{position}].admitted_at: not text")
        try:
            admissions.append(Admission(institution, quota, admitted_at, monthly))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: institutions[{position}]: {exc}") from None
    return admissions


def _dump(admissions: Sequence[Admission]) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "institutions": [
                {
                    "id": a.institution.id,
                    "name": a.institution.name,
                    "role": a.institution.role,
                    "public_key": base64.b64encode(a.institution.public_key).decode("ascii"),
                    "disabled": a.institution.disabled,
                    "daily_quota": a.daily_quota,
                    "monthly_quota": a.monthly_quota,
                    "admitted_at": a.admitted_at,
                }
                for a in sorted(admissions, key=lambda a: a.institution.id)
            ],
        },
        indent=2,
    )


def load_admissions(state_dir: Path) -> list[Admission]:
    """The admissions in ``state_dir``; none if the holder has admitted no one yet."""
    path = state_dir / REGISTRY_FILENAME
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    return _parse(text, str(path))


def save_admissions(state_dir: Path, admissions: Sequence[Admission]) -> Path:
    """Replace ``state_dir``'s registry atomically with ``admissions``; return its path."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / REGISTRY_FILENAME
    fd, temporary = tempfile.mkstemp(dir=state_dir, prefix=".admitted-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(_dump(admissions) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def admit(
    state_dir: Path,
    institution: Institution,
    daily_quota: int,
    monthly_quota: int = DEFAULT_MONTHLY_QUOTA,
) -> Admission:
    """Admit ``institution`` at this holder with its quotas (elements per UTC day and
    per rolling 30 days); raises ConfigurationError if its id is admitted."""
    admissions = load_admissions(state_dir)
    if any(a.institution.id == institution.id for a in admissions):
        raise ConfigurationError(
            f"{institution.id} is already admitted here; disable it and admit a new id "
            "to change its key or role"
        )
    admission = Admission(institution, daily_quota, _now(), monthly_quota)
    save_admissions(state_dir, [*admissions, admission])
    return admission


def _update(
    state_dir: Path, institution_id: str, change: Callable[[Admission], Admission]
) -> Admission:
    admissions = load_admissions(state_dir)
    for position, admission in enumerate(admissions):
        if admission.institution.id == institution_id:
            admissions[position] = updated = change(admission)
            save_admissions(state_dir, admissions)
            return updated
    raise ConfigurationError(f"{institution_id} is not admitted by this key holder")


def set_disabled(state_dir: Path, institution_id: str, disabled: bool) -> Admission:
    """Disable (or re-enable) an admitted institution; raises ConfigurationError if unknown."""
    return _update(
        state_dir,
        institution_id,
        lambda a: replace(a, institution=replace(a.institution, disabled=disabled)),
    )


def set_quota(
    state_dir: Path,
    institution_id: str,
    daily_quota: int | None = None,
    monthly_quota: int | None = None,
) -> Admission:
    """Change an admitted institution's daily and/or 30-day quota (None keeps it);
    raises ConfigurationError if unknown."""

    def change(admission: Admission) -> Admission:
        return replace(
            admission,
            daily_quota=admission.daily_quota if daily_quota is None else daily_quota,
            monthly_quota=admission.monthly_quota if monthly_quota is None else monthly_quota,
        )

    return _update(state_dir, institution_id, change)


# --- the hub's export as a proposal ------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    """What importing the hub's export would do to this holder's registry."""

    new: tuple[Institution, ...]
    conflicts: tuple[tuple[Institution, str], ...]
    unchanged: tuple[str, ...]
    skipped_disabled: tuple[str, ...]

    def fingerprint(self) -> str:
        """A short SHA-256 of exactly what importing would admit (ids, names, roles, keys).

        The review prints it and ``import-proposal --yes`` requires it back, so
        an export changed between the review and the import (by whoever can
        write the file, the hub's operator first) admits nothing.
        """
        material = json.dumps(
            [
                [i.id, i.name, i.role, base64.b64encode(i.public_key).decode("ascii")]
                for i in sorted(self.new, key=lambda i: i.id)
            ],
            separators=(",", ":"),
        )
        return fingerprint(material.encode())


def review_proposal(state_dir: Path, export_text: str, source: str) -> Proposal:
    """Compare the hub's export with this holder's registry (nothing is written).

    New enabled institutions would be admitted; an id admitted with another key
    or role is a conflict (never imported); disabled ones are skipped.  Raises
    ConfigurationError if the export is invalid.
    """
    admitted = {a.institution.id: a.institution for a in load_admissions(state_dir)}
    new: list[Institution] = []
    conflicts: list[tuple[Institution, str]] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    for proposed in parse_registry(export_text, source):
        mine = admitted.get(proposed.id)
        if mine is None and proposed.disabled:
            skipped.append(proposed.id)
        elif mine is None:
            new.append(proposed)
        elif mine.public_key != proposed.public_key:
            conflicts.append((proposed, "its key differs from the one admitted here"))
        elif mine.role != proposed.role:
            conflicts.append((proposed, f"role {proposed.role} differs from {mine.role} here"))
        else:
            unchanged.append(proposed.id)
    return Proposal(
        new=tuple(new),
        conflicts=tuple(conflicts),
        unchanged=tuple(unchanged),
        skipped_disabled=tuple(skipped),
    )


# --- the registry the server reads -------------------------------------------------


class HolderRegistry:
    """The key holder's :class:`~hub.wire.auth.InstitutionRegistry` (module docstring).

    ``holder`` names this holder in refusals (``holder-2.fraudhub.internal``).
    Raises ConfigurationError at construction if the file exists and is invalid.
    """

    def __init__(self, state_dir: Path, holder: str) -> None:
        self._path = state_dir / REGISTRY_FILENAME
        self._holder = holder
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._by_id: dict[str, Admission] = {}
        self._load(strict=True)

    def _load(self, *, strict: bool) -> None:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            # Nobody admitted yet (or the operator removed the file): refuse everyone.
            self._by_id, self._stamp = {}, None
            return
        except OSError as exc:
            if strict:
                raise ConfigurationError(f"cannot read {self._path}: {exc.strerror}") from None
            log.error("holder registry %s unreadable; keeping the last one", self._path)
            return
        # Every write renames a new file over the old one (a new inode), and a
        # file changed in the last few seconds is read again whatever its stamp
        # says, so an edit is seen even within one coarse modification-time tick.
        stamp = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        settled = time.time() - stat.st_mtime > _RECENT_SECONDS
        if stamp == self._stamp and settled:
            return
        try:
            admissions = _parse(self._path.read_text("utf-8"), str(self._path))
        except (OSError, ConfigurationError) as exc:
            if strict:
                raise ConfigurationError(str(exc)) from None
            log.error("holder registry invalid, keeping the last one: %s", exc)
            return
        self._by_id = {a.institution.id: a for a in admissions}
        self._stamp = stamp

    def _admission(self, institution_id: str) -> Admission:
        with self._lock:
            self._load(strict=False)
            admission = self._by_id.get(institution_id)
        if admission is None:
            raise PermissionDenied(
                f"institution {institution_id!r} is not admitted by key holder {self._holder}; "
                "its operator admits institutions (fraudhub keyholder institution add)"
            )
        return admission

    def lookup(self, institution_id: str) -> Institution:
        """The admitted institution; raises PermissionDenied if this holder did not admit it."""
        return self._admission(institution_id).institution

    def daily_quota(self, institution_id: str) -> int:
        """The elements per UTC day this holder allows ``institution_id``.

        Raises PermissionDenied if this holder did not admit it.
        """
        return self._admission(institution_id).daily_quota

    def quota_limits(self, institution_id: str) -> QuotaLimits:
        """The daily and rolling 30-day limits this holder sets for ``institution_id``
        (what :class:`~hub.keyholder.server.QuotaLedger` charges against).

        Raises PermissionDenied if this holder did not admit it.
        """
        return self._admission(institution_id).limits

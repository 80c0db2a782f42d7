"""``fraudhub keyholder institution ...``: a key holder's operator admits institutions.

Every action works on the holder's own state directory (``--state-dir``,
``hub.keyholder.admission``); a running holder picks a change up on its next
call.  ``add`` admits one institution with its public key and this holder's
quotas for it (``--daily-quota`` elements per UTC day, ``--monthly-quota`` per
rolling 30 days; low defaults, docs/TRUST.md "Enumeration");
``disable``/``enable`` and ``quota`` change an admitted one;
``list`` shows them with key fingerprints; ``import-proposal FILE`` shows what
the hub's export (``fraudhub institution export``) would add, with the
fingerprint of that proposal and the quotas each would get (``--daily-quota``,
``--monthly-quota``), and admits those only with ``--yes --reviewed
FINGERPRINT``: an export that changed after the review (whoever can write the
file) admits nothing.  Conflicting entries (another key or role for an id
admitted here) are never imported.  Errors exit 2 with one line
(``hub.cli.main``).
"""

from __future__ import annotations

import argparse
import hmac
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError
from client_sdk.core.vocabulary import ROLES
from hub.infra.argtypes import positive_int, public_key_option
from hub.keyholder.admission import (
    Admission,
    admit,
    fingerprint,
    load_admissions,
    review_proposal,
    set_disabled,
    set_quota,
)
from hub.keyholder.server import DEFAULT_DAILY_QUOTA, DEFAULT_MONTHLY_QUOTA
from hub.wire.auth import Institution

__all__ = ["register_admission_actions"]


def _show(admission: Admission) -> str:
    institution = admission.institution
    status = "disabled" if institution.disabled else "enabled"
    return (
        f"{institution.id:<24} {institution.role:<10} {status:<9} "
        f"{admission.daily_quota:>12} {admission.monthly_quota:>13} "
        f"{fingerprint(institution.public_key)}"
    )


def _cmd_add(args: argparse.Namespace) -> int:
    institution = Institution(
        id=args.id,
        name=args.name or args.id,
        role=args.role,
        public_key=public_key_option(args.public_key, args.public_key_file),
    )
    admission = admit(args.state_dir, institution, args.daily_quota, args.monthly_quota)
    print(f"admitted {institution.id} ({institution.role}) at this key holder")
    print(f"  key fingerprint {fingerprint(institution.public_key)} (the institution reads its own")
    print("  from `fraudhub institution keygen`; compare them over another channel)")
    print(
        f"  daily quota {admission.daily_quota} elements, "
        f"30-day quota {admission.monthly_quota} elements"
    )
    return 0


def _cmd_disable(args: argparse.Namespace) -> int:
    set_disabled(args.state_dir, args.id, True)
    print(f"disabled {args.id} at this key holder")
    return 0


def _cmd_enable(args: argparse.Namespace) -> int:
    set_disabled(args.state_dir, args.id, False)
    print(f"enabled {args.id} at this key holder")
    return 0


def _cmd_quota(args: argparse.Namespace) -> int:
    if args.daily_quota is None and args.monthly_quota is None:
        raise ConfigurationError("give --daily-quota, --monthly-quota or both")
    admission = set_quota(args.state_dir, args.id, args.daily_quota, args.monthly_quota)
    print(
        f"{args.id}: daily quota {admission.daily_quota} elements, 30-day quota "
        f"{admission.monthly_quota} elements at this key holder"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print(
        f"{'id':<24} {'role':<10} {'status':<9} {'daily quota':>12} {'30-day quota':>13} "
        "key fingerprint"
    )
    for admission in load_admissions(args.state_dir):
        print(_show(admission))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    proposal = review_proposal(args.state_dir, text, str(path))
    for institution in proposal.new:
        print(
            f"would admit  {institution.id} ({institution.role}), "
            f"key {fingerprint(institution.public_key)}, daily quota {args.daily_quota}, "
            f"30-day quota {args.monthly_quota}"
        )
    for institution, reason in proposal.conflicts:
        print(f"conflict     {institution.id}: {reason}; not imported")
    for institution_id in proposal.skipped_disabled:
        print(f"skipped      {institution_id}: disabled at the hub")
    for institution_id in proposal.unchanged:
        print(f"unchanged    {institution_id}")
    if not proposal.new:
        print("nothing to admit")
        return 0
    reviewed = proposal.fingerprint()
    if not args.yes:
        print(f"proposal fingerprint {reviewed}")
        print(
            f"{len(proposal.new)} institution(s) NOT admitted: check each key fingerprint "
            f"with the institution itself, then rerun with --yes --reviewed {reviewed}"
        )
        return 0
    if args.reviewed is None or not hmac.compare_digest(args.reviewed.strip(), reviewed):
        # The file may have changed since the operator read it: admit nothing unread.
        raise ConfigurationError(
            f"{path}: --yes needs --reviewed {reviewed} (the fingerprint the review printed); "
            "what it would admit is not what was reviewed, or no review was named: "
            "nothing admitted, run it without --yes and read it again"
        )
    for institution in proposal.new:
        admit(args.state_dir, institution, args.daily_quota, args.monthly_quota)
    print(
        f"admitted {len(proposal.new)} institution(s) at this key holder, each with a daily "
        f"quota of {args.daily_quota} and a 30-day quota of {args.monthly_quota} elements"
    )
    return 0


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="this key holder's state directory"
    )


def _quota(parser: argparse.ArgumentParser, change: bool = False) -> None:
    """``--daily-quota`` and ``--monthly-quota``: defaults to admit with, or (``change``)
    none, so ``quota`` keeps what is not given."""
    parser.add_argument(
        "--daily-quota",
        type=positive_int(),
        default=None if change else DEFAULT_DAILY_QUOTA,
        help="elements per UTC day at this holder"
        + ("" if change else f" (default {DEFAULT_DAILY_QUOTA})"),
    )
    parser.add_argument(
        "--monthly-quota",
        type=positive_int(),
        default=None if change else DEFAULT_MONTHLY_QUOTA,
        help="elements per rolling 30 UTC days at this holder"
        + ("" if change else f" (default {DEFAULT_MONTHLY_QUOTA})"),
    )


def register_admission_actions(actions: Any) -> None:
    """Add ``institution {add,disable,enable,quota,list,import-proposal}`` to ``keyholder``."""
    group = actions.add_parser("institution", help="the institutions this key holder admits")
    sub = group.add_subparsers(dest="admission_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="admit an institution at this key holder")
    _state_dir(add)
    add.add_argument("--id", required=True, help="1..64 characters of [a-z0-9._-]")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", help="display name")
    add.add_argument("--public-key", default="", help="base64 Ed25519 public key (keygen)")
    add.add_argument("--public-key-file", type=Path, help="the <key>.pub file of keygen")
    _quota(add)
    add.set_defaults(func=_cmd_add)

    for name, func, text in (
        ("disable", _cmd_disable, "refuse every later evaluation for an institution"),
        ("enable", _cmd_enable, "accept a disabled institution again"),
    ):
        action = sub.add_parser(name, help=text)
        _state_dir(action)
        action.add_argument("--id", required=True)
        action.set_defaults(func=func)

    quota = sub.add_parser("quota", help="set an admitted institution's daily and 30-day quotas")
    _state_dir(quota)
    quota.add_argument("--id", required=True)
    _quota(quota, change=True)
    quota.set_defaults(func=_cmd_quota)

    listing = sub.add_parser("list", help="list the institutions admitted here")
    _state_dir(listing)
    listing.set_defaults(func=_cmd_list)

    proposal = sub.add_parser(
        "import-proposal", help="review the hub's export; admit its new entries with --yes"
    )
    _state_dir(proposal)
    proposal.add_argument("file", type=Path, help="the hub's `fraudhub institution export`")
    proposal.add_argument(
        "--yes", action="store_true", help="admit the new institutions shown (after checking)"
    )
    proposal.add_argument(
        "--reviewed",
        metavar="FINGERPRINT",
        help="with --yes: the proposal fingerprint the review printed; a proposal that "
        "changed since is refused",
    )
    _quota(proposal)
    proposal.set_defaults(func=_cmd_import)

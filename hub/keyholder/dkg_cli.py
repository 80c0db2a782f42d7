"""``fraudhub keys dkg`` and ``fraudhub keys refresh``: one holder's side of a DKG round.

Each holder's operator runs, against the holder's own state dir and the
shared exchange directory, ``init`` once and then every round in
``hub.keyholder.dkg_files.ROUNDS`` order, waiting between rounds until every
participant has written its file for the previous one.  ``refresh`` is the
same protocol dealing the old shares of the same key (new shares, same key,
same tokens), to the same or to a changed holder set.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client_sdk.core.errors import ConfigurationError, FraudhubError
from client_sdk.core.threshold import MAX_HOLDERS, check_params
from hub.infra.argtypes import deprecated_alias, positive_int
from hub.keyholder.dkg_files import ROUNDS, init_participant, run_round
from hub.keyholder.keyfiles import load_public, load_share

__all__ = ["main", "register"]

_holders = positive_int(MAX_HOLDERS)


def _cmd_init(args: argparse.Namespace) -> int:
    refresh = args.keys_command == "refresh"
    if refresh and args.old_public is None:
        raise ConfigurationError("refresh needs --old-public")
    old_public = load_public(args.old_public) if refresh else None
    old_share = load_share(args.old_share) if refresh and args.old_share else None
    identity = init_participant(
        args.state,
        args.exchange,
        args.name,
        index=args.index,
        old_share=old_share,
        old_public=old_public,
    )
    print(
        f"participant {identity.name}: old index {identity.dealer}, new index "
        f"{identity.recipient}; signing key {identity.signing_key.hex()[:16]}... "
        "(confirm it with the other operators before the deal round)"
    )
    return 0


def _cmd_round(args: argparse.Namespace) -> int:
    if args.round == "deal" and args.keys_command == "dkg" and args.threshold > args.holders:
        raise ConfigurationError("--threshold cannot exceed --holders")
    if args.round == "deal" and args.keys_command == "dkg":
        check_params(args.threshold, args.holders)  # refuses 1-of-n, n > 1
    result = run_round(
        args.round,
        args.state,
        args.exchange,
        threshold=args.threshold,
        holders=args.holders,
        epoch=args.epoch,
        out=args.out,
    )
    print(f"round {result.round} done (session {result.session_fingerprint})")
    for index, why in sorted(result.disqualified.items()):
        print(f"  disqualified: participant {index}: {why}")
    if result.share_file is not None:
        print(f"  share  {result.share_file}  (mode 0600; check with 'fraudhub keys check')")
        print(f"  public {result.public_file}")
    return 0


def register(ksub: Any) -> None:
    """Add ``dkg`` and ``refresh`` under the ``keys`` command."""
    helps = {
        "dkg": "distributed key generation: no party ever holds the key",
        "refresh": "new shares of the same key (proactive refresh or re-share to new holders)",
    }
    for command, text in helps.items():
        parser = ksub.add_parser(command, help=text)
        actions = parser.add_subparsers(dest="dkg_action", metavar="STEP", required=True)
        init = actions.add_parser("init", help="create this holder's DKG identity")
        init.add_argument("--name", required=True, help="participant name, e.g. holder-1")
        init.add_argument("--index", type=_holders, help="this holder's index in the new sharing")
        if command == "refresh":
            init.add_argument("--old-public", type=Path, required=True)
            init.add_argument("--old-share", type=Path, help="this holder's current share")
        else:
            init.set_defaults(old_public=None, old_share=None)
        rnd = actions.add_parser("round", help="run one round for this holder")
        rnd.add_argument("round", choices=ROUNDS)
        rnd.add_argument("--threshold", "-t", type=_holders, default=0)
        rnd.add_argument("--holders", "-n", type=_holders, default=0)
        rnd.add_argument("--epoch", type=positive_int(), default=1)
        rnd.add_argument("--out", type=Path, help="where finish writes the files (default: state)")
        for sub, func in ((init, _cmd_init), (rnd, _cmd_round)):
            state = sub.add_mutually_exclusive_group(required=True)
            state.add_argument(
                "--state-dir", dest="state", type=Path, metavar="DIR", help="this holder's state"
            )
            deprecated_alias(state, "--state", "--state-dir", dest="state", type=Path)
            sub.add_argument("--exchange", type=Path, required=True, help="shared directory")
            sub.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hub.keyholder.dkg_cli dkg|refresh ...``: the same commands as
    ``fraudhub keys dkg|refresh`` without loading the hub's other command groups
    (a round is a short process; the DKG driver starts one per holder per round).
    """
    parser = argparse.ArgumentParser(prog="fraudhub keys")
    sub = parser.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except FraudhubError as exc:
        print(f"fraudhub keys {args.keys_command}: error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())

"""``fraudhub keys dkg|refresh`` with every holder in its own process, then real holders.

Finding 3 of issue 10 (a trusted dealer sees the whole key): here no process
ever holds ``k``; the test alone interpolates it from the shares to compare.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from _keyholders import World, make_world, running_holders

from client_sdk.client.tokenizer import Tokenizer
from client_sdk.core import _sodium as sodium
from client_sdk.core import oprf, threshold
from client_sdk.core.threshold import KeyShare, PublicKeyInfo
from client_sdk.core.tokens import TokenKeys, derive_token_keys, oprf_input
from hub.cli import main as fraudhub
from hub.keyholder.dkg_local import Participant, run_dkg_locally, run_refresh_locally
from hub.keyholder.keyfiles import load_public, load_share

pytestmark = pytest.mark.e2e

ITEMS = [("phone", "+8613800138000"), ("bank_account", "ICBC:6222020200112233")]


def combined_key(shares: list[KeyShare]) -> bytes:
    """Test-only Lagrange interpolation of ``k`` (no fraudhub process ever does this)."""
    idx = [s.index for s in shares]
    k = sodium.scalar_from_int(0)
    for s in shares:
        k = sodium.scalar_add(
            k, sodium.scalar_mul(threshold.lagrange_at_zero(idx, s.index), s.secret)
        )
    return k


def expected(k: bytes) -> list[TokenKeys]:
    return [derive_token_keys(oprf.evaluate(k, oprf_input(*i), oprf.Mode.VOPRF)) for i in ITEMS]


def load(dirs: list[Path]) -> tuple[list[KeyShare], PublicKeyInfo]:
    shares = [load_share(d / f"share-{i}.json") for i, d in enumerate(dirs, start=1)]
    publics = {(d / "public.json").read_text() for d in dirs}
    assert len(publics) == 1  # every holder wrote the same public file
    return shares, load_public(dirs[0] / "public.json")


def tokens_from_holders(world: World, state: Path) -> list[TokenKeys]:
    with running_holders(world, state) as servers:
        endpoints = [world.endpoint(i, s.port) for i, s in sorted(servers.items())]
        with Tokenizer(endpoints, world.public, world.keys["bank-a"], timeout=10) as tokenizer:
            return tokenizer.tokenize(ITEMS)


def test_dkg_refresh_and_reshare_in_separate_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = [tmp_path / f"holder-{i}" for i in (1, 2, 3)]
    stats = run_dkg_locally(dirs, 2, 3, tmp_path / "exchange")
    assert set(stats.cpu_seconds) == {"holder-1", "holder-2", "holder-3"}
    shares, public = load(dirs)
    for i, d in enumerate(dirs, start=1):
        assert fraudhub(["keys", "check", str(d / f"share-{i}.json"), str(d / "public.json")]) == 0
    assert "ok: share 3 of a 2-of-3 key, epoch 1" in capsys.readouterr().out
    k = combined_key(shares[:2])
    assert public.group_public_key == sodium.scalarmult_base(k)

    # Real 2-of-3 key holders on loopback evaluate with the DKG shares.
    world = dataclasses.replace(make_world(tmp_path / "world"), shares=shares, public=public)
    assert tokens_from_holders(world, tmp_path / "run1") == expected(k)

    # Proactive refresh, same holders: new shares, same key, same tokens.
    new_dirs = [tmp_path / f"refreshed-{i}" for i in (1, 2, 3)]
    run_refresh_locally(
        [Participant(new_dirs[i - 1], i, dirs[i - 1] / f"share-{i}.json") for i in (1, 2, 3)],
        2,
        3,
        dirs[0] / "public.json",
        tmp_path / "exchange-refresh",
    )
    new_shares, new_public = load(new_dirs)
    assert new_public.group_public_key == public.group_public_key
    assert all(a.secret != b.secret for a, b in zip(shares, new_shares, strict=True))
    refreshed = dataclasses.replace(world, shares=new_shares, public=new_public)
    assert tokens_from_holders(refreshed, tmp_path / "run2") == expected(k)
    # An old share is useless with the new ones: it fails the check, and its
    # evaluation mixed with a new share gives a different, wrong output.
    assert (
        fraudhub(["keys", "check", str(dirs[0] / "share-1.json"), str(new_dirs[0] / "public.json")])
        == 2
    )
    mixed = combined_key([shares[0], new_shares[1]])
    assert oprf.evaluate(mixed, b"x", oprf.Mode.VOPRF) != oprf.evaluate(k, b"x", oprf.Mode.VOPRF)

    # Re-share 2-of-3 -> 3-of-4 (holder 4 is new, has no old share).
    reshared = [tmp_path / f"reshared-{i}" for i in (1, 2, 3, 4)]
    run_refresh_locally(
        [
            *(
                Participant(reshared[i - 1], i, new_dirs[i - 1] / f"share-{i}.json")
                for i in (1, 2, 3)
            ),
            Participant(reshared[3], 4),
        ],
        3,
        4,
        new_dirs[0] / "public.json",
        tmp_path / "exchange-reshare",
    )
    four, four_public = load(reshared)
    assert (four_public.threshold, four_public.holders, four_public.epoch) == (3, 4, 1)
    assert four_public.group_public_key == public.group_public_key
    assert combined_key(four[1:]) == k and combined_key(four[:2] + four[3:]) == k
    # Two of three shares of a 3-of-4 key do not give k.
    assert combined_key(four[:2]) != k

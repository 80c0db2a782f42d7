"""Findings of the second security review of the trust model (branch review-2).

Each test reproduces one way the promises of docs/TRUST.md still failed, and
failed before its fix:

- S3: a :class:`Tokenizer` used on its own (not through ``HubClient.connect``)
  reached a holder without a pin of its own under the shared pin it was given
  (the hub's, in practice), so whoever held that certificate could pose as the
  holder and collect holder JWTs, each good for one evaluation at the real
  holder;
- S4: ``keys deal -t 1 -n 3`` (and a 1-of-n DKG) gave every holder the whole
  OPRF key ``k``: with a degree-0 polynomial each share equals ``k``, so any
  one holder alone could tokenize values of its choice.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from client_sdk.client.tokenizer import HolderEndpoint, Tokenizer
from client_sdk.core import dkg, threshold
from client_sdk.core.errors import ConfigurationError
from hub.cli import main
from hub.keyholder import dkg_cli
from hub.keyholder.dkg_files import init_participant

# --- S3 -------------------------------------------------------------------------


def test_s3_a_tokenizer_has_no_shared_pin_to_fall_back_on() -> None:
    # Before: Tokenizer(holders, public, key, security) used ``security`` for
    # every holder whose endpoint had no pin of its own.
    assert "security" not in inspect.signature(Tokenizer).parameters


def test_s3_a_holder_endpoint_without_its_own_pin_cannot_be_made() -> None:
    with pytest.raises(TypeError, match="security"):
        HolderEndpoint(2, "127.0.0.1:7502")  # type: ignore[call-arg]
    # Untyped callers passing None get the reason, before any channel exists.
    with pytest.raises(ConfigurationError, match="key holder 2 has no TLS pin of its own"):
        HolderEndpoint(2, "127.0.0.1:7502", security=None)  # type: ignore[arg-type]


# --- S4 -------------------------------------------------------------------------


@pytest.mark.parametrize("holders", [2, 3, 255])
def test_s4_threshold_one_with_several_holders_is_refused(holders: int) -> None:
    with pytest.raises(ConfigurationError, match="gives every holder the whole key"):
        threshold.deal(1, holders)
    with pytest.raises(ConfigurationError, match="gives every holder the whole key"):
        dkg.Session(threshold=1, holders=holders, epoch=1, dealers=tuple(range(1, holders + 1)))
    # A single holder holding k is the plain (non-threshold) VOPRF: still allowed.
    shares, _ = threshold.deal(1, 1)
    assert len(shares) == 1


def test_s4_the_share_of_a_one_of_n_key_was_the_key_itself() -> None:
    """Why: every share of a 1-of-n sharing is f(i) = k (what the refusal prevents)."""
    shares, public = threshold.deal(2, 3)
    assert len({s.secret for s in shares}) == 3
    assert public.threshold == 2


def test_s4_keys_deal_refuses_one_of_n_before_writing_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "deal", "-t", "1", "-n", "3", "--out", str(out)]) == 2
    assert "threshold 1 of 3 holders gives every holder the whole key" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_s4_keys_dkg_refuses_one_of_n_at_the_deal_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    state = tmp_path / "holder-1"
    init_participant(state, exchange, "holder-1", index=1)
    argv = ["dkg", "round", "deal", "--state", str(state), "--exchange", str(exchange)]
    assert dkg_cli.main([*argv, "-t", "1", "-n", "2"]) == 2
    assert "threshold 1 of 2 holders gives every holder the whole key" in capsys.readouterr().err

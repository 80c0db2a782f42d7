"""An OPRF key change with an overlap (ADR 0013, issue 12 item 6), end to end.

Two deployments share one hub database: the old one (key epoch 1) and the new
one (epoch 2, its hub still accepting epoch 1, its own key holders), as after
an operator deals a new key and restarts the hub with ``--accept-epoch 1``.
Before this change a new epoch silently stopped every old token from matching.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from client_sdk import HubClient, Indicator
from client_sdk.client.config import ClientConfig
from client_sdk.client.results import ItemFailure, MatchResult
from hub.devtools.deployment import LocalDeployment

pytestmark = pytest.mark.e2e

REPORT = "fraud_reporting"
PAYMENT = "payment_screening"
OLD_VALUE, NEW_VALUE, DISPUTED = "+86 136 0000 1001", "+86 136 0000 1002", "+86 136 0000 1003"


@pytest.fixture
def key_change(
    tmp_path: Path, database_url: str
) -> Iterator[tuple[LocalDeployment, LocalDeployment]]:
    clients = tmp_path / "clients"

    def small(name: str, epoch: int, previous: tuple[int, ...]) -> LocalDeployment:
        """One hub and one key holder of ``epoch`` on the shared database."""
        return LocalDeployment(
            tmp_path / name,
            clients,
            holders_dir=tmp_path / f"{name}-holders",
            database_url=database_url,
            threshold=1,
            holders=1,
            witnesses=False,
            log_to_file=False,
            grace=0.1,
            epoch=epoch,
            previous_epochs=previous,
        )

    with small("old", 1, ()) as old:
        old.start()
        for institution in ("bank-a", "bank-b"):
            old.register(institution, "bank")
        with small("new", 2, (1,)) as new:
            new.start()
            for institution in ("bank-a", "bank-b"):
                new.enroll(institution, "bank")
            yield old, new


def overlap_client(old: LocalDeployment, new: LocalDeployment, institution: str) -> HubClient:
    """A client of the new epoch that also screens under the previous one."""
    previous = HubClient.connect(
        new.hub_address, old.holder_endpoints(), old.public, new.keys[institution], new.security
    )
    return new.client(institution, previous=previous)


def only(results: list[MatchResult | ItemFailure]) -> MatchResult | ItemFailure:
    [result] = results
    return result


def test_the_hub_matches_both_epochs_while_institutions_recontribute(
    key_change: tuple[LocalDeployment, LocalDeployment], tmp_path: Path
) -> None:
    old, new = key_change
    assert (old.public.epoch, new.public.epoch) == (1, 2)
    assert new.hub.accepted_epochs == (2, 1) and old.hub.accepted_epochs == (1,)
    old.client("bank-a").contribute(
        [Indicator("phone", v, "scam_phone", 80) for v in (OLD_VALUE, DISPUTED)], purpose=REPORT
    )
    # An institution still on the old key keeps working against the new hub.
    stale = HubClient.connect(
        new.hub_address, old.holder_endpoints(), old.public, new.keys["bank-a"], new.security
    )
    with stale:
        stale.contribute([Indicator("phone", NEW_VALUE, "scam_phone", 80)], purpose=REPORT)
        assert isinstance(only(stale.match([("phone", OLD_VALUE)], purpose=PAYMENT)), MatchResult)

    # A client on the new key alone no longer sees the old contributions (the old behaviour) ...
    new_only = only(new.client("bank-b").match([("phone", OLD_VALUE)], purpose=PAYMENT))
    assert isinstance(new_only, MatchResult) and not new_only.matched
    # ... one screening under both epochs does, with one answer per value: a client
    # file naming the previous epoch's public key and holders (README "keys").
    before = ClientConfig.load(old.client_config("bank-b"))
    plain = ClientConfig.load(new.client_config("bank-b"))
    config = replace(plain, previous_public=before.public, previous_holders=before.holders)
    path = tmp_path / "bank-b-overlap.json"
    path.write_text(config.dump())
    assert ClientConfig.load(path) == config
    both = HubClient.from_config(ClientConfig.load(path))
    results = both.match([("phone", OLD_VALUE), ("phone", "+86 136 0000 1999")], purpose=PAYMENT)
    assert [r.matched for r in results if isinstance(r, MatchResult)] == [True, False]
    first = results[0]
    assert isinstance(first, MatchResult) and (first.index, first.contributors) == (0, 1)

    # bank-a re-contributes under the new key: the new-epoch client finds it, and the
    # overlap client counts bank-a once although it is listed under both epochs.
    new.client("bank-a").contribute(
        [Indicator("phone", OLD_VALUE, "scam_phone", 90)], purpose=REPORT
    )
    recontributed = only(new.client("bank-b").match([("phone", OLD_VALUE)], purpose=PAYMENT))
    assert isinstance(recontributed, MatchResult) and recontributed.matched
    combined = only(both.match([("phone", OLD_VALUE)], purpose=PAYMENT))
    assert isinstance(combined, MatchResult) and combined.contributors == 1
    assert combined.max_confidence == 90
    both.close()

    # Disputes and revocations reach every epoch's listing of a value.
    opened = overlap_client(old, new, "bank-b").disputes.open(
        "phone", DISPUTED, case_reference="DSR-E1"
    )
    assert opened.suspended == 1
    revoked = overlap_client(old, new, "bank-a").revoke([("phone", OLD_VALUE)], reason="duplicate")
    assert (revoked.revoked, revoked.not_found) == (2, 0)

    # The old hub does not accept the new epoch: an item error, not a silent "no match".
    with HubClient.connect(
        old.hub_address, new.holder_endpoints(), new.public, new.keys["bank-b"], old.security
    ) as wrong_hub:
        [error] = wrong_hub.match([("phone", NEW_VALUE)], purpose=PAYMENT)
    assert isinstance(error, ItemFailure) and "key epoch 2, hub is at 1" in error.reason

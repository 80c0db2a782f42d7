"""LocalDeployment(key="dkg"): the holders make the key; each share stays with its holder."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_sdk.client.results import MatchResult
from client_sdk.core.errors import ConfigurationError
from hub.devtools.deployment import LocalDeployment
from hub.keyholder.keyfiles import PUBLIC_NAME

pytestmark = pytest.mark.e2e  # the DKG runs each holder's rounds as subprocesses


def test_dkg_deployment_matches_and_keeps_each_share_with_its_holder(tmp_path: Path) -> None:
    hub_dir, clients = tmp_path / "hub", tmp_path / "clients"
    with LocalDeployment(hub_dir, clients, log_to_file=False, grace=0.2, key="dkg") as world:
        stats = world.dkg_stats
        assert stats is not None and len(stats.session_fingerprint) == 16
        assert sorted(stats.cpu_seconds) == ["holder-1", "holder-2", "holder-3"]
        assert all(seconds > 0 for seconds in stats.cpu_seconds.values())
        public = world.public
        world.start()
        world.register("bank-a", "bank")
        world.register("carrier-c", "carrier")
        examples = Path(__file__).resolve().parent.parent / "examples"
        summary = world.client("bank-a").contribute_csv(
            examples / "bank_a.csv", purpose="fraud_reporting", progress=False
        )
        assert summary.stored == summary.rows > 0
        [result] = world.client("carrier-c").match(
            [("phone", "13800138000")], purpose="sim_activation_screening"
        )
        assert isinstance(result, MatchResult) and result.matched
    # Share i is in holder i's directory and nowhere else; the hub and the
    # clients have the public file only.
    holders_dir = tmp_path / "holders"
    shares = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("share-*.json"))
    assert shares == [f"holders/holder-{i}/share-{i}.json" for i in (1, 2, 3)]
    assert not (holders_dir / "keys").exists()
    assert (hub_dir / PUBLIC_NAME).read_text() == (clients / PUBLIC_NAME).read_text()

    # Without reuse the existing deployment is refused; with it the shares are
    # loaded and no new DKG runs.
    with pytest.raises(ConfigurationError, match="initialised"):
        LocalDeployment(hub_dir, clients, log_to_file=False, key="dkg")
    with LocalDeployment(
        hub_dir, clients, log_to_file=False, grace=0.2, key="dkg", reuse=True
    ) as again:
        assert again.dkg_stats is None and again.public == public

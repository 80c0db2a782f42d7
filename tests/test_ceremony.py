"""`fraudhub keys deal|check`: files, permissions, and refusal of mismatches."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client_sdk.core import oprf, threshold
from client_sdk.core.errors import ConfigurationError
from client_sdk.core.threshold import KeyShare, PublicKeyInfo, deal
from hub.cli import main
from hub.keyholder import ceremony, keyfiles


def test_deal_writes_private_shares_and_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "deal", "--threshold", "2", "--holders", "3", "--out", str(out)]) == 0
    shares = sorted(out.glob("share-*.json"))
    assert [p.name for p in shares] == ["share-1.json", "share-2.json", "share-3.json"]
    for p in shares:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    public = keyfiles.load_public(out / "public.json")
    loaded = [keyfiles.load_share(p) for p in shares]
    for s in loaded:
        keyfiles.check_share(s, public)
    # The dealt shares work: any two combine to the same token.
    batch = threshold.blind_batch([b"x"])
    r = [threshold.holder_evaluate(s, batch.blinded_elements) for s in loaded]
    assert threshold.combine(public, batch, r[:2]) == threshold.combine(public, batch, r[1:])
    printed = capsys.readouterr().out
    for s in loaded:
        assert s.secret.hex() not in printed
    assert main(["keys", "check", str(shares[0]), str(out / "public.json")]) == 0


def test_deal_never_overwrites(tmp_path: Path) -> None:
    ceremony.deal_to_directory(1, 1, tmp_path)
    assert main(["keys", "deal", "-t", "1", "-n", "1", "--out", str(tmp_path)]) == 2


def test_check_refuses_a_share_from_another_ceremony(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = ceremony.deal_to_directory(2, 3, tmp_path / "a")
    _, pub_b = ceremony.deal_to_directory(2, 3, tmp_path / "b")
    assert main(["keys", "check", str(a[0]), str(pub_b)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_world_readable_share_is_refused(tmp_path: Path) -> None:
    paths, _ = ceremony.deal_to_directory(2, 2, tmp_path)
    paths[0].chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        keyfiles.load_share(paths[0])


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "deal", "-t", "3", "-n", "2", "--out", "x"],
    ],
)
def test_threshold_above_holders_is_refused(argv: list[str], tmp_path: Path) -> None:
    argv[-1] = str(tmp_path / "x")
    assert main(argv) == 2


@pytest.mark.parametrize("value", ["0", "-1", "abc", "256"])
def test_cli_validates_numbers(value: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys", "deal", "-t", value, "-n", "3", "--out", str(tmp_path)])
    assert info.value.code == 2


def test_public_file_is_plain_json_without_secrets(tmp_path: Path) -> None:
    paths, pub = ceremony.deal_to_directory(2, 3, tmp_path)
    data = json.loads(pub.read_text())
    assert data["suite"] == oprf.SUITE and data["threshold"] == 2
    for p in paths:
        secret = json.loads(p.read_text())["secret_share"]
        assert secret not in pub.read_text()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("index", "1", "index must be a whole number"),
        ("index", True, "index must be a whole number"),
        ("epoch", 1.0, "epoch must be a whole number"),
        ("secret_share", 7, "secret_share must be a hex string"),
        ("secret_share", "zz", "secret_share must be a hex string"),
    ],
)
def test_share_file_fields_are_typed(field: str, value: object, message: str) -> None:
    share = deal(2, 3)[0][0]
    data = json.loads(share.to_json())
    data[field] = value
    with pytest.raises(ConfigurationError, match=message):
        KeyShare.from_json(json.dumps(data))


def test_public_file_fields_are_typed() -> None:
    public = deal(2, 3)[1]
    data = json.loads(public.to_json())
    data["public_shares"] = {"one": data["public_shares"]["1"]}
    with pytest.raises(ConfigurationError, match="public_shares must map holder numbers"):
        PublicKeyInfo.from_json(json.dumps(data))
    data = json.loads(public.to_json())
    data["threshold"] = "2"
    with pytest.raises(ConfigurationError, match="threshold must be a whole number"):
        PublicKeyInfo.from_json(json.dumps(data))


def test_a_failed_deal_leaves_nothing_behind(tmp_path: Path) -> None:
    # A share file of another ceremony already sits where holder 2's would go.
    (tmp_path / "share-2.json").write_text("{}")
    with pytest.raises(ConfigurationError, match=r"share-2\.json already exists"):
        ceremony.deal_to_directory(2, 3, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["share-2.json"]
    shares, public = ceremony.deal_to_directory(2, 3, tmp_path / "fresh")
    assert [p.name for p in shares] == ["share-1.json", "share-2.json", "share-3.json"]
    assert public.name == "public.json" and (shares[0].stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == [
        "public.json",
        "share-1.json",
        "share-2.json",
        "share-3.json",
    ]


def test_deal_copies_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(_source: object, _target: object) -> None:
        raise PermissionError("operation not permitted")  # vfat, exFAT

    monkeypatch.setattr("hub.keyholder.ceremony.os.link", no_links)
    shares, public = ceremony.deal_to_directory(2, 3, tmp_path)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in shares)
    assert keyfiles.load_public(public).threshold == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "public.json",
        "share-1.json",
        "share-2.json",
        "share-3.json",
    ]

"""Bulk jobs without a hub (issue 13): every row accounted for, CSV as exported, resume.

The job machinery (``client_sdk.client.bulk``) runs here with a screening
that answers from the value itself, so the tests see exactly which rows were
sent and what the output and journal hold.  The e2e file
(tests/test_bulk_jobs_e2e.py) runs the same paths against a real hub.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.client.bulk import (
    JobSpec,
    JobStopped,
    contribution_job,
    revocation_job,
    run_job,
    screening_job,
)
from client_sdk.client.csvrows import MAX_FIELD, CsvSource
from client_sdk.client.results import (
    BulkSummary,
    Contributed,
    Indicator,
    ItemFailure,
    MatchResult,
    RevokeResult,
)
from client_sdk.core.errors import ConfigurationError, InvalidRequest, PolicyDenied, Unavailable

PHONE = "+86 139 0000 {:04d}"


class FakeScreening:
    """Answers like a hub: bank_card refused, kinds other than phone invalid, phone
    values ending in an odd digit matched.

    ``fail_on_call`` makes that call (1-based) raise Unavailable (a hub outage);
    ``stop_after`` sets ``stop`` once that many windows were tokenized (on the
    job's thread, so where the job stops does not depend on thread timing).
    """

    def __init__(self, fail_on_call: int | None = None, stop_after: int | None = None) -> None:
        self.sent: list[str] = []
        self.calls = 0
        self.windows = 0
        self.fail_on_call = fail_on_call
        self.stop_after = stop_after
        self.stop = threading.Event()

    def __call__(
        self, pairs: Sequence[tuple[str, str]]
    ) -> Callable[[], list[MatchResult | ItemFailure]]:
        self.windows += 1
        if self.stop_after is not None and self.windows >= self.stop_after:
            self.stop.set()

        def send() -> list[MatchResult | ItemFailure]:
            self.calls += 1
            if self.calls == self.fail_on_call:
                raise Unavailable("gave up after 9 attempt(s) over 30.0s")
            self.sent.extend(value for _, value in pairs)
            out: list[MatchResult | ItemFailure] = []
            for index, (kind, value) in enumerate(pairs):
                if kind == "bank_card":
                    out.append(ItemFailure(index, kind, PolicyDenied("no", ("DENY_NO_RULE",))))
                elif kind != "phone":
                    out.append(ItemFailure(index, kind, InvalidRequest("unknown kind")))
                else:
                    matched = int(value[-1]) % 2 == 1
                    disclosure = "match" if matched else "none"
                    out.append(MatchResult(index, kind, matched, disclosure))
            return out

        return send


def job(screening: FakeScreening) -> JobSpec:
    return screening_job("sim_activation_screening", screening)


def run(
    source: Path | CsvSource,
    screening: FakeScreening,
    *,
    out: io.StringIO | None = None,
    **options: object,
) -> tuple[BulkSummary, list[dict[str, str]]]:
    out = out if out is not None else io.StringIO()
    src = source if isinstance(source, CsvSource) else CsvSource(source)
    summary = run_job(src, job(screening), out=out, progress=False, **options)  # type: ignore[arg-type]
    return summary, list(csv.DictReader(io.StringIO(out.getvalue())))


def write_rows(path: Path, count: int, header: str = "ref,kind,value") -> list[str]:
    values = [PHONE.format(i) for i in range(count)]
    path.write_text(header + "\n" + "".join(f"r{i},phone,{v}\n" for i, v in enumerate(values)))
    return values


# --- statuses ----------------------------------------------------------------------------


def test_refused_rows_say_so_and_every_status_is_counted(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("ref,kind,value\na,phone,+8613900000001\nb,bank_card,6222029015443425\n"
                      "c,phone,+8613900000002\nd,nonsense,x\n")  # fmt: skip
    summary, rows = run(source, FakeScreening())
    assert [(r["ref"], r["status"], r["reasons"]) for r in rows] == [
        ("a", "match", ""),
        ("b", "refused", "DENY_NO_RULE"),
        ("c", "no_match", ""),
        ("d", "error", "unknown kind"),
    ]
    assert summary.counts == {"match": 1, "refused": 1, "no_match": 1, "error": 1}
    assert [(f.index, f.kind) for f in summary.failures] == [(2, "bank_card"), (4, "unknown")]
    assert "6222029015443425" not in "".join(map(str, rows))


# --- CSV as institutions export it ---------------------------------------------------------


def test_bad_rows_are_row_errors_and_every_valid_row_is_processed(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    secret_long = "9" * (MAX_FIELD + 10)
    source.write_bytes(
        b"ref,kind,value\n"
        b"a,phone,+8613900000001\n"
        + "b,phone,\u5f20\u4e09\n".encode("gbk")  # a GBK export read as UTF-8
        + b"c,phone,+8613900000003,extra-secret\n"
        + f"d,phone,{secret_long}\n".encode()
        + b"e,phone\n"
        + b"f,phone,+8613900000005\n"
    )
    screening = FakeScreening()
    summary, rows = run(source, screening)
    assert [r["status"] for r in rows] == ["match", "error", "error", "error", "error", "match"]
    assert [r["reasons"] for r in rows[1:5]] == [
        "not valid utf-8",
        "4 columns where the header has 3",
        f"a field is longer than {MAX_FIELD} characters",
        "2 columns where the header has 3",
    ]
    assert screening.sent == ["+8613900000001", "+8613900000005"]
    assert summary.rows == 6 and summary.total == 6
    text = json.dumps(rows)
    assert "extra-secret" not in text and "9999999999" not in text
    assert [r["ref"] for r in rows] == ["a", "", "", "", "", "f"]  # bad rows copy nothing


def test_bom_other_encodings_and_stdin(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfkind,value\nphone,+8613900000001\n")
    assert [r["status"] for r in run(bom, FakeScreening())[1]] == ["match"]
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(
        "\u5907\u6ce8,kind,value\n\u5f20\u4e09,phone,+8613900000003\n".encode("gb18030")
    )
    summary, rows = run(CsvSource(gbk, "gb18030"), FakeScreening())
    assert rows == [{**rows[0], "\u5907\u6ce8": "\u5f20\u4e09", "status": "match"}]
    stdin = CsvSource.of("-")
    assert stdin.path is None
    piped = CsvSource(None, stdin=io.BytesIO(b"kind,value\nphone,+8613900000001\n"))
    summary, rows = run(piped, FakeScreening())
    assert summary.total is None and [r["status"] for r in rows] == ["match"]


@pytest.mark.parametrize(
    ("content", "encoding", "message"),
    [
        (b"ref,val\nx,y\n", "utf-8", "must name the columns kind and value"),
        (b"", "utf-8", "no header"),
        (b"kind,value\n", "klingon", "unknown encoding"),
    ],
)
def test_unusable_files_are_configuration_errors(
    tmp_path: Path, content: bytes, encoding: str, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(content)
    with pytest.raises(ConfigurationError, match=message):
        run(CsvSource(source, encoding), FakeScreening())


# --- journal and resume -------------------------------------------------------------------


def test_stop_then_resume_sends_each_row_once_and_writes_each_row_once(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    values = write_rows(source, 23)
    journal = tmp_path / "out.csv.journal"
    first = FakeScreening(stop_after=2)
    with pytest.raises(
        JobStopped, match=r"^10 of 23 rows done \(interrupted\); rerun with --resume"
    ):
        run(source, first, journal=journal, window=5, stop=first.stop)
    assert len(first.sent) == 10  # the window in flight is answered and journaled
    lines = journal.read_text().splitlines()
    assert len(lines) == 11 and oct(journal.stat().st_mode & 0o777) == "0o600"
    assert not any(v in journal.read_text() for v in values)  # row numbers and outcomes only
    with pytest.raises(ConfigurationError, match="rerun with --resume"):
        run(source, FakeScreening(), journal=journal)
    second = FakeScreening()
    summary, rows = run(source, second, journal=journal, window=5, resume=True)
    assert sorted(first.sent + second.sent) == sorted(values)  # no row sent twice
    assert [r["ref"] for r in rows] == [f"r{i}" for i in range(23)]
    assert summary.rows == 23 and not journal.exists()


def test_hub_outage_stops_the_job_and_resume_completes(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    values = write_rows(source, 12)
    journal = tmp_path / "j"
    first = FakeScreening(fail_on_call=2)
    with pytest.raises(JobStopped, match=r"^4 of 12 rows done \(Unavailable: gave up") as stop:
        run(source, first, journal=journal, window=4)
    assert isinstance(stop.value.cause, Unavailable)
    second = FakeScreening()
    _, rows = run(source, second, journal=journal, window=4, resume=True)
    assert first.sent + second.sent == values and len(rows) == 12


def test_a_torn_journal_line_is_asked_again(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    values = write_rows(source, 6)
    journal = tmp_path / "j"
    first = FakeScreening(stop_after=1)
    with pytest.raises(JobStopped):
        run(source, first, journal=journal, window=3, stop=first.stop)
    with journal.open("a") as handle:
        handle.write('{"row": 4, "kind": "ph')  # the process died mid-line
    second = FakeScreening()
    _, rows = run(source, second, journal=journal, window=3, resume=True)
    assert second.sent == values[3:] and len(rows) == 6


def test_journal_of_another_job_or_none_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    write_rows(source, 3)
    journal = tmp_path / "j"
    with pytest.raises(ConfigurationError, match="nothing to resume"):
        run(source, FakeScreening(), journal=journal, resume=True)
    first = FakeScreening(stop_after=1)
    with pytest.raises(JobStopped):
        run(source, first, journal=journal, window=1, stop=first.stop)
    other = screening_job("payment_screening", FakeScreening())
    with pytest.raises(ConfigurationError, match="another job"):
        run_job(CsvSource(source), other, journal=journal, resume=True, progress=False)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(
        st.sampled_from(["phone", "bank_card", "junk", "extra"]), min_size=1, max_size=30
    ),
    window=st.integers(min_value=1, max_value=7),
    stops=st.lists(st.integers(min_value=1, max_value=5), max_size=3),
)
def test_any_sequence_of_stops_ends_like_one_uninterrupted_run(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[str], window: int, stops: list[int]
) -> None:
    """Every row ends exactly once in the output, whatever stops came in between."""
    root = tmp_path_factory.mktemp("prop")
    source = root / "in.csv"
    lines = ["ref,kind,value"]
    for i, kind in enumerate(kinds):
        value = PHONE.format(i)
        lines.append(f"r{i},phone,{value},x" if kind == "extra" else f"r{i},{kind},{value}")
    source.write_text("\n".join(lines) + "\n")
    _, expected = run(source, FakeScreening(), window=window)
    journal = root / "j"
    sent: list[str] = []
    resume = False
    for stop_after in stops:
        screening = FakeScreening(stop_after=stop_after)
        try:
            _, rows = run(source, screening, journal=journal, window=window, resume=resume,
                          stop=screening.stop)  # fmt: skip
        except JobStopped:
            resume = True
            sent += screening.sent
            continue
        sent += screening.sent
        break
    else:
        screening = FakeScreening()
        _, rows = run(source, screening, journal=journal, window=window, resume=resume)
        sent += screening.sent
    assert rows == expected
    assert len(sent) == len(set(sent))


def test_a_contribution_stopped_part_way_says_which_rows_were_stored(tmp_path: Path) -> None:
    """Issue 13: contribute_csv raised without saying which rows the hub had stored."""
    source = tmp_path / "in.csv"
    source.write_text(
        "kind,value,category,confidence\n"
        + "".join(f"phone,{PHONE.format(i)},scam_phone,{'x' if i == 1 else 60}\n" for i in range(6))
    )
    calls: list[int] = []

    def contribution(items: Sequence[Indicator]) -> Callable[[], list[Contributed | ItemFailure]]:
        def send() -> list[Contributed | ItemFailure]:
            calls.append(len(items))
            if len(calls) == 2:
                raise Unavailable("gave up after 12 attempt(s) over 30.0s")
            return [Contributed(i, item.kind) for i, item in enumerate(items)]

        return send

    journal = tmp_path / "j"
    spec = contribution_job("fraud_reporting", contribution)
    with pytest.raises(JobStopped, match=r"^3 of 6 rows done \(Unavailable"):
        run_job(CsvSource(source), spec, journal=journal, window=3, progress=False)
    outcomes = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    stored = [(o["row"], o["status"]) for o in outcomes]
    assert stored == [(1, "stored"), (2, "error"), (3, "stored")]
    assert calls == [2, 3]  # the row with a bad confidence is never sent
    out = io.StringIO()
    summary = run_job(CsvSource(source), spec, out=out, journal=journal, resume=True, window=3,
                      progress=False)  # fmt: skip
    assert calls == [2, 3, 3] and summary.counts == {"stored": 5, "error": 1}
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["row"], r["status"]) for r in rows] == [
        ("1", "stored"), ("2", "error"), ("3", "stored"), ("4", "stored"), ("5", "stored"),
        ("6", "stored"),
    ]  # fmt: skip
    assert list(rows[0]) == ["row", "kind", "status", "reasons"]  # no value, no label


def test_the_progress_bar_counts_answered_rows_with_total_rate_and_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    write_rows(source, 12)
    run_job(CsvSource(source), job(FakeScreening()), window=5, progress=True)
    err = capsys.readouterr().err
    assert "12/12" in err and "100%" in err and "rows/s" in err and "ETA" in err
    assert PHONE.format(3) not in err


def test_a_crash_stops_the_job_with_its_cause_and_keeps_the_journal(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    write_rows(source, 6)
    journal = tmp_path / "j"
    calls: list[int] = []

    def screening(
        pairs: Sequence[tuple[str, str]],
    ) -> Callable[[], list[MatchResult | ItemFailure]]:
        def send() -> list[MatchResult | ItemFailure]:
            calls.append(len(pairs))
            if len(calls) == 2:
                raise RuntimeError("a worker process terminated abruptly")
            return [MatchResult(i, "phone", False, "none") for i in range(len(pairs))]

        return send

    with pytest.raises(JobStopped, match=r"^3 of 6 rows done \(RuntimeError") as stopped:
        run_job(CsvSource(source), screening_job("x", screening), journal=journal, window=3,
                progress=False)  # fmt: skip
    assert isinstance(stopped.value.__cause__, RuntimeError)
    assert len(journal.read_text().splitlines()) == 1 + 3


def test_a_revocation_resumes_and_still_adds_up_the_hubs_counts(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "kind,value\n" + "".join(f"phone,{PHONE.format(i)}\n" for i in range(5)) + "phone,12\n"
    )
    sent: list[int] = []
    stop = threading.Event()

    def revocation(pairs: Sequence[tuple[str, str]]) -> Callable[[], RevokeResult]:
        stop.set()  # the first run stops once this window is answered

        def send() -> RevokeResult:
            sent.append(len(pairs))
            bad = [i for i, (_, v) in enumerate(pairs) if v == "12"]
            failures = tuple(ItemFailure(i, "phone", InvalidRequest("too short")) for i in bad)
            return RevokeResult(len(pairs) - len(bad) - 1, 1, failures)

        return send

    spec = revocation_job("false_positive", revocation)
    journal = tmp_path / "j"
    with pytest.raises(JobStopped, match=r"^3 of 6 rows done"):
        run_job(CsvSource(source), spec, journal=journal, window=3, stop=stop, progress=False)
    out = io.StringIO()
    summary = run_job(CsvSource(source), spec, out=out, journal=journal, resume=True, window=3,
                      progress=False)  # fmt: skip
    assert sent == [3, 3]
    assert (summary.revoked, summary.not_found, summary.counts) == (
        3,
        2,
        {"revoked": 5, "error": 1},
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["status"] for r in rows] == ["revoked"] * 5 + ["error"]
    assert list(rows[0]) == ["row", "kind", "status", "reasons"]  # the counts stay in the journal


def test_the_optional_evidence_column_reaches_each_indicator(tmp_path: Path) -> None:
    """Issue 12 through the issue 13 job runner: ``evidence`` is optional per row
    (empty: the hub's default), and the screening result has evidence and score."""
    source = tmp_path / "in.csv"
    source.write_text(
        "kind,value,category,evidence\n"
        f"phone,{PHONE.format(1)},scam_phone,police_case\n"
        f"phone,{PHONE.format(2)},scam_phone,\n"
    )
    seen: list[str | None] = []

    def contribution(items: Sequence[Indicator]) -> Callable[[], list[Contributed | ItemFailure]]:
        seen.extend(item.evidence for item in items)
        return lambda: [Contributed(i, item.kind) for i, item in enumerate(items)]

    spec = contribution_job("fraud_reporting", contribution)
    summary = run_job(CsvSource(source), spec, progress=False)
    assert summary.counts == {"stored": 2} and seen == ["police_case", None]

    def screening(
        pairs: Sequence[tuple[str, str]],
    ) -> Callable[[], list[MatchResult | ItemFailure]]:
        found = MatchResult(0, "phone", True, "summary", evidence=("police_case",), score=87)
        return lambda: [found for _ in pairs]

    out = io.StringIO()
    run_job(CsvSource(source), screening_job("payment_screening", screening), out=out,
            progress=False)  # fmt: skip
    [row, _] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["evidence"], row["score"]) == ("police_case", "87")

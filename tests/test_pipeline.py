"""The bulk path's one-deep pipeline (client_sdk.client.bulk._Pipeline)."""

from __future__ import annotations

import threading

import pytest

from client_sdk.client.bulk import _Pipeline


def test_results_are_handled_in_order_on_the_callers_thread() -> None:
    handled: list[tuple[int, str]] = []
    with _Pipeline[int]() as pipeline:
        for n in range(5):
            pipeline.push(
                lambda n=n: n * n,  # type: ignore[misc]  # mypy cannot type a default-bound lambda
                lambda r: handled.append((r, threading.current_thread().name)),
            )
    assert [r for r, _ in handled] == [0, 1, 4, 9, 16]
    assert {name for _, name in handled} == {threading.current_thread().name}


def test_a_failed_call_is_raised_before_the_next_window_is_prepared() -> None:
    started = threading.Event()

    def fail() -> int:
        started.set()
        raise ConnectionError("hub down")

    with pytest.raises(ConnectionError), _Pipeline[int]() as pipeline:
        pipeline.push(fail, lambda _: None)
        started.wait(5)
        while True:  # the caller checks before each window's tokenization
            pipeline.check()


def test_the_window_in_flight_is_still_handled_when_the_block_fails() -> None:
    handled: list[int] = []
    with pytest.raises(ValueError, match="tokenizing failed"), _Pipeline[int]() as pipeline:
        pipeline.push(lambda: 7, handled.append)
        raise ValueError("tokenizing failed")
    assert handled == [7]

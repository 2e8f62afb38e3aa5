"""The worker's producer and commit hooks: what a flush waits for, what a commit tells the engines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import TP

from streams.app.factory import create_app
from streams.app.transport import Unacked
from streams.config import load_settings
from streams.core.engine import MetricsEngine


def test_wait_returns_once_every_message_is_acknowledged() -> None:
    async def run() -> list[bool]:
        loop = asyncio.get_running_loop()
        unacked = Unacked()
        futs = [loop.create_future() for _ in range(3)]
        for i, f in enumerate(futs):
            unacked.add(f)
            loop.call_later(0.05 * (i + 1), f.set_result, i)
        await unacked.wait()
        return [f.done() for f in futs] + [len(unacked) == 0]

    assert asyncio.run(run()) == [True, True, True, True]


@pytest.mark.parametrize("how", ["exception", "cancel"])
def test_a_lost_message_makes_every_later_wait_raise(how: str) -> None:
    async def run() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        unacked = Unacked()
        lost, fine = loop.create_future(), loop.create_future()
        unacked.add(lost)
        unacked.add(fine)
        if how == "exception":
            lost.set_exception(OSError("broker gone"))
        else:
            lost.cancel()
        fine.set_result(None)
        await asyncio.sleep(0)  # done callbacks run
        errors = []
        for _ in range(2):  # the failure happened before the flush, and stays
            try:
                await unacked.wait()
                errors.append("")
            except RuntimeError as exc:
                errors.append(str(exc))
        return errors[0], errors[1]

    first, second = asyncio.run(run())
    assert "offsets cannot be committed" in first and first == second


def test_a_commit_reaches_the_metrics_engines(tmp_path: Path) -> None:
    """faust's commit path calls ``tables.on_commit`` with what the broker accepted; the engines hear it."""
    s = load_settings(env={}, bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path / "w"))
    dl = create_app(s)  # never started: no broker needed
    eng = dl.metrics_stage.engines[0] = MetricsEngine(s.metrics, 0)
    dl.app.tables.on_commit({TP(s.topic("predictions"), 0): 41, TP(s.topic("feedback"), 0): 7})
    assert eng._committed == {f"{s.topic('predictions')}:0": 41, f"{s.topic('feedback')}:0": 7}

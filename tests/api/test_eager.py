"""``start_eagerly``: a coroutine without a task runs at once to its first wait and on as
each awaited future completes, on a real event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bastion.api.service.eager import start_eagerly


def test_runs_to_its_first_wait_at_once_then_on_completion() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        steps: list[object] = []

        async def op() -> None:
            steps.append("start")
            steps.append(await first)
            await asyncio.sleep(0)  # a bare yield
            try:
                await second
            except ValueError as exc:
                steps.append(str(exc))

        start_eagerly(op())
        assert steps == ["start"]  # no loop turn needed to start
        first.set_result(7)
        assert steps == ["start"]  # resumed by the future's callback, like a task
        await asyncio.sleep(0)
        assert steps == ["start", 7]
        second.set_exception(ValueError("refused"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert steps == ["start", 7, "refused"]

    asyncio.run(run())


def test_a_synchronous_end_and_an_escaping_error(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        done: list[int] = []

        async def quick() -> None:
            done.append(1)

        async def broken() -> None:
            raise RuntimeError("bug")

        start_eagerly(quick())
        assert done == [1]
        with caplog.at_level(logging.ERROR, logger="bastion.api"):
            start_eagerly(broken())
        assert "eagerly started coroutine failed" in caplog.text

    asyncio.run(run())

"""The shared waits of tests/helpers.py: every test that waits for a state
relies on them failing loudly and never passing early."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.helpers import wait_for, wait_until


def test_wait_until_returns_the_first_truthy_answer() -> None:
    answers = iter([0, None, "", "ready", "later"])
    assert wait_until(lambda: next(answers), within=5, interval=0.001) == "ready"


def test_wait_until_names_what_it_waited_for_when_time_runs_out() -> None:
    calls = itertools.count()
    with pytest.raises(AssertionError, match=r"timed out after 0\.1 s waiting for the moon"):
        wait_until(lambda: next(calls) < 0, within=0.1, what="the moon", interval=0.01)
    assert next(calls) > 2, "it kept asking until the deadline"


def test_wait_until_retries_only_the_exceptions_it_is_told_to() -> None:
    attempts = itertools.count(1)

    def flaky() -> int:
        attempt = next(attempts)
        if attempt < 3:
            raise ConnectionError("not listening yet")
        return attempt

    assert wait_until(flaky, within=5, interval=0.001, retry_on=(ConnectionError,)) == 3
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, within=5, interval=0.001, retry_on=(ConnectionError,))


async def test_wait_for_lets_other_tasks_run_and_takes_coroutines() -> None:
    done = asyncio.Event()
    setter = asyncio.get_running_loop().call_soon(done.set)
    assert await wait_for(done.is_set, within=5) is True

    async def answer() -> str | None:
        return "up" if done.is_set() else None

    assert await wait_for(answer, within=5) == "up"
    setter.cancel()


async def test_wait_for_fails_an_assertion_inside_the_condition_at_once() -> None:
    def broken() -> bool:
        raise AssertionError("a 500 on the way")

    with pytest.raises(AssertionError, match="a 500 on the way"):
        await wait_for(broken, within=30)

"""launcher.aio.run: a Ctrl-C always interrupts, also when the coroutine swallowed the cancellation."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from launcher import aio


async def swallowing() -> str:
    """Cancelled, it goes on: what Python 3.11's wait_for does when its awaitable finishes at that moment."""
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        pass
    return "went on"


def test_asyncio_run_loses_a_ctrl_c_that_the_coroutine_swallowed():
    assert asyncio.run(swallowing()) == "went on"  # why launcher.aio exists


def test_a_ctrl_c_that_the_coroutine_swallowed_still_interrupts():
    with pytest.raises(KeyboardInterrupt):
        aio.run(swallowing())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_coroutine_that_ends_cancelled_interrupts_and_others_return_their_result():
    async def plain() -> str:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)
        return "not reached"

    with pytest.raises(KeyboardInterrupt):
        aio.run(plain())

    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert aio.run(quick()) == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

"""Running a coroutine from synchronous code: the one place that does (``asyncio.run`` is called nowhere else).

``asyncio.run`` turns Ctrl-C into cancelling the coroutine, and raises ``KeyboardInterrupt`` only if the
coroutine then ends cancelled. One that swallowed the cancellation goes on as if no Ctrl-C came: Python 3.11's
``asyncio.wait_for`` does when what it awaits finishes in the same moment (python/cpython#86296), e.g. a node's
reply arriving as the user presses Ctrl-C (tests/test_aio.py shows ``asyncio.run`` losing it). :func:`run`
cancels the same way and always ends in ``KeyboardInterrupt`` once a Ctrl-C came; a second Ctrl-C interrupts at
once, as with ``asyncio.run``. Where SIGINT is not Python's default handler (ignored, as in a background job of a
script, or a caller's own) it is left alone, as ``asyncio.run`` leaves it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, where a Ctrl-C during it always ends in ``KeyboardInterrupt``."""
    import asyncio  # here: importing this module stays free for the CLI's start

    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return asyncio.run(coro)  # no Ctrl-C of ours to handle here (a worker thread, or a caller's own handler)
    hits = 0
    task: Any = None  # the asyncio.Task running ``main``

    async def main() -> T:
        nonlocal task
        task = asyncio.current_task()
        return await coro

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal hits
        hits += 1
        if hits > 1 or task is None or task.done():
            raise KeyboardInterrupt
        task.cancel()
        task.get_loop().call_soon_threadsafe(lambda: None)  # wake the loop to deliver the cancellation

    signal.signal(signal.SIGINT, on_sigint)
    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if hits:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hits:
        raise KeyboardInterrupt
    return result

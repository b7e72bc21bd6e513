"""Running ``corral top``: the live screen (rich ``Live``, a key reader) or one frame.

The loop starts a refresh every ``interval`` seconds and draws whatever has come back by then:
a node that is slow shows "waiting", one that stops answering shows "unreachable" once its
request times out, and the other nodes go on refreshing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator

from launcher.top.collect import Collector
from launcher.top.model import Frame
from launcher.top.render import render

RATE_GAP_S = 1.0
"""One frame (``--once``/``--json``) is the second of two samples this far apart (rates need two)."""
QUIT_KEYS = {"q", "Q"}


async def snapshot(collector: Collector, deadline_s: float, gap_s: float = RATE_GAP_S) -> Frame:
    """Two refreshes ``gap_s`` apart (CPU and network rates come from the difference)."""
    try:
        await collector.refresh(deadline_s)
        await asyncio.sleep(gap_s)
        return await collector.refresh(deadline_s)
    finally:
        await collector.close()


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[bool]:
    """Keys arrive one by one (no Enter needed) while the screen is open; restored after."""
    try:
        import termios
        import tty

        old = termios.tcgetattr(fd)
    except (ImportError, OSError):
        yield False
        return
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


async def live(collector: Collector, console, interval: float) -> None:
    """Refresh every ``interval`` until q is pressed; Ctrl-C ends it too. No refresh waits longer
    than ``interval``: nodes still logging in or late show as waiting, so q is never held up."""
    from rich.live import Live

    loop = asyncio.get_running_loop()
    quit_event = asyncio.Event()
    fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None

    def on_key() -> None:
        try:
            data = os.read(fd, 64).decode(errors="replace")
        except OSError:
            return
        if set(data) & QUIT_KEYS:
            quit_event.set()

    with contextlib.ExitStack() as stack:
        if fd is not None:
            stack.enter_context(cbreak(fd))
            loop.add_reader(fd, on_key)
            stack.callback(loop.remove_reader, fd)
        view = stack.enter_context(Live(console=console, screen=True, auto_refresh=False, transient=True))
        from rich.text import Text

        view.update(Text(f"corral top: connecting to {len(collector.pollers)} node(s)..."), refresh=True)
        try:
            while not quit_event.is_set():
                t0 = time.monotonic()
                frame = await collector.refresh(interval)
                view.update(render(frame, console.size.width, interval), refresh=True)
                rest = interval - (time.monotonic() - t0)
                if rest > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(quit_event.wait(), rest)
        finally:
            await collector.close()

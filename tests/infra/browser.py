"""A page loaded in Debian's headless ``chromium``: the DOM after load, and every URL the page asked for.

The requests come from chromium's own network log (``--log-net-log``, its NetLog JSON: each URL request starts
with an event whose params carry ``url`` and ``initiator``), not from guessing at the HTML, so a stylesheet,
font, image or script pulled from anywhere shows up. The browser's own background requests (component updates,
time, accounts) have no initiating origin ("not an origin") and are not the page's; what the page asks for has
one (a file:// page's is "null").

Chromium runs in a network namespace of its own with only loopback up: the background requests it makes
regardless of flags go nowhere, and a page that tried to fetch something would fail offline as a user's would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "chromium"
QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",  # root on the development machines
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
]


@dataclass
class Loaded:
    dom: str
    requests: list[str]
    """URLs other than the page itself (file:// of the page, data: and about: are the page's own)."""


def missing() -> str | None:
    return (
        None if shutil.which(CHROMIUM) else "chromium is not installed (Debian package chromium; make venv installs it)"
    )


def _page_requests(netlog: Path) -> list[str]:
    text = netlog.read_text(encoding="utf-8", errors="replace").rstrip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # a log cut short at exit: close it so it parses
        data = json.loads(text.rstrip(",\n") + "]}")
    urls = []
    for event in data.get("events", []):
        params = event.get("params") or {}
        if isinstance(params.get("url"), str) and "initiator" in params and params["initiator"] != "not an origin":
            urls.append(params["url"])
    return urls


def load(page: Path, workdir: Path, timeout_s: float = 60.0) -> Loaded:
    workdir.mkdir(parents=True, exist_ok=True)
    netlog = workdir / "netlog.json"
    argv = [
        "unshare",
        "--net",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        CHROMIUM,
        *QUIET_FLAGS,
        f"--user-data-dir={workdir / 'profile'}",
        f"--log-net-log={netlog}",
        "--net-log-capture-mode=Default",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, start_new_session=True)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium could not load {page} (exit {done.returncode}): {done.stderr[-2000:]}")
    own = page.resolve().as_uri()
    requests = sorted({u for u in _page_requests(netlog) if u != own and not u.startswith(("data:", "about:"))})
    return Loaded(done.stdout, requests)

"""The node agent's ``status`` read as one POSIX sh script, for one-shot reads (``corral ps``, a job's
status): a node then runs a shell and ``tmux list-panes`` (and ``date`` for a job that ended) instead of
starting Python, which was most of what a 32-node ``ps`` cost on top of pdsh's bare probe
(docs/results/scale.md). One script answers the reads of several jobs. The answer is the same dict as
``node_agent.op_status`` (tests/test_status_sh.py runs both on the same state); a kept agent session
(``logs -f``, ``top``, a wait's polls) still answers ``status`` itself.

Pure: :func:`script` renders the script, :func:`parse` reads its output; ``launcher.agent.remote`` runs it
through the ssh choke point (``sh -s``, the script on stdin).
"""

from __future__ import annotations

import base64
import shlex
from typing import Any

from launcher.agent.node_agent import STATUS_FILE_CAP, capped_text, pane_fields

MARK = "@corral-status"
"""Starts each request's section of the output (``MARK i``)."""

# Each fact is one line "KEY VALUE"; file contents travel as base64 so that any byte of them survives.
# Builtins where they do (read, set, parameter expansion): a node starts only tmux, and date for an exit.
# The session before the exit file, as op_status reads them: the wrapper writes the file, then ends the session.
_BODY = """\
echo '{mark} {index}'
(
d={state_dir}
if panes=$({tmux} 2>/dev/null); then set -- $panes; printf 'panes %s\\n' "$*"; fi
if [ -f "$d/exit_code" ]; then
  c=; IFS= read -r c <"$d/exit_code"; printf 'exit_code %s\\n' "$c"
  printf 'exit_mtime %s\\n' "$(date -r "$d/exit_code" +%s.%N 2>/dev/null)"
fi
p=; [ -r "$d/pid" ] && IFS= read -r p <"$d/pid"
printf 'pid %s\\n' "$p"
set -- $p
if [ $# -eq 3 ] && [ -r "/proc/$1/stat" ]; then
  s=; IFS= read -r s <"/proc/$1/stat"; s=${{s##*) }}
  [ -n "$s" ] && [ "${{s%% *}}" != Z ] && echo 'alive 1'
fi
{files}) </dev/null
"""

_FILE = """\
if [ -r {path} ]; then printf 'file {key} %s ' "$(wc -c <{path})"; tail -c {cap} {path} | base64 | tr -d '\\n'; echo; fi
"""


def script(requests: list[dict[str, Any]]) -> str:
    """One sh script that answers every ``status`` request in ``requests`` on the node, in order (run as
    ``sh -s`` with the script on stdin: no command-line limit however many jobs; what it starts reads
    /dev/null, never the rest of the script)."""
    return "set -f\n" + "".join(_body(i, r) for i, r in enumerate(requests)) + "exit 0\n"


def _body(index: int, request: dict[str, Any]) -> str:
    files = "".join(
        _FILE.format(key=key, path=shlex.quote(path), cap=STATUS_FILE_CAP)
        for key, path in (request.get("read") or {}).items()
        if key.isidentifier()  # keys are the launcher's own names; nothing else reaches the line format
    )
    return _BODY.format(
        mark=MARK,
        index=index,
        state_dir=shlex.quote(request["state_dir"]),
        tmux=shlex.join(request["tmux_panes"]),
        files=files,
    )


def parse(stdout: str, requests: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Per request, the ``op_status`` answer read from the script's output; None for a request whose section is
    missing (the shell ended early). Lines it does not know (a login script's) are skipped."""
    sections: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(MARK + " ") and line[len(MARK) + 1 :].isdigit():
            current = sections.setdefault(int(line[len(MARK) + 1 :]), [])
        elif current is not None:
            current.append(line)
    return [_answer(sections[i], r) if i in sections else None for i, r in enumerate(requests)]


def _answer(lines: list[str], request: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"exit_code": None, "exit_mtime": None, "session": False, "pane_dead": None}
    out.update(pane_status=None, pid=None, alive=False)
    files: dict[str, str | None] = {key: None for key in (request.get("read") or {})}
    for line in lines:
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "exit_code" and value.lstrip("-").isdigit():
            out["exit_code"] = int(value)
        elif key == "exit_mtime" and out["exit_code"] is not None:
            out["exit_mtime"] = _float(value)
        elif key == "pid":
            words = value.split()
            out["pid"] = [int(w) for w in words] if len(words) == 3 and all(w.isdigit() for w in words) else None
        elif key == "alive":
            out["alive"] = True
        elif key == "panes":
            out.update(pane_fields(value))
        elif key == "file":
            name, _, rest = value.partition(" ")
            size, _, data = rest.partition(" ")
            if name in files and size.isdigit():
                files[name] = capped_text(base64.b64decode(data.strip() or b""), int(size))
    out["alive"] = bool(out["pid"]) and out["alive"]
    out["files"] = files
    return out


def _float(text: str) -> float | None:
    """Seconds from ``date +%s.%N``; a ``date`` without ``%N`` (busybox) leaves it literal: whole seconds then."""
    for candidate in (text, text.split(".", 1)[0]):
        try:
            return float(candidate)
        except ValueError:
            continue
    return None

"""The screen: a :class:`Frame` as three rich tables (nodes, GPUs grouped by node, jobs).

Every cell is one line (long text is cut with an ellipsis), so the layout holds from 80
columns up; under ``WIDE`` columns the GPU model name is left out to make room.
"""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from launcher.runs.summary import fold
from launcher.top.judge import SHORT_WORDS
from launcher.top.model import Frame, GpuRow, JobOnNode, NodeRow

WIDE = 120
GIB = 1024**3
STRAGGLER = "◀ straggler"


def _gib(used: int | None, total: int | None) -> str:
    if used is None or total is None:
        return "-"
    return f"{used / GIB:.1f}/{total / GIB:.0f}G"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("T", 1024**4), ("G", GIB), ("M", 1024**2)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n / 1024:.0f}K"


def _rate(bps: float | None, narrow: bool = False) -> str:
    if bps is None:
        return "-"
    tail = "" if narrow else "B/s"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f}{unit}{tail}"
    return f"{bps:.0f}{tail}"


def _num(v: float | None, fmt: str = "{:.0f}", suffix: str = "") -> str:
    return "-" if v is None else fmt.format(v) + suffix


def _ago(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def node_state(n: NodeRow) -> Text:
    if not n.reachable:
        return Text("unreachable", style="bold red")
    if n.waiting_s is not None and n.waiting_s >= 1:
        return Text(f"waiting {n.waiting_s:.0f}s", style="yellow")
    return Text("up", style="green")


def _table() -> Table:
    return Table(box=None, pad_edge=False, header_style="bold", collapse_padding=True)


def nodes_table(frame: Frame, width: int) -> Table:
    narrow = width < WIDE
    t = _table()
    t.add_column("node", no_wrap=True, overflow="ellipsis", max_width=12 if narrow else 20)
    t.add_column("state", no_wrap=True)
    t.add_column("cpu", justify="right", no_wrap=True)
    if not narrow:
        t.add_column("load", justify="right", no_wrap=True)
    t.add_column("memory", justify="right", no_wrap=True)
    t.add_column("free runs/ckpt", justify="right", no_wrap=True)
    t.add_column("net rx/tx", justify="right", no_wrap=True)
    # The last column (GPUs, or why a node is unreachable) takes what the others leave.
    t.add_column(
        "gpus", no_wrap=True, overflow="ellipsis", min_width=4, max_width=max(6, width - (66 if narrow else 96))
    )
    for n in frame.nodes:
        if not n.reachable:
            t.add_row(n.node, node_state(n), *[""] * (len(t.columns) - 3), Text(n.error or "", style="red"))
            continue
        disks = "/".join(_size(d.get("free")) for d in n.disks) or "-"
        load = "-" if n.load1 is None else f"{n.load1:.1f}/{n.ncpu}"
        if n.gpus:
            gpus = str(len(n.gpus)) if narrow else f"{len(n.gpus)} ({n.gpu_source})"
        else:
            gpus = "none" if narrow else (n.gpu_note or "none")
        cells = [n.node, node_state(n), _num(n.cpu_pct, suffix="%")] + ([] if narrow else [load])
        cells += [
            _gib(n.mem_used, n.mem_total),
            disks,
            f"{_rate(n.rx_bps, narrow)}{'/' if narrow else ' '}{_rate(n.tx_bps, narrow)}",
            gpus,
        ]
        t.add_row(*cells)
    return t


def _events(g: GpuRow, narrow: bool) -> Text:
    if narrow:
        ecc = " ".join(f"+{g.ecc_new[k]}{k[0]}" for k in ("uncorrected", "corrected") if k in g.ecc_new)
        parts = [e.split(":")[0] for e in g.events] + ([f"ECC {ecc}"] if ecc else [])
    else:
        parts = list(g.events) + [f"ECC +{v} {k}" for k, v in g.ecc_new.items()]
    return Text("; ".join(parts) or "-", style="bold red" if parts else "")


def _throttle_text(g: GpuRow, wide: bool) -> str:
    return ", ".join(g.throttle if wide else [SHORT_WORDS.get(w, w) for w in g.throttle]) or "-"


def gpus_table(frame: Frame, width: int) -> Table | None:
    rows = [(n, g) for n in frame.nodes if n.reachable for g in n.gpus]
    if not rows:
        return None
    wide = width >= WIDE
    t = _table()
    t.add_column("node", no_wrap=True, overflow="ellipsis", max_width=20 if wide else 12)
    t.add_column("gpu", justify="right", no_wrap=True, min_width=3)
    if wide:
        t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=24)
    for head, w in (("util", 4), ("memory", 8), ("power", 8), ("temp", 4), ("sm", 4)):
        t.add_column(head, justify="right", no_wrap=True, min_width=w)
    # The rest of the width goes to the two text columns (ellipsis past it).
    node_w = min(max((len(n.node) for n, _ in rows), default=4), 20 if wide else 12)
    name_w = min(max((len(g.name or "-") for _, g in rows), default=4), 24) if wide else 0
    used = node_w + name_w + sum(c.min_width or 0 for c in t.columns[1:] if c.header != "name") + len(t.columns) + 1
    throttle_w = min(34 if wide else 14, max(8, *(len(_throttle_text(g, wide)) for _, g in rows)))
    t.add_column("throttle", no_wrap=True, overflow="ellipsis", max_width=throttle_w)
    t.add_column("events", no_wrap=True, overflow="ellipsis", max_width=max(8, width - used - throttle_w))
    last = None
    for n, g in rows:
        if last is not None and n.node != last:
            t.add_section()
        power = "-" if g.power_w is None else f"{g.power_w:.0f}/{_num(g.power_limit_w)}W"
        throttle = Text(_throttle_text(g, wide), style="yellow" if set(g.throttle) - {"idle"} else "")
        cells = [n.node if n.node != last else "", str(g.index)]
        if wide:
            cells.append(g.name or "-")
        cells += [
            _num(g.util_pct, suffix="%"),
            _gib(g.mem_used, g.mem_total),
            power,
            _num(g.temp_c, suffix="C"),
            _num(g.sm_mhz),
            throttle,
            _events(g, not wide),
        ]
        t.add_row(*cells)
        last = n.node
    return t


def _job_state(j: JobOnNode) -> Text:
    if j.state == "exited":
        return Text(f"exited {j.exit_code}", style="green" if j.exit_code == 0 else "red")
    return Text(j.state, style={"running": "green", "unknown": "red"}.get(j.state, "yellow"))


def jobs_table(frame: Frame, width: int) -> Table | None:
    rows = [j for n in frame.nodes for j in n.jobs]
    if not rows:
        return None
    narrow = width < WIDE
    t = _table()
    t.add_column("job", no_wrap=True, overflow="ellipsis", max_width=14 if narrow else 30)
    t.add_column("node", no_wrap=True, overflow="ellipsis", max_width=12 if narrow else 20)
    t.add_column("state", no_wrap=True)
    t.add_column("steps/s", justify="right", no_wrap=True)
    t.add_column("step", justify="right", no_wrap=True)
    t.add_column("last log", justify="right", no_wrap=True)
    t.add_column("last metric", no_wrap=True, overflow="ellipsis", ratio=1, min_width=8)
    t.add_column("", no_wrap=True)
    for j in sorted(rows, key=lambda j: (j.job, j.node)):
        mark = Text(STRAGGLER, style="bold magenta") if j.straggler else Text("")
        t.add_row(
            j.job,
            j.node,
            _job_state(j),
            _num(j.steps_per_s, "{:.2f}"),
            _num(j.step),
            _ago(j.since_log_s),
            j.last_metric or "-",
            mark,
        )
    return t


def header(frame: Frame, interval: float | None) -> Text:
    up = sum(1 for n in frame.nodes if n.reachable)
    gpus = sum(len(n.gpus) for n in frame.nodes)
    clock = time.strftime("%H:%M:%S", time.localtime(frame.t))
    text = f"corral top · {up}/{len(frame.nodes)} nodes up · {gpus} GPUs · {clock}"
    if up < len(frame.nodes) or any(n.waiting_s is not None and n.waiting_s >= 1 for n in frame.nodes):
        # at 32 nodes the odd one is named here, not searched for among the rows
        text += " · " + fold((n.node, node_state(n).plain.split()[0]) for n in frame.nodes)
    if interval:
        text += f" · every {interval:g}s · q quits"
    return Text(text, style="bold")


def problems(frame: Frame) -> list[str]:
    """Every reason a cell may cut short, whole, one line each: unreachable nodes, GPU throttle reasons and events."""
    lines = [f"{n.node}: unreachable: {n.error}" for n in frame.nodes if not n.reachable and n.error]
    for n in frame.nodes:
        for g in n.gpus if n.reachable else []:
            bad = [w for w in g.throttle if w != "idle"]
            events = list(g.events) + [f"ECC +{v} {k}" for k, v in g.ecc_new.items()]
            if bad:
                lines.append(f"{n.node} gpu {g.index}: throttled: {', '.join(bad)}")
            if events:
                lines.append(f"{n.node} gpu {g.index}: {'; '.join(events)}")
    return lines


def render(frame: Frame, width: int, interval: float | None = None, *, whole_reasons: bool = False) -> RenderableType:
    """The screen; ``whole_reasons`` (a frame printed off a terminal, where nobody widens the window) adds every
    reason a cell cut short below the tables, whole."""
    parts: list[RenderableType] = [header(frame, interval), nodes_table(frame, width)]
    for extra in (gpus_table(frame, width), jobs_table(frame, width)):
        if extra is not None:
            parts += [Text(""), extra]
    for job, node in frame.stragglers.items():
        why = next((j.straggler for n in frame.nodes for j in n.jobs if j.job == job and j.node == node), "")
        parts.append(Text(f"straggler: {job} on {node} ({why})", style="magenta"))
    for j in sorted((j for n in frame.nodes for j in n.jobs if j.watchdog), key=lambda j: j.job):
        parts.append(Text(f"watchdog: {j.job} {j.watchdog}", style="bold red"))
    if whole_reasons and (lines := problems(frame)):
        parts += [Text(""), *(Text(line) for line in lines)]
    return Group(*parts)

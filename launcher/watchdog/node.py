"""The hang watchdog's process on a node, started by the job's wrapper beside the job (docs/WATCHDOG.md).

``python3 -m launcher.watchdog.node CONFIG.json WRAPPER_PID``, from a copy of this package the
launch wrote into the run's state directory (nodes need no corral install), in a session of its
own so that it outlives the tmux pane long enough to finish what it started. Standard library
only. It ends when the wrapper ends.

Every node samples its own ranks (``Sampler``: ``/proc`` and the ranks' progress marks, no
login, no subprocess) every ``interval`` seconds. The watchdog of node rank 0 is the **leader**:
it listens on a TCP port (the first free one from the rendezvous port + 1) and the others send
it their samples over one kept connection; the reply carries the leader's orders (dump, stop,
restart). The leader alone decides (``judge.judge_hang``, ``judge.choose_suspects``), writes the
dumps, the event and the state into its run directory, and appends one line to its log. So the
watchdog acts while no launcher is connected, and logs into nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from launcher.watchdog import judge, procs, pyspy

log = logging.getLogger("corral.watchdog")

PORT_TRIES = 32
"""The leader takes the first free port of this many after the rendezvous port; followers try them in order."""
DUMP_WAIT_S = 60.0
"""How long the leader waits for every node's dumps before it writes what it has."""
STOP_GRACE_S = 10.0
WRAPPER_CHECK_S = 1.0
"""How often the watchdog checks that the job's wrapper still runs (one /proc read)."""
LINE_PREFIX = "corral watchdog"


@dataclass
class Config:
    run_id: str
    name: str
    node: str
    node_rank: int
    nnodes: int
    run_dir: str
    log_path: str
    leader_host: str
    port: int
    hang_after: float
    first_step_grace: float
    on_hang: str
    interval: float
    max_restarts: int
    start_after: float = 0.0
    """When the wrapper started this process after the job (informational: the wrapper waits)."""
    straggler_after: float | None = None
    venv_bin: str | None = None
    native: bool = True

    @classmethod
    def load(cls, path: str, env: dict[str, str] | None = None) -> Config:
        with open(path, encoding="utf-8") as f:
            return cls(**runtime_settings(json.load(f), os.environ if env is None else env))

    def policy(self) -> judge.Policy:
        return judge.Policy(self.hang_after, max(self.first_step_grace, self.hang_after), self.straggler_after)


def runtime_settings(data: dict[str, Any], env: Any) -> dict[str, Any]:
    """The node's own fields the plan could not know (Slurm: they exist only in the allocation),
    from what the wrapper exports; the leader is the rendezvous host, its port the next one."""
    out = dict(data)
    if out.get("node") is None:
        out["node"] = env["CORRAL_NODE"]
    if out.get("node_rank") is None:
        out["node_rank"] = int(env["CORRAL_NODE_RANK"])
    if out.get("nnodes") is None:
        out["nnodes"] = int(env["CORRAL_NNODES"])
    if out.get("leader_host") is None or out.get("port") is None:
        host, _, port = env["CORRAL_RDZV_ENDPOINT"].rpartition(":")
        out["leader_host"], out["port"] = host, int(port) + 1
    if out.get("log_path") is None:
        out["log_path"] = os.path.join(out["run_dir"], "logs", f"{out['node']}.log")
    return out


def utc_stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _append(path: str, text: str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return len(data)


# ---------------------------------------------------------------------------- sampling


class Sampler:
    """This node's ranks, progress marks and log silence, read from files and ``/proc`` only."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workers = procs.Workers(cfg.run_id, cfg.node)
        self.boot = procs.boot_time()
        self.own_bytes = 0
        """Bytes the watchdog itself appended to the log (they are not the job's output)."""
        self.log_size: int | None = None
        self.log_grew_at = time.time()

    def _mark(self, rank: int) -> dict[str, Any]:
        from launcher.heartbeat import progress_path

        try:
            with open(progress_path(self.cfg.run_dir, self.cfg.node, rank), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _log_quiet(self, now: float) -> float:
        try:
            st = os.stat(self.cfg.log_path)
            size, mtime = st.st_size, st.st_mtime
        except OSError:
            size, mtime = 0, now
        if self.log_size is None:  # the log's own time, not this process's: the watchdog starts late
            self.log_size = size
            self.log_grew_at = min(now, mtime)
        elif size - self.own_bytes > self.log_size:
            self.log_grew_at = now
        self.log_size = size - self.own_bytes
        return now - self.log_grew_at

    def sample(self) -> dict[str, Any]:
        now = time.time()
        ranks = []
        youngest = None
        for p, state, start in self.workers.current():
            started = self.boot + start
            youngest = started if youngest is None else max(youngest, started)
            mark = self._mark(p.rank or 0)
            # a mark left by the previous attempt's process is not progress, nor is a dead process's
            mine = mark.get("pid") == p.pid and state not in ("gone", "Z", "X")
            ranks.append(
                {
                    "node": self.cfg.node,
                    "rank": p.rank,
                    "local_rank": p.local_rank,
                    "pid": p.pid,
                    "state": state,
                    "step": mark.get("step") if mine and "t" in mark else None,
                    "step_age_s": round(now - mark["t"], 3) if mine and "t" in mark else None,
                    "phase": mark.get("phase", "step") if mine else "step",
                    "phase_age_s": round(now - mark["phase_t"], 3) if mine and "phase_t" in mark else None,
                }
            )
        return {
            "node": self.cfg.node,
            "ranks": ranks,
            "attempt_age_s": round(now - youngest, 3) if youngest else None,
            "log_quiet_s": round(self._log_quiet(now), 3),
        }


def node_sample(data: dict[str, Any], stale_s: float = 0.0) -> judge.NodeSample:
    ranks = tuple(judge.RankSample(**r) for r in data.get("ranks", []))
    return judge.NodeSample(data["node"], ranks, data.get("attempt_age_s"), data.get("log_quiet_s"), stale_s)


# ---------------------------------------------------------------------------- actions on this node


def dump_ranks(cfg: Config, ranks: list[dict[str, Any]], hang: str) -> dict[str, dict[str, str | None]]:
    """py-spy of every listed rank of this node; each kept in ``<run dir>/hangs/<hang>/<node>-rank<r>.txt``."""
    binary = pyspy.find_pyspy(cfg.venv_bin)
    out: dict[str, dict[str, str | None]] = {}
    for r in ranks:
        state = r.get("state", "")
        if state in ("gone", "Z", "X"):
            text, error = None, f"process {r['pid']} is {judge.NOT_RUNNING.get(state, state)}: nothing to dump"
        else:
            text, error = pyspy.dump(binary, r["pid"], stopped=state in ("T", "t"), native=cfg.native)
        out[str(r["rank"])] = {"text": text, "error": error}
        write_stack(cfg.run_dir, hang, cfg.node, r["rank"], text, error)
    return out


def write_stack(run_dir: str, hang: str, node: str, rank: int, text: str | None, error: str | None) -> str:
    path = os.path.join(run_dir, "hangs", hang, f"{node}-rank{rank}.txt")
    _write_atomic(path, text if text is not None else f"no stack: {error}\n")
    return path


def act(cfg: Config, order: dict[str, Any]) -> None:
    """Carry out ``stop`` (end the job's processes on this node, as ``corral stop`` does) or
    ``restart`` (SIGKILL the listed workers: torchrun sees them fail and restarts the group)."""
    if order["do"] == "stop":
        pids = [p.pid for p in procs.job_processes(cfg.run_id, cfg.node)]
        killed = procs.end_processes(pids, STOP_GRACE_S)
        log.info("stop: ended %d process(es), %d needed SIGKILL", len(pids), len(killed))
    elif order["do"] == "restart":
        pids = [int(p) for p in order.get("pids", {}).get(cfg.node, [])]
        procs.signal_pids(pids, 9)
        log.info("restart: SIGKILL to workers %s", pids)


# ---------------------------------------------------------------------------- the leader

PORT_RESERVATION_S = 300


def claim_port(port: int) -> bool:
    """Take part in the node agent's port reservations (``launcher/agent/node_agent.py: free_port``):
    a launch's rendezvous port is claimed by a file minutes before torchrun binds it, and the
    leader must not take such a port in between. Same directory, same names, same expiry."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    d = os.path.join(base, "corral", "ports")
    path = os.path.join(d, f"{socket.gethostname()}-{port}")
    try:
        os.makedirs(d, exist_ok=True)
        if time.time() - os.path.getmtime(path) > PORT_RESERVATION_S:
            os.unlink(path)
    except OSError:
        pass
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False
    except OSError:
        return True  # no place for claims: the bind test alone decides, as before claims existed


@dataclass
class Hang:
    """The hang being handled (one at a time)."""

    id: str
    at: float
    verdict: judge.Verdict
    ranks: list[dict[str, Any]]
    stacks: dict[tuple[str, int], dict[str, str | None]] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)


class Leader:
    def __init__(self, cfg: Config, sampler: Sampler) -> None:
        self.cfg, self.sampler = cfg, sampler
        self.lock = threading.Lock()
        self.latest: dict[str, tuple[dict[str, Any], float]] = {}
        self.orders: dict[str, list[dict[str, Any]]] = {}
        self.hang: Hang | None = None
        self.hung = False
        self.restarts = 0
        self.settle_until = 0.0
        """After an action, judge again only on fresh samples (the old ones still show the hang)."""
        self.retired: set[tuple[str, int]] = set()
        """(node, pid) of the workers a restart ended: a late sample still listing them is not judged."""
        self.behind_since: dict[str, float] = {}
        self.straggling: set[str] = set()
        self.wd_dir = os.path.join(cfg.run_dir, "watchdog")
        self.state_name = "watching"
        self.server = self._listen()
        self.write_state("watching")

    # -- the socket side

    def _listen(self) -> socket.socket:
        last: OSError | None = None
        for port in range(self.cfg.port, self.cfg.port + PORT_TRIES):
            if not claim_port(port):
                continue  # handed to another launch's rendezvous, which may not have bound it yet
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError as exc:
                s.close()
                last = exc
                continue
            s.listen(64)
            log.info("leader listening on port %d", port)
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()
            return s
        raise SystemExit(f"{LINE_PREFIX}: no free port in {self.cfg.port}..{self.cfg.port + PORT_TRIES - 1} ({last})")

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for raw in f:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    return
                reply = self.receive(msg)
                if reply is None:
                    return
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def receive(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """One follower message -> the reply (None: hang up on a stranger)."""
        if msg.get("run_id") != self.cfg.run_id:
            return None
        node = msg.get("node", "")
        if msg.get("op") == "hello":
            return {"ok": True}
        with self.lock:
            if msg.get("op") == "sample":
                self.latest[node] = (msg["sample"], time.monotonic())
            if msg.get("op") == "dumped" and self.hang and msg.get("hang") == self.hang.id:
                for rank, res in msg.get("stacks", {}).items():
                    self.hang.stacks[(node, int(rank))] = res
                self.hang.waiting.discard(node)
            orders, self.orders[node] = self.orders.get(node, []), []
        return {"ok": True, "orders": orders}

    def close(self) -> None:
        self.server.close()

    # -- records

    def write_state(self, state: str, **extra: Any) -> None:
        self.state_name = state
        body = {"state": state, "at": time.time(), "restarts": self.restarts, **extra}
        _write_atomic(os.path.join(self.wd_dir, "state.json"), json.dumps(body) + "\n")

    def event(self, record: dict[str, Any], line: str) -> None:
        _append(os.path.join(self.wd_dir, "events.jsonl"), json.dumps(record) + "\n")
        self.sampler.own_bytes += _append(self.cfg.log_path, f"[{self.cfg.node}] {LINE_PREFIX}: {line}\n")

    # -- the loop's work

    def samples(self) -> list[judge.NodeSample]:
        now = time.monotonic()
        with self.lock:
            out = [node_sample(s, now - t) for s, t in self.latest.values()]
        if not self.retired:
            return out
        return [
            judge.NodeSample(
                s.node,
                tuple(r for r in s.ranks if (r.node, r.pid) not in self.retired),
                s.attempt_age_s,
                s.log_quiet_s,
                s.stale_s,
            )
            for s in out
        ]

    def tick(self) -> None:
        own = self.sampler.sample()
        with self.lock:
            self.latest[self.cfg.node] = (own, time.monotonic())
        samples = self.samples()
        if self.hang is not None:
            self._collect_dumps()
            return
        if time.monotonic() < self.settle_until:
            return
        verdict = judge.judge_hang(samples, self.cfg.policy())
        if self.hung:
            if not verdict.hung and verdict.signal in ("report", "log", "checkpoint"):
                self.hung = False
                self.write_state("watching", resumed=True)
            return
        if self.state_name == "restarting" and verdict.signal in ("report", "checkpoint") and not verdict.hung:
            self.write_state("watching", resumed=True)  # the restarted group advances
        self._watch_stragglers(samples)
        if verdict.hung:
            self._start_hang(verdict)

    def _start_hang(self, verdict: judge.Verdict) -> None:
        now = time.time()
        with self.lock:
            ranks = [
                r
                for s, _ in self.latest.values()
                for r in s.get("ranks", [])
                if (r["node"], r["pid"]) not in self.retired
            ]
            nodes = sorted({r["node"] for r in ranks})
            hang = Hang(utc_stamp(now), now, verdict, ranks, waiting=set(nodes) - {self.cfg.node})
            for n in hang.waiting:
                self.orders.setdefault(n, []).append({"do": "dump", "hang": hang.id})
            self.hang = hang
        log.warning("hang: %s; dumping every rank", verdict.reason)
        mine = [r for r in ranks if r["node"] == self.cfg.node]
        for rank, res in dump_ranks(self.cfg, mine, hang.id).items():
            hang.stacks[(self.cfg.node, int(rank))] = res
        self._collect_dumps()

    def _collect_dumps(self) -> None:
        hang = self.hang
        assert hang is not None
        with self.lock:
            waiting = set(hang.waiting)
        if waiting and time.time() - hang.at < DUMP_WAIT_S:
            return
        self.hang = None
        self._decide(hang, waiting)

    def _decide(self, hang: Hang, missing: set[str]) -> None:
        ranks = [judge.RankSample(**r) for r in hang.ranks]
        stacks = {k: v.get("text") for k, v in hang.stacks.items()}
        for r in ranks:  # the leader keeps every node's stacks, whatever the run directory's sharing
            res = hang.stacks.get((r.node, r.rank))
            if r.node != self.cfg.node:
                error = f"node {r.node} sent no dump within {DUMP_WAIT_S:g} s" if res is None else res.get("error")
                write_stack(self.cfg.run_dir, hang.id, r.node, r.rank, (res or {}).get("text"), error)
        suspects = judge.choose_suspects(ranks, stacks)
        action, why = judge.choose_action(self.cfg.on_hang, self.restarts, self.cfg.max_restarts)
        note = f" ({why})" if why else ""
        stack_dir = os.path.join(self.cfg.run_dir, "hangs", hang.id)
        undumped = {f"{n}-rank{r}": v["error"] for (n, r), v in sorted(hang.stacks.items()) if v.get("error")}
        record = {
            "kind": "hang",
            "at": hang.at,
            "hang": hang.id,
            "nodes": sorted({s.node for s in suspects}),
            "ranks": sorted({s.rank for s in suspects}),
            "suspects": [asdict(s) for s in suspects],
            "evidence": [f"{s.node} rank {s.rank}: {s.evidence}" for s in suspects] or ["no rank stands out"],
            "reason": hang.verdict.reason,
            "signal": hang.verdict.signal,
            "quiet_s": round(hang.verdict.quiet_s, 1),
            "limit_s": hang.verdict.limit_s,
            "stacks": stack_dir,
            "not_dumped": {**undumped, **{n: "sent no dump" for n in sorted(missing)}},
            "action": action,
        }
        who = "; ".join(record["evidence"])
        self.event(record, f"hang: {hang.verdict.reason}; suspect {who}; stacks in {stack_dir}; action {action}{note}")
        self.hung = action != "restart"
        suspect = {"nodes": record["nodes"], "ranks": record["ranks"], "evidence": record["evidence"]}
        if action == "restart":
            self.restarts += 1
            pids: dict[str, list[int]] = {}
            for r in ranks:
                pids.setdefault(r.node, []).append(r.pid)
                self.retired.add((r.node, r.pid))
            self.write_state("restarting", hang=hang.id, **suspect)
            self._order({"do": "restart", "pids": pids})
        else:
            self.write_state("hung", hang=hang.id, action=action, **suspect)
            if action == "stop":
                self._order({"do": "stop"})
        with self.lock:
            self.latest = {}
        self.settle_until = time.monotonic() + 2 * self.cfg.interval

    def _order(self, order: dict[str, Any]) -> None:
        with self.lock:
            for n in self.latest:
                if n != self.cfg.node:
                    self.orders.setdefault(n, []).append(order)
        if order["do"] == "stop":
            # the followers fetch the order with their next sample; give them that long before this node's end
            time.sleep(min(2 * self.cfg.interval, 10))
        act(self.cfg, order)

    def _watch_stragglers(self, samples: list[judge.NodeSample]) -> None:
        now = time.time()
        behind = judge.behind_nodes(samples)
        self.behind_since = {n: self.behind_since.get(n, now) for n in behind}
        self.straggling &= behind
        for n in judge.stragglers(self.behind_since, now, self.cfg.policy()):
            if n in self.straggling:
                continue
            self.straggling.add(n)
            record = {
                "kind": "straggler",
                "at": now,
                "nodes": [n],
                "ranks": sorted(r.rank for s in samples if s.node == n for r in s.ranks),
                "evidence": [f"{n} behind the leading step for {now - self.behind_since[n]:.0f} s"],
                "stacks": None,
                "action": "none",
            }
            self.event(record, f"straggler: {record['evidence'][0]}")


# ---------------------------------------------------------------------------- a follower


class Follower:
    def __init__(self, cfg: Config, sampler: Sampler) -> None:
        self.cfg, self.sampler = cfg, sampler
        self.conn: Any = None
        self.outbox: list[dict[str, Any]] = []

    def _connect(self) -> Any:
        for port in range(self.cfg.port, self.cfg.port + PORT_TRIES):
            try:
                s = socket.create_connection((self.cfg.leader_host, port), timeout=5)
            except TimeoutError:
                return None  # the host does not answer at all: try again next interval, not 32 times now
            except OSError:
                continue
            f = s.makefile("rwb")
            try:
                f.write((json.dumps({"op": "hello", "run_id": self.cfg.run_id, "node": self.cfg.node}) + "\n").encode())
                f.flush()
                if json.loads(f.readline() or b"{}").get("ok"):
                    log.info("connected to the leader on %s:%d", self.cfg.leader_host, port)
                    return (s, f)
            except (OSError, ValueError):
                pass
            f.close()
            s.close()
        return None

    def _send(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        if self.conn is None:
            self.conn = self._connect()
            if self.conn is None:
                return None
        s, f = self.conn
        try:
            f.write((json.dumps({**msg, "run_id": self.cfg.run_id, "node": self.cfg.node}) + "\n").encode())
            f.flush()
            return json.loads(f.readline() or b"null")
        except (OSError, ValueError):
            f.close()
            s.close()
            self.conn = None
            return None

    def tick(self) -> None:
        sample = self.sampler.sample()
        while self.outbox:
            if self._send(self.outbox[0]) is None:
                return
            self.outbox.pop(0)
        reply = self._send({"op": "sample", "sample": sample})
        for order in (reply or {}).get("orders", []):
            if order["do"] == "dump":
                stacks = dump_ranks(self.cfg, sample["ranks"], order["hang"])
                self.outbox.append({"op": "dumped", "hang": order["hang"], "stacks": stacks})
            else:
                act(self.cfg, order)

    def close(self) -> None:
        if self.conn is not None:
            for x in reversed(self.conn):
                x.close()


# ---------------------------------------------------------------------------- main


def alive(pid: int) -> bool:
    st = procs.read_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def run(cfg: Config, wrapper_pid: int) -> int:
    sampler = Sampler(cfg)
    role: Leader | Follower = Leader(cfg, sampler) if cfg.node_rank == 0 else Follower(cfg, sampler)
    try:
        while alive(wrapper_pid):
            t0 = time.monotonic()
            try:
                role.tick()
            except Exception:  # one bad sample must not end the watch
                log.exception("watchdog tick failed")
            # wait out the interval in slices: the watchdog ends within a second of the job
            deadline = t0 + max(0.05, cfg.interval)
            while alive(wrapper_pid) and time.monotonic() < deadline:
                time.sleep(min(WRAPPER_CHECK_S, max(0.0, deadline - time.monotonic())))
    finally:
        role.close()
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    cfg = Config.load(argv[0])
    return run(cfg, int(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

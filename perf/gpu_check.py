"""The GPU acceptance run: every GPU path of corral, proven in one run of under 8 minutes.

    make gpu-check [OUT=DIR]                     (on the GPU machine: installs from .gpu-bundle first)
    python -m perf.gpu_check [--cpu-only] [--out DIR] [--results DIR]

Steps, each in its own process group with its own time budget (a hang in one cannot eat the run;
what runs past its budget is stopped and reported), in this order:

  environment         versions (GPU, driver, torch, CUDA, NCCL), the modules and tmux corral needs
  gpu_tests           pytest -m gpu on the GPU test files (on a GPU a skip counts as a failure)
  bench_node          corral bench node --record: inventory, health checks, GEMM, copies, judged
  allreduce           corral bench allreduce --backend nccl (world size 1 on one GPU)
  checkpoint          async checkpoint of a 2 GiB CUDA state while a training loop runs
  launch              corral launch of the demo with backend auto on this machine
  overhead_node       bench node's bf16 GEMM and device copy against plain CUDA-event loops
  overhead_allreduce  the all-reduce harness against a bare dist.all_reduce loop at >= 64 MiB

``--steps a,b`` runs only those (after the environment step), e.g. to rerun the steps that failed.

Without a GPU (or with --cpu-only) every GPU step is skipped, each with its reason. Appends the run
to the GPU model's measurement file in --results (docs/results/gpu/gpu-check-GPU.json, with its
summary at the top of gpu-check-GPU.md; perf/results_log.py), copies them and the logs to
--out / $OUT when given, and the real NVML reading to tests/fixtures/nvml/ as a fixture candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perf import gpu_verdicts as gv
from perf import results_log

REPO = Path(__file__).resolve().parents[1]

TOTAL_BUDGET_S = 450.0
"""The whole run stays under 8 minutes: each step gets min(its budget, what is left of this)."""
GPU_TEST_FILES = ("tests/test_gpu_paths.py", "tests/test_bench_node_gpu.py", "tests/test_top_gpu.py")
ALLOW_VOLATILE = {"CORRAL_CKPT_ALLOW_VOLATILE": "1"}
"""The GPU machine's disk may be an overlay: checkpoints there are allowed (with a warning) because
the run checks the GPU paths, not durability across reboots (the environment step records the disk)."""
NEEDED_MODULES = ("pydantic", "libtmux", "docker", "isal", "typer", "rich", "yaml", "pynvml", "pytest", "hypothesis")
OUT_FILES_MAX = 8


@dataclass
class Proc:
    rc: int | None
    seconds: float
    timed_out: bool
    log: Path


def run_step_process(argv: list[str], log: Path, timeout_s: float, env: dict | None = None) -> Proc:
    """Run ``argv`` in a new process group with output to ``log``; stop the group when the budget runs out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(argv)}\n".encode())
        f.flush()
        proc = subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop_group(proc)
            rc = proc.returncode
    return Proc(rc, time.monotonic() - t0, timed_out, log)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's own process group (we started it), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---- the environment step (runs in a child: importing torch may hang on a broken driver) ----


def environment() -> dict:
    """Versions and prerequisites of this machine, as one JSON document."""
    env: dict = {"python": platform.python_version(), "hostname": socket.gethostname(), "executable": sys.executable}
    missing = []
    for mod in NEEDED_MODULES:
        try:
            __import__(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure means the module is unusable
            missing.append(f"{mod} ({type(exc).__name__})")
    env["missing_modules"] = missing
    try:
        from launcher.checkpoint.fsinfo import check_root

        env["checkpoint_disk"] = "; ".join(check_root(str(REPO / "runs"))) or "a persistent disk"
    except Exception as exc:  # noqa: BLE001 - context only
        env["checkpoint_disk"] = f"unknown ({type(exc).__name__})"
    tmux = shutil.which("tmux")
    env["tmux"] = subprocess.run([tmux, "-V"], capture_output=True, text=True).stdout.strip() if tmux else None
    try:
        import torch

        env["torch"], env["cuda"] = torch.__version__, torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        env["gpu_count"] = torch.cuda.device_count() if env["cuda_available"] else 0
        if env["gpu_count"]:
            env["gpu_name"] = torch.cuda.get_device_name(0)
            env["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
    except Exception as exc:  # noqa: BLE001
        env["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import pynvml

        pynvml.nvmlInit()
        env["driver"] = _str(pynvml.nvmlSystemGetDriverVersion())
        env["nvml_gpus"] = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - no driver is an answer, not an error
        env["nvml_error"] = f"{type(exc).__name__}: {exc}"
    return env


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# ---- the run -------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.work = Path(args.work or REPO / "runs" / f"gpu-check-{self.stamp}").resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + args.budget
        self.py = sys.executable
        self.env: dict = {}
        self.steps: list[gv.StepResult] = []
        self.gpu_skip: str | None = None
        self.extra_files: list[Path] = []
        self.started_wall = time.time()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def proc(self, name: str, argv: list[str], budget: float, env: dict | None = None) -> Proc:
        p = run_step_process(argv, self.work / f"{name}.log", min(budget, self.left() - 5), env)
        if p.timed_out:
            self.stop_our_jobs(p.log)
        return p

    def stop_our_jobs(self, log: Path) -> None:
        """A step stopped at its budget leaves the jobs it launched running in tmux: stop the ones this run started."""
        try:
            from launcher.config import load_cluster
            from launcher.jobs import all_records

            names = [r.name for r in all_records(load_cluster(None)) if r.started_at >= self.started_wall]
        except Exception as exc:  # noqa: BLE001 - best effort; the log says what happened
            names = []
            with open(log, "a") as f:
                f.write(f"gpu-check: could not list this run's jobs: {type(exc).__name__}: {exc}\n")
        for name in names:
            run_step_process([self.py, "-m", "launcher.cli", "stop", name], log, 30)

    def step(
        self, name: str, title: str, budget: float, needs_gpu: bool, body: Callable[[float], gv.StepResult]
    ) -> None:
        if self.args.steps and name != "environment" and name not in self.args.steps:
            result = gv.skipped(name, title, f"not selected (--steps {','.join(self.args.steps)})", budget)
        elif needs_gpu and self.gpu_skip:
            result = gv.skipped(name, title, self.gpu_skip, budget)
        elif self.left() < 20:
            result = gv.skipped(
                name, title, f"no time left: the run's {self.args.budget:.0f} s budget is spent", budget
            )
        else:
            t0 = time.monotonic()
            try:
                result = body(budget)
            except Exception as exc:  # noqa: BLE001 - one broken step must not lose the others' results
                result = gv.StepResult(name, title, gv.FAIL, reason=f"{type(exc).__name__}: {exc}"[:300])
            result.seconds = round(time.monotonic() - t0, 1)
        result.budget_s = budget
        print(
            f"gpu-check: {name}: {result.status.upper()}"
            + (f" ({result.reason})" if result.reason else "")
            + f" [{result.seconds:.0f} s]",
            flush=True,
        )
        self.steps.append(result)

    def finish(
        self, name: str, title: str, p: Proc, figures: list[gv.Figure], details: dict | None = None
    ) -> gv.StepResult:
        status, reason = gv.step_status(figures, p.rc, p.timed_out)
        if status == gv.FAIL and not figures:
            reason += f"; log tail: {tail(p.log, 300)!r}"
        return gv.StepResult(
            name, title, status, reason, figures=figures, details={"log": str(p.log), **(details or {})}
        )

    # ---- steps ----

    def s_environment(self, budget: float) -> gv.StepResult:
        out = self.work / "environment.json"
        p = self.proc("environment", [self.py, "-m", "perf.gpu_check", "--environment-json", str(out)], budget)
        self.env = json.loads(out.read_text()) if out.exists() else {"error": tail(p.log, 500)}
        figs = [
            gv.equals(
                "modules corral needs, missing", ", ".join(self.env.get("missing_modules", ["?"])) or "none", "none"
            ),
            gv.Figure("tmux", self.env.get("tmux"), verdict=gv.PASS if self.env.get("tmux") else gv.FAIL),
        ]
        if self.args.cpu_only:
            self.gpu_skip = "--cpu-only: GPU steps not run (the CPU path of make gpu-check)"
        elif not self.env.get("gpu_count"):
            why = self.env.get("torch_error") or f"torch.cuda.is_available() is {self.env.get('cuda_available')}"
            self.gpu_skip = (
                f"no CUDA GPU: {why} (torch {self.env.get('torch', '-')}, CUDA {self.env.get('cuda') or 'none'}, "
                f"NVML: {self.env.get('nvml_error') or 'ok'})"
            )
        return self.finish("environment", "Environment", p, figs, {"environment": self.env})

    def s_gpu_tests(self, budget: float) -> gv.StepResult:
        xml = self.work / "gpu-tests.xml"
        argv = [
            self.py,
            "-m",
            "pytest",
            "-m",
            "gpu",
            *GPU_TEST_FILES,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml}",
            "-o",
            "junit_logging=no",
            "--timeout",
            str(int(budget - 10)),
        ]
        p = self.proc("gpu_tests", argv, budget, {"CORRAL_CAPTURE_DIR": str(self.work), **ALLOW_VOLATILE})
        figs = gv.judge_junit(xml.read_text()) if xml.exists() else []
        return self.finish("gpu_tests", "GPU tests (pytest -m gpu)", p, figs)

    def s_bench_node(self, budget: float) -> gv.StepResult:
        rec, rep = self.work / "bench-node.record.json", self.work / "bench-node.json"
        p = self.proc(
            "bench_node",
            [self.py, "-m", "launcher.cli", "bench", "node", "--record", str(rec), "--json-out", str(rep)],
            budget,
        )
        figs = gv.judge_node_report(json.loads(rep.read_text())) if rep.exists() else []
        if rec.exists():
            self.save_nvml_fixture(json.loads(rec.read_text()))
        # exit 1 is bench node's verdict "a check failed", already in the figures
        return self.finish(
            "bench_node",
            "bench node (judged against the spec table and anchors)",
            Proc(0 if p.rc in (0, 1) and figs else p.rc, p.seconds, p.timed_out, p.log),
            figs,
            {"record": str(rec)},
        )

    def save_nvml_fixture(self, probe: dict) -> None:
        nvml = probe.get("nvml") if isinstance(probe, dict) else None
        if not nvml:
            return
        slug = re.sub(r"[^a-z0-9]+", "_", (self.env.get("gpu_name") or "gpu").lower().removeprefix("nvidia ")).strip(
            "_"
        )
        target = Path(self.args.fixture_dir) / f"captured_{slug}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        about = (
            f"A capture: the NVML reading of `corral bench node --record` on {self.env.get('gpu_name')} "
            f"(driver {self.env.get('driver')}), taken by make gpu-check on {time.strftime('%Y-%m-%d', time.gmtime())}."
        )
        target.write_text(json.dumps({"about": about, **nvml}, indent=1) + "\n")
        self.extra_files.append(target)

    def s_allreduce(self, budget: float) -> gv.StepResult:
        out = self.work / "allreduce.json"
        argv = [
            self.py,
            "-m",
            "launcher.cli",
            "bench",
            "allreduce",
            "--backend",
            "nccl",
            "-b",
            "1M",
            "-e",
            "1G",
            "-f",
            "4",
            "-n",
            "20",
            "-w",
            "5",
            "--json-out",
            str(out),
            "--timeout",
            str(int(budget - 15)),
        ]
        p = self.proc("allreduce", argv, budget)
        result = json.loads(out.read_text()) if out.exists() else None
        figs = gv.judge_allreduce(result) if result else []
        return self.finish(
            "allreduce",
            "bench allreduce --backend nccl (world size 1)",
            p,
            figs,
            {"env": (result or {}).get("env", {}).get("nccl"), "rows": (result or {}).get("rows")},
        )

    def s_checkpoint(self, budget: float) -> gv.StepResult:
        out = self.work / "checkpoint.json"
        argv = [
            self.py,
            "-m",
            "perf.gpu_ckpt",
            "--size",
            self.args.ckpt_size,
            "--root",
            str(self.work / "ckpt-scratch"),
            "--out",
            str(out),
            "--rounds",
            "2",
        ]
        p = self.proc("checkpoint", argv, budget)
        result = json.loads(out.read_text()) if out.exists() else None
        figs = gv.judge_checkpoint(result) if result else []
        if result:
            result.pop("rounds", None)
        return self.finish(
            "checkpoint",
            f"Async checkpoint of a {self.args.ckpt_size} CUDA state during training",
            p,
            figs,
            {"result": result},
        )

    def s_launch(self, budget: float) -> gv.StepResult:
        name = f"gpucheck-{self.stamp}"
        argv = [
            self.py,
            "-m",
            "launcher.cli",
            "launch",
            "configs/demo.yaml",
            "--name",
            name,
            "--set",
            "nproc_per_node=auto",
            "--set",
            "args.1=200",
            "--set",
            "args.3=0.02",
            "--set",
            "env.CORRAL_CKPT_ALLOW_VOLATILE=1",
            "--follow",
        ]
        p = self.proc("launch", argv, budget)
        from launcher.checkpoint.layout import parse_step_dirname
        from launcher.runs.record import RECORD_FILE

        run_dir = REPO / "runs" / name
        record = json.loads((run_dir / RECORD_FILE).read_text()) if (run_dir / RECORD_FILE).exists() else None
        log_text = "".join(tail(Path(n["log_path"]), 20000) for n in (record or {}).get("plan", {}).get("nodes", []))
        ckpt_dir = Path((record or {}).get("plan", {}).get("ckpt_dir") or REPO / "checkpoints" / name)
        steps = (
            sorted(s for s in (parse_step_dirname(x.name) for x in ckpt_dir.glob("*")) if s is not None)
            if ckpt_dir.is_dir()
            else []
        )
        figs = gv.judge_launch(record, log_text, steps)
        return self.finish("launch", "corral launch of the demo, backend auto", p, figs, {"run_dir": str(run_dir)})

    def s_overhead_node(self, budget: float) -> gv.StepResult:
        out = self.work / "overhead-node.json"
        p = self.proc("overhead_node", [self.py, "-m", "perf.gpu_overhead", "--out", str(out), "--rounds", "5"], budget)
        result = json.loads(out.read_text()) if out.exists() else None
        return self.finish(
            "overhead_node",
            "Harness overhead: bench node vs plain loops",
            p,
            gv.judge_node_overhead(result) if result else [],
        )

    def s_overhead_allreduce(self, budget: float) -> gv.StepResult:
        out = self.work / "overhead-allreduce.json"
        argv = [
            self.py,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "1",
            "-m",
            "perf.allreduce_overhead",
            "--backend",
            "nccl",
            "--one-rank",
            "--sizes",
            "64M,256M",
            "--blocks",
            "30",
            "-n",
            "10",
            "--kinds",
            "bare,harness_inplace,harness_outofplace",
            "--out",
            str(out),
        ]
        p = self.proc("overhead_allreduce", argv, budget)
        result = results_log.latest_result(out) if out.exists() else None  # a measurement file (perf/results_log.py)
        if result:
            for row in result.get("rows", []):
                row.pop("block_seconds", None)
        return self.finish(
            "overhead_allreduce",
            "Harness overhead: all-reduce vs a bare dist.all_reduce loop",
            p,
            gv.judge_allreduce_overhead(result) if result else [],
            {"rows": (result or {}).get("rows")},
        )

    # ---- outputs ----

    def document(self, started: str, seconds: float) -> dict:
        steps = [s.to_dict() for s in self.steps]
        return {
            "format": gv.RESULT_FORMAT,
            "started": started,
            "seconds": round(seconds, 1),
            "budget_s": self.args.budget,
            "status": gv.overall(
                [s for s in self.steps if not s.reason.startswith("not selected")], gpu_expected=not self.args.cpu_only
            ),
            "command": self.args.command,
            "cpu_only": self.args.cpu_only,
            "load_average_at_end": list(os.getloadavg()),
            "environment": {
                k: self.env.get(k)
                for k in (
                    "gpu_name",
                    "gpu_count",
                    "driver",
                    "torch",
                    "cuda",
                    "nccl",
                    "python",
                    "hostname",
                    "tmux",
                    "missing_modules",
                    "checkpoint_disk",
                )
            },
            "steps": steps,
        }

    def write(self, doc: dict) -> list[Path]:
        results = Path(self.args.results)
        results.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", (doc["environment"].get("gpu_name") or "no-gpu").lower()).strip("-")
        # One measurement per GPU model: each run is a dated entry in its file, and its summary the newest
        # section of its log (docs/results/README.md).
        js, md = results / f"gpu-check-{slug}.json", results / f"gpu-check-{slug}.md"
        entry = results_log.append_run(
            js,
            json.loads(json.dumps(doc, default=str)),
            measurement=f"the GPU acceptance run (make gpu-check) on {doc['environment'].get('gpu_name') or 'a machine without a GPU'}",
            script="perf/gpu_check.py",
            command=results_log.current_command("perf.gpu_check"),
        )
        previous = md.read_text().split("\n", 2)[2] if md.exists() else ""
        title, _, summary = gv.render_markdown(doc).strip().partition("\n")
        summary = summary.replace("\n## ", "\n### ")  # the run's steps sit under the run's own heading
        md.write_text(
            f"# GPU acceptance runs: {doc['environment'].get('gpu_name') or 'no GPU'}\n\n"
            f"## {title.lstrip('# ')} (run {entry['id']})\n{summary}\n\n{previous}".rstrip()
            + "\n"
        )
        written = [js, md]
        if self.args.out:
            written += self.copy_out(Path(self.args.out), [js, md, *self.extra_files])
        return written

    def copy_out(self, out: Path, files: list[Path]) -> list[Path]:
        """Results, the fixture candidate and one combined log: within the few files a device run brings back."""
        out.mkdir(parents=True, exist_ok=True)
        logs = out / "gpu-check-logs.txt"
        with open(logs, "w") as f:
            for log in sorted(self.work.glob("*.log")):
                f.write(f"===== {log.name}\n{tail(log, 60000)}\n")
        copied = [logs]
        for src in files[: OUT_FILES_MAX - 1]:
            shutil.copy(src, out / src.name)
            copied.append(out / src.name)
        return copied


STEPS = (
    # name (its method is Run.s_<name>), title, budget seconds, needs a GPU
    ("environment", "Environment", 45, False),
    ("gpu_tests", "GPU tests (pytest -m gpu)", 120, True),
    ("bench_node", "bench node (judged against the spec table and anchors)", 70, True),
    ("allreduce", "bench allreduce --backend nccl (world size 1)", 60, True),
    ("checkpoint", "Async checkpoint of a CUDA state during training", 100, True),
    ("launch", "corral launch of the demo, backend auto", 60, True),
    ("overhead_node", "Harness overhead: bench node vs plain loops", 40, True),
    ("overhead_allreduce", "Harness overhead: all-reduce vs a bare dist.all_reduce loop", 45, True),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cpu-only",
        action="store_true",
        help="Run only the checks that need no GPU; report every GPU step as skipped.",
    )
    p.add_argument(
        "--out", default=os.environ.get("OUT") or None, help="Also copy the results and logs here (default: $OUT)."
    )
    p.add_argument("--results", default=str(REPO / "docs" / "results" / "gpu"), help="Where the JSON and markdown go.")
    p.add_argument(
        "--fixture-dir", default=str(REPO / "tests" / "fixtures" / "nvml"), help="Where the NVML reading goes."
    )
    p.add_argument("--work", default=None, help="Logs and scratch (default runs/gpu-check-STAMP).")
    p.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="Seconds for the whole run.")
    p.add_argument("--ckpt-size", default="2G", help="Size of the CUDA state the checkpoint step saves.")
    p.add_argument(
        "--steps",
        type=lambda v: [x for x in v.split(",") if x],
        default=[],
        help="Run only these steps (comma-separated; the environment step always runs), e.g. to rerun what failed.",
    )
    p.add_argument("--command", default="make gpu-check", help="The command to print in the summary.")
    p.add_argument("--environment-json", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = set(args.steps) - {name for name, *_ in STEPS}
    if unknown:
        print(
            f"gpu-check: --steps: unknown step(s) {', '.join(sorted(unknown))}; choose from {', '.join(n for n, *_ in STEPS)}",
            file=sys.stderr,
        )
        return 2
    if args.environment_json:
        Path(args.environment_json).write_text(json.dumps(environment(), indent=1) + "\n")
        return 0
    run = Run(args)
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), time.monotonic()
    for name, title, budget, needs_gpu in STEPS:
        run.step(name, title, budget, needs_gpu, getattr(run, f"s_{name}"))
    doc = run.document(started, time.monotonic() - t0)
    for path in run.write(doc):
        print(f"gpu-check: wrote {path}")
    print(f"gpu-check: {doc['status'].upper()} in {doc['seconds']:.0f} s")
    return 1 if doc["status"] == gv.FAIL else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Checkpointer: atomic, symlink-free, resumable saves that any disk snapshot can restore.

Save protocol (every rank, shared checkpoint root):
  1. rank 0 removes leftovers of crashed saves/removals and creates ``.staging-step-N``
     (the name is derived from the step, so ranks agree on it without talking);
  2. every rank streams its own file ``rank-R-of-W.bin`` into it and fsyncs it;
  3. a gather of (size, crc32) records to rank 0: it is also the barrier after every fsync;
  4. rank 0 writes and fsyncs the manifest, fsyncs the staging dir, renames it to ``step-N``
     (the one atomic publication) and fsyncs the root; then LATEST and retention;
  5. rank 0 broadcasts the outcome so every rank returns or raises the same way.
A crash at any instant leaves either no ``step-N`` or a complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from typing import Any

import torch

from launcher import heartbeat
from launcher.checkpoint import layout
from launcher.checkpoint.durable import (
    Pacer,
    atomic_write_bytes,
    describe_os_error,
    fsync_dir,
    read_file_into,
    write_file_durably,
)
from launcher.checkpoint.errors import CheckpointError, CheckpointPathError, CorruptCheckpoint, WorldSizeMismatch
from launcher.checkpoint.fsinfo import check_root
from launcher.checkpoint.group import default_group
from launcher.checkpoint.inspect import check_checkpoint, remove_checkpoint, scan, step_dirs
from launcher.checkpoint.manifest import FileRecord, Manifest
from launcher.checkpoint.retention import steps_to_remove
from launcher.checkpoint.shardfile import ShardPlan, iter_chunks, parse_shard, plan_shard
from launcher.checkpoint.snapshot import (
    CopyFence,
    allocate_buffer,
    copy_host_tensors,
    copy_to_buffer,
    enqueue_device_copies,
)

log = logging.getLogger(__name__)

ENV_DIR = "CORRAL_CKPT_DIR"
ENV_POLICY = "CORRAL_CKPT_POLICY"
"""JSON of the job file's ``checkpoint`` section (keep_last, keep_every, max_write_mibps)."""
ENV_ALLOW_VOLATILE = "CORRAL_CKPT_ALLOW_VOLATILE"


class Checkpointer:
    """Save and resume a training state under ``root`` (e.g. ``os.environ["CORRAL_CKPT_DIR"]``).

    In a torch.distributed job, construct it on every rank (it creates a gloo group for its
    own collectives) and call ``save``/``load_latest`` on every rank: each rank saves and loads
    its own state (its shard, or a replica).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        keep_last: int | None = None,
        keep_every: int | None = None,
        max_write_mibps: float | None = None,
        allow_volatile: bool | None = None,
        write_latest: bool = True,
        distributed: bool | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``max_write_mibps`` caps the node's write rate (split evenly over the node's ranks).

        ``allow_volatile`` turns the refusal of a root on tmpfs/overlay/under /tmp into a warning
        (default: the environment variable CORRAL_CKPT_ALLOW_VOLATILE=1).
        """
        for name, v in (("keep_last", keep_last), ("keep_every", keep_every)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer (got {v!r})")
        if max_write_mibps is not None and max_write_mibps <= 0:
            raise ValueError(f"max_write_mibps must be positive (got {max_write_mibps!r})")
        self.root = os.path.abspath(os.fspath(root))
        self.keep_last, self.keep_every, self.write_latest = keep_last, keep_every, write_latest
        if allow_volatile is None:
            allow_volatile = os.environ.get(ENV_ALLOW_VOLATILE, "") in ("1", "true", "yes")
        self._check_path(allow_volatile)
        self._group = default_group(distributed, timeout_s)
        per_rank = max_write_mibps / max(1, self._group.local_world_size) if max_write_mibps else None
        self._bytes_per_s = per_rank * (1 << 20) if per_rank else None
        os.makedirs(self.root, exist_ok=True)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffer: torch.Tensor | None = None
        self._snapshot_done = threading.Event()
        self._snapshot_done.set()
        self._device_fence: CopyFence | None = None
        self.last_save_seconds: float | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> Checkpointer:
        """The checkpointer of a job started by ``corral launch``: root and policy from the environment."""
        root = os.environ.get(ENV_DIR)
        if not root:
            raise CheckpointPathError(
                f"{ENV_DIR} is not set", hint="run under `corral launch`, or pass the root to Checkpointer(root)"
            )
        policy = json.loads(os.environ.get(ENV_POLICY) or "{}")
        return cls(root, **{**{k: v for k, v in policy.items() if v is not None}, **overrides})

    @property
    def rank(self) -> int:
        return self._group.rank

    @property
    def world_size(self) -> int:
        return self._group.world_size

    # ---- saving ---------------------------------------------------------------------------

    def save(
        self, step: int, state: Any, *, blocking: bool = True, metadata: dict | None = None, snapshot: str = "now"
    ) -> None:
        """Save ``state`` (nested dicts/lists of tensors and Python values) as checkpoint ``step``.

        Blocking: returns once the checkpoint is durable and published. Non-blocking: returns
        once the CPU tensors are copied into a kept host buffer and the copies of CUDA tensors
        are enqueued on their current streams (later kernels on those streams run after them);
        the write runs in the background (at most one at a time: this call first waits for the
        previous one and raises its error, if any). The state may change as soon as it returns.

        ``snapshot="background"`` (non-blocking only) also moves the CPU copy to the background
        thread, so it overlaps the next forward/backward. The caller must then not modify any
        tensor of ``state`` before :meth:`wait_snapshot` returns; :meth:`guard` makes an
        optimizer's ``step()`` wait for it. Tensors that change during forward (BatchNorm
        running stats) need an explicit ``wait_snapshot()`` before the forward.
        """
        if snapshot not in ("now", "background"):
            raise ValueError(f"snapshot must be 'now' or 'background' (got {snapshot!r})")
        if snapshot == "background" and blocking:
            raise ValueError("snapshot='background' needs blocking=False")
        # The hang watchdog counts a save in progress as progress (however long the volume takes).
        heartbeat.phase("checkpoint")
        try:
            self._save(step, state, blocking=blocking, metadata=metadata, snapshot=snapshot)
        finally:
            heartbeat.phase("step")

    def _save(self, step: int, state: Any, *, blocking: bool, metadata: dict | None, snapshot: str) -> None:
        self.wait()
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < layout.MAX_STEP:
            raise ValueError(f"step must be an integer in [0, {layout.MAX_STEP}) (got {step!r})")
        metadata = dict(metadata or {})
        json.dumps(metadata)  # user metadata lives in the JSON manifest: fail now, not in the background
        self._refuse_existing(step)
        plan = plan_shard(state)
        if blocking:
            self._save_now(step, plan, None, metadata)
            return
        buffer = self._snapshot_buffer(plan.data_len)
        background = snapshot == "background"
        if background:
            # CUDA copies start now on their own stream and overlap the next forward/backward;
            # wait_snapshot() orders the caller's stream after them. CPU copies run in the thread.
            fence = self._device_fence = enqueue_device_copies(plan, buffer, order_current=False)
            self._snapshot_done.clear()
        else:
            self._device_fence = None
            fence = copy_to_buffer(plan, buffer)  # taken now, in stream order for CUDA tensors
        self._thread = threading.Thread(
            target=self._save_in_background,
            args=(step, plan, buffer, metadata, fence, background),
            name=f"ckpt-save-{step}",
        )
        self._thread.start()

    def reserve(self, state: Any) -> None:
        """Allocate and fault in the async snapshot buffer for ``state`` now (e.g. before the loop).

        Optional: without it the first ``save(blocking=False)`` does this inside the call, and
        faulting in fresh pages costs more than the copy (seconds per GiB on a VM whose host
        reclaims freed guest memory). The buffer is then kept for every later async save.
        """
        self.wait()  # the buffer may be in use by the save in flight
        buffer = self._snapshot_buffer(plan_shard(state).data_len)
        buffer.zero_()  # touches every page

    def wait_snapshot(self) -> None:
        """Return once the async save in flight has copied the state (its tensors may change again).

        Only a ``snapshot="background"`` save makes this wait: a default save's snapshot is taken
        (CPU) or ordered before later kernels on the same stream (CUDA) when save() returns.
        For CUDA tensors of a background snapshot the host does not wait for their copies: the
        caller's current stream is made to wait for them, so the next kernels (the step) run after.
        """
        self._snapshot_done.wait()
        fence = self._device_fence
        if fence is not None:
            fence.order_current_streams()

    def guard(self, optimizer: Any) -> Any:
        """Make ``optimizer.step()`` wait for a background snapshot first; returns the hook handle."""
        return optimizer.register_step_pre_hook(lambda *_: self.wait_snapshot())

    def wait(self) -> None:
        """Wait for the async save in flight, if any; raise its error (once) if it failed."""
        if self._thread is not None:
            if self._thread.is_alive():
                heartbeat.phase("checkpoint")  # blocked on the volume, not hung
                try:
                    self._thread.join()
                finally:
                    heartbeat.phase("step")
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self) -> None:
        """Wait for the last save and free the async snapshot buffer."""
        try:
            self.wait()
        finally:
            self._buffer = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _snapshot_buffer(self, nbytes: int) -> torch.Tensor:
        # Kept between saves: allocating and faulting in a fresh buffer costs more than the copy.
        if self._buffer is None or self._buffer.numel() < nbytes or self._buffer.numel() > 2 * nbytes + (64 << 20):
            self._buffer = None
            self._buffer = allocate_buffer(nbytes)
        return self._buffer

    def _save_in_background(
        self, step: int, plan: ShardPlan, buffer: torch.Tensor, metadata: dict, fence: CopyFence, background: bool
    ) -> None:
        """``background``: copy the CPU tensors here first; then wait for the device copies in flight."""
        try:
            if background:
                try:
                    copy_host_tensors(plan, buffer)
                finally:
                    self._snapshot_done.set()
            fence.wait()
            self._save_now(step, plan, buffer, metadata)
        except CheckpointError as exc:
            self._error = exc
        except BaseException as exc:  # noqa: BLE001 - carried to the caller's thread
            self._error = CheckpointError(f"async save of step {step} failed: {type(exc).__name__}: {exc}")
            self._error.__cause__ = exc

    def _refuse_existing(self, step: int) -> None:
        path = os.path.join(self.root, layout.step_dirname(step))
        if os.path.lexists(path) and check_checkpoint(self.root, layout.step_dirname(step), full=False).valid:
            raise CheckpointError(
                f"{path} already holds a valid checkpoint of step {step}; it is never overwritten",
                hint="save under a new step, or remove it first (corral ckpt prune)",
            )

    def _save_now(self, step: int, plan: ShardPlan, buffer: torch.Tensor | None, metadata: dict) -> None:
        g = self._group
        t0 = time.monotonic()
        staging = os.path.join(self.root, layout.staging_dirname(step))
        problem = self._prepare_staging(step, staging) if g.rank == 0 else None
        problem = g.broadcast(problem)
        if problem:
            raise CheckpointError(problem)
        record, problem = self._write_own_file(staging, plan, buffer)
        results = g.gather((record, problem))
        outcome = self._publish(step, staging, results, metadata) if g.rank == 0 else None
        outcome = g.broadcast(outcome)
        if outcome:
            raise CheckpointError(outcome)
        self.last_save_seconds = time.monotonic() - t0
        log.debug("checkpoint step %d saved in %.2fs (%d bytes on this rank)", step, self.last_save_seconds, plan.size)

    def _prepare_staging(self, step: int, staging: str) -> str | None:
        try:
            self._remove_leftovers()
            self._set_aside_invalid(step)
            os.mkdir(staging)
            fsync_dir(self.root)
        except OSError as exc:
            return f"checkpoint step {step} not saved: cannot create {staging}: {describe_os_error(exc)}"
        return None

    def _remove_leftovers(self) -> None:
        """Staging/trash dirs of a save or removal that crashed (no save of ours is in flight now)."""
        for name in os.listdir(self.root):
            if layout.is_leftover(name):
                path = os.path.join(self.root, name)
                log.info("removing %s, left by an interrupted save", path)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)

    def _set_aside_invalid(self, step: int) -> None:
        """A torn or corrupt ``step-N`` in the way is renamed aside (kept for inspection), never deleted."""
        name = layout.step_dirname(step)
        if os.path.lexists(os.path.join(self.root, name)):
            aside = f"{name}.invalid-{int(time.time())}"
            log.warning(
                "%s is not a valid checkpoint; renaming it to %s and saving step %d anew",
                os.path.join(self.root, name),
                aside,
                step,
            )
            os.rename(os.path.join(self.root, name), os.path.join(self.root, aside))

    def _write_own_file(
        self, staging: str, plan: ShardPlan, buffer: torch.Tensor | None
    ) -> tuple[FileRecord | None, str | None]:
        g = self._group
        name = layout.rank_filename(g.rank, g.world_size)
        path = os.path.join(staging, name)
        pacer = Pacer(self._bytes_per_s)
        try:
            size, crc = write_file_durably(path, iter_chunks(plan, pacer.chunk, buffer), pacer=pacer)
        except OSError as exc:
            return None, f"rank {g.rank}: writing {path} failed: {describe_os_error(exc)}"
        return FileRecord(name, g.rank, size, crc), None

    def _publish(self, step: int, staging: str, results: list, metadata: dict) -> str | None:
        """Rank 0: manifest, fsyncs, the atomic rename; returns a problem or None."""
        final = os.path.join(self.root, layout.step_dirname(step))
        problems = [p for _, p in results if p]
        try:
            if problems:
                raise CheckpointError("; ".join(problems))
            files = [rec for rec, _ in results]
            for rec in files:
                path = os.path.join(staging, rec.name)
                if not os.path.isfile(path) or os.path.getsize(path) != rec.size:
                    raise CheckpointError(
                        f"rank {rec.rank}'s file {path} is not visible from rank 0",
                        hint="the checkpoint root must be one shared directory for all nodes (storage.checkpoints on a shared drive)",
                    )
            manifest = Manifest(step=step, world_size=self._group.world_size, files=files, metadata=metadata)
            write_file_durably(os.path.join(staging, layout.MANIFEST), [manifest.to_bytes()])
            fsync_dir(staging)
            os.rename(staging, final)
            fsync_dir(self.root)
        except (OSError, CheckpointError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            why = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            return f"checkpoint step {step} not saved: {why}; earlier checkpoints in {self.root} are untouched"
        self._after_publish(step)
        return None

    def _after_publish(self, step: int) -> None:
        """LATEST and retention: the new checkpoint is durable, so failures here are only warnings."""
        try:
            if self.write_latest:
                atomic_write_bytes(
                    self.root, layout.LATEST, layout.LATEST_TMP, f"{layout.step_dirname(step)}\n".encode()
                )
            if self.keep_last or self.keep_every:
                found = scan(self.root, full=False)
                for old in steps_to_remove(found.valid_steps, self.keep_last, self.keep_every):
                    if old != step:
                        remove_checkpoint(self.root, old)
        except OSError as exc:
            log.warning(
                "checkpoint step %d is saved, but updating LATEST/retention failed: %s", step, describe_os_error(exc)
            )

    def _check_path(self, allow: bool) -> None:
        reasons = check_root(self.root)
        if not reasons:
            return
        msg = f"checkpoint root {self.root} may not survive: {'; '.join(reasons)}"
        if allow:
            log.warning("%s (allowed)", msg)
            return
        raise CheckpointPathError(
            msg,
            hint=f"use a persistent disk (storage.checkpoints), or pass allow_volatile=True / set {ENV_ALLOW_VOLATILE}=1",
        )

    # ---- loading --------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Steps of the checkpoints whose manifest and file sizes check out, oldest first."""
        return scan(self.root, full=False).valid_steps

    def load_latest(self, map_location: Any = None) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint that verifies, or None when there is none.

        Torn or corrupt checkpoints are skipped with a warning naming the file (and left on
        disk); every rank checks its own file and all ranks agree on the step they load.
        """
        self.wait()
        for step, name in reversed(step_dirs(self.root)):
            state, ok = self._try_load(name, map_location)
            if self._group.all_true(ok):
                return step, state
        return None

    def load(self, step: int, map_location: Any = None) -> Any:
        """The state of one given step; CorruptCheckpoint if it does not verify."""
        self.wait()
        name = layout.step_dirname(step)
        info = check_checkpoint(self.root, name, full=False, ranks=[self.rank])
        if not info.valid:
            raise CorruptCheckpoint(info.path, "; ".join(info.problems) or "not found")
        self._check_world_size(info.manifest, info.path)
        return self._read_own_file(info.path, info.manifest, map_location)

    def _try_load(self, name: str, map_location: Any) -> tuple[Any, bool]:
        info = check_checkpoint(self.root, name, full=False, ranks=[self.rank])
        if not info.valid:
            for p in info.problems:
                log.warning("skipping checkpoint %s: %s", name, p)
            return None, False
        self._check_world_size(info.manifest, info.path)
        try:
            return self._read_own_file(info.path, info.manifest, map_location), True
        except CorruptCheckpoint as exc:
            log.warning("skipping checkpoint %s: %s", name, exc)
            return None, False

    def _check_world_size(self, manifest: Manifest, path: str) -> None:
        if manifest.world_size != self.world_size:
            raise WorldSizeMismatch(
                f"{path} was written by {manifest.world_size} rank(s) but this job has {self.world_size}",
                hint="resume with the same number of processes (nnodes x nproc_per_node), or convert the checkpoint",
            )

    def _read_own_file(self, path: str, manifest: Manifest, map_location: Any) -> Any:
        rec = manifest.file_for_rank(self.rank)
        fpath = os.path.join(path, rec.name)
        whole = torch.empty(rec.size, dtype=torch.uint8)
        try:
            crc = read_file_into(fpath, whole.numpy())
        except (OSError, ValueError) as exc:
            raise CorruptCheckpoint(fpath, str(exc)) from None
        if crc != rec.crc32:
            raise CorruptCheckpoint(
                fpath, f"checksum mismatch (crc32 {crc:08x}, manifest says {rec.crc32:08x}): corrupted"
            )
        try:
            return parse_shard(whole, map_location)
        except (ValueError, KeyError) as exc:
            raise CorruptCheckpoint(fpath, f"unreadable: {exc}") from None

"""The volume benchmark's plan: which modes, with which block size, threads, file and flags.

Pure: nothing here touches the disk. The same plan drives corral's own engine and the fio
command that is run beside it with ``--compare-fio``, so both see equal parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from launcher.errors import UserError
from launcher.units import MIB, format_size, parse_size

MODES = ("seqwrite", "seqread", "randread", "randwrite")
RANDOM_BS = 4096
"""Random modes always use 4 KiB blocks: the size of a page, and what IOPS figures are quoted for."""
DIRECT_ALIGN = 4096
"""O_DIRECT needs offsets, lengths and buffers aligned to the logical block size; 4 KiB covers every disk."""
HEADROOM_BYTES = 64 * MIB
"""Free space kept beyond the test file, so the benchmark never fills a volume to the last block."""
DATA_FILE = "data.bin"

_FIO_RW = {"seqwrite": "write", "seqread": "read", "randread": "randread", "randwrite": "randwrite"}


@dataclass(frozen=True)
class ModeSpec:
    """One mode: ``jobs`` x ``iodepth`` threads each keep one request in flight on one shared file."""

    mode: str
    bs: int
    jobs: int
    iodepth: int
    size: int
    direct: bool
    duration_s: float | None = None

    @property
    def is_write(self) -> bool:
        return self.mode.endswith("write")

    @property
    def is_random(self) -> bool:
        return self.mode.startswith("rand")

    @property
    def threads(self) -> int:
        return self.jobs * self.iodepth

    @property
    def total_ops(self) -> int | None:
        """Requests for one pass over the file (all jobs together), or None when time-based."""
        return None if self.duration_s else self.size // self.bs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bs_bytes"] = d.pop("bs")
        d["size_bytes"] = d.pop("size")
        return d


@dataclass(frozen=True)
class VolumePlan:
    """Everything a node needs to run the benchmark, printable with ``--dry-run``."""

    path: str
    size: int
    modes: tuple[ModeSpec, ...]
    limit_mibps: float | None = None
    compare_fio: bool = False
    notices: tuple[str, ...] = field(default_factory=tuple)

    @property
    def direct(self) -> bool:
        return all(m.direct for m in self.modes)

    @property
    def required_bytes(self) -> int:
        """One test file, shared by all modes (and by fio's runs), plus headroom."""
        return self.size + HEADROOM_BYTES

    def with_buffered(self, notice: str) -> VolumePlan:
        """The same plan with O_DIRECT turned off (a filesystem without O_DIRECT, such as tmpfs)."""
        return replace(
            self, modes=tuple(replace(m, direct=False) for m in self.modes), notices=self.notices + (notice,)
        )

    def read_method(self) -> str:
        if self.direct:
            return "O_DIRECT"
        return "buffered, after fsync and dropping the file's pages from the cache (posix_fadvise DONTNEED)"

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "size_bytes": self.size,
            "required_bytes": self.required_bytes,
            "limit_mibps": self.limit_mibps,
            "compare_fio": self.compare_fio,
            "read_method": self.read_method(),
            "notices": list(self.notices),
            "modes": [m.to_dict() for m in self.modes],
        }


def parse_modes(text: str) -> tuple[str, ...]:
    """``'seqwrite,randread'`` -> modes in the order given, each once; unknown names are an error."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError(f"--mode: give one or more of {','.join(MODES)}")
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise UserError(f"--mode: unknown mode {unknown[0]!r} (got {text!r}); choose from {','.join(MODES)}")
    return tuple(dict.fromkeys(names))


def build_plan(
    path: str,
    *,
    size: str | int = "1G",
    bs: str | int = "1M",
    jobs: int = 4,
    iodepth: int = 8,
    modes: str = ",".join(MODES),
    duration_s: float | None = None,
    direct: bool = True,
    limit_mibps: float | None = None,
    compare_fio: bool = False,
) -> VolumePlan:
    """Validate the command-line values and turn them into per-mode specs.

    Sequential modes run one job with ``iodepth`` requests in flight (like fio's ``numjobs=1``);
    random modes run ``jobs`` jobs, each with ``iodepth`` in flight, with 4 KiB blocks.
    """
    size_b = parse_size(size, what="--size")
    bs_b = parse_size(bs, what="--bs")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    if iodepth < 1:
        raise UserError(f"--iodepth must be at least 1 (got {iodepth})")
    if bs_b < RANDOM_BS or bs_b % DIRECT_ALIGN:
        raise UserError(f"--bs must be a multiple of 4K (got {bs!r}): O_DIRECT needs aligned blocks")
    if size_b < bs_b or size_b % bs_b:
        raise UserError(f"--size must be a positive multiple of --bs (got --size {size!r}, --bs {bs!r})")
    if duration_s is not None and duration_s <= 0:
        raise UserError(f"--duration must be positive seconds (got {duration_s})")
    if limit_mibps is not None and limit_mibps <= 0:
        raise UserError(f"--limit-mibps must be positive (got {limit_mibps})")
    specs = []
    for mode in parse_modes(modes):
        random = mode.startswith("rand")
        specs.append(
            ModeSpec(
                mode=mode,
                bs=RANDOM_BS if random else bs_b,
                jobs=jobs if random else 1,
                iodepth=iodepth,
                size=size_b,
                direct=direct,
                duration_s=duration_s,
            )
        )
    return VolumePlan(path=str(path), size=size_b, modes=tuple(specs), limit_mibps=limit_mibps, compare_fio=compare_fio)


def fio_filename(path: str) -> str:
    """fio splits ``--filename`` at ':' (a list of files); a literal colon is written ``\\:``."""
    return path.replace(":", "\\:")


def fio_argv(spec: ModeSpec, filename: str, *, fio: str = "fio") -> list[str]:
    """fio with the parameters corral's engine uses for ``spec``, reporting JSON.

    libaio with ``iodepth`` requests in flight per job and ``numjobs=jobs`` on the same file;
    writes end with an fsync that is counted (``end_fsync``); random modes draw offsets with
    repetition (``norandommap``) as corral does; a one-pass random mode moves ``size`` bytes in
    all jobs together (``io_size`` per job), as corral does.
    """
    argv = [
        fio,
        f"--name=corral-{spec.mode}",
        f"--filename={fio_filename(filename)}",
        f"--rw={_FIO_RW[spec.mode]}",
        f"--bs={spec.bs}",
        f"--size={spec.size}",
        f"--direct={int(spec.direct)}",
        "--ioengine=libaio",
        f"--iodepth={spec.iodepth}",
        f"--numjobs={spec.jobs}",
        "--thread",
        "--group_reporting",
        "--lat_percentiles=1",
        "--output-format=json",
    ]
    if spec.is_write:
        argv.append("--end_fsync=1")
    if spec.is_random:
        argv += ["--norandommap", "--randrepeat=0"]
        if not spec.duration_s and spec.jobs > 1:
            argv.append(f"--io_size={spec.size // spec.jobs // spec.bs * spec.bs}")
    if spec.duration_s:
        argv += ["--time_based", f"--runtime={spec.duration_s:g}s"]
    return argv


def describe(plan: VolumePlan) -> list[str]:
    """Human lines for ``--dry-run``."""
    lines = [
        f"path: {plan.path} (one {format_size(plan.size)} file in a private subdirectory; needs {format_size(plan.required_bytes)} free)",
        f"reads: {plan.read_method()}",
    ]
    for m in plan.modes:
        length = f"{m.duration_s:g} s" if m.duration_s else "one pass over the file"
        lines.append(
            f"{m.mode}: bs {format_size(m.bs)}, {m.jobs} job(s) x iodepth {m.iodepth} = {m.threads} threads, "
            f"{'O_DIRECT' if m.direct else 'buffered'}, {length}{', closing fsync counted' if m.is_write else ''}"
        )
    return lines

"""One rank's checkpoint file: raw tensor bytes plus a small header, written without copies.

    struct  magic b"CORRALCK", format version, flags, header_len, pickle_len, data_offset
    header  JSON: byte order and the tensor table (dtype, shape, offset and size in the data area)
    pickle  the state with every tensor replaced by a persistent id (its index in the table)
    zeros   up to data_offset (4096-aligned)
    data    each tensor's bytes, contiguous, 64-byte aligned

Why not ``torch.save``: it pickles into a zip archive with per-tensor records and, for a
state on an accelerator or a non-contiguous tensor, builds copies. Here the writer streams
each tensor's own memory (or the one CPU copy an async save makes) straight to the file, and
loading reads the file once into one buffer that the tensors then view without copying.
Python values (ints, RNG states, lists, ...) go through pickle, so they round-trip exactly;
the same tensor object referenced twice is stored once and comes back as one object.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

MAGIC = b"CORRALCK"
VERSION = 1
PREFIX = struct.Struct("<8sIIQQQ")
DATA_ALIGN = 4096
TENSOR_ALIGN = 64
SMALL = 1 << 20
"""Tensors below this size are coalesced into larger writes."""


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class TensorEntry:
    dtype: str
    shape: list[int]
    offset: int
    nbytes: int
    source: Any = field(default=None, repr=False)  # the tensor to write (not serialized)

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": self.shape, "offset": self.offset, "nbytes": self.nbytes}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_of(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown tensor dtype {name!r} (written by a newer torch?)")
    return dt


class _Pickler(pickle.Pickler):
    def __init__(self, buf, table: list[TensorEntry]) -> None:
        super().__init__(buf, protocol=5)
        self.table = table
        self.ids: dict[int, int] = {}
        self.data_len = 0

    def persistent_id(self, obj):  # noqa: D401 - pickle hook
        if not isinstance(obj, torch.Tensor):
            return None
        key = id(obj)
        if key not in self.ids:
            if obj.is_sparse or obj.layout != torch.strided or obj.is_quantized or obj.is_nested:
                raise TypeError(f"cannot checkpoint a {obj.layout} tensor; convert it to a dense tensor first")
            nbytes = obj.numel() * obj.element_size()
            offset = _align(self.data_len, TENSOR_ALIGN)
            self.data_len = offset + nbytes
            self.ids[key] = len(self.table)
            self.table.append(TensorEntry(_dtype_name(obj.dtype), list(obj.shape), offset, nbytes, obj))
        return ("t", self.ids[key])


@dataclass
class ShardPlan:
    """What one rank writes: the prefix bytes and the tensors at their offsets in the data area."""

    prefix: bytes
    tensors: list[TensorEntry]
    data_len: int

    @property
    def size(self) -> int:
        return len(self.prefix) + self.data_len

    @property
    def state_nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def plan_shard(state: Any) -> ShardPlan:
    """Pickle the state's structure now (capturing Python values) and lay the tensors out."""
    table: list[TensorEntry] = []
    buf = io.BytesIO()
    pickler = _Pickler(buf, table)
    pickler.dump(state)
    pickled = buf.getvalue()
    header = json.dumps(
        {"byteorder": sys.byteorder, "tensors": [t.to_json() for t in table]}, separators=(",", ":")
    ).encode()
    data_offset = _align(PREFIX.size + len(header) + len(pickled), DATA_ALIGN)
    prefix = PREFIX.pack(MAGIC, VERSION, 0, len(header), len(pickled), data_offset) + header + pickled
    prefix += b"\0" * (data_offset - len(prefix))
    return ShardPlan(prefix, table, _align(pickler.data_len, TENSOR_ALIGN))


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """A flat byte view of a tensor's values: no copy for a contiguous CPU tensor."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy()).cast("B")


def host_sources(plan: ShardPlan) -> Iterator[torch.Tensor]:
    """The plan's tensors that have bytes, in order, each readable from the host when it is handed out.

    A CUDA tensor is copied into pinned host memory (``non_blocking``, in the order of its device's
    current stream) one tensor ahead: the next tensor's device-to-host copy runs while this one is
    written, instead of a pageable ``.cpu()`` per tensor between the writes (a synchronous save).
    """
    entries = [e for e in plan.tensors if e.nbytes]

    def start(i: int):
        src = entries[i].source
        if src.device.type != "cuda":
            return src, None
        src = src.detach().resolve_conj().resolve_neg()  # pragma: no cover - needs a CUDA device
        host = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
        host.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(src.device))
        return host, event

    ahead = start(0) if entries else None
    for i in range(len(entries)):
        tensor, event = ahead
        ahead = start(i + 1) if i + 1 < len(entries) else None
        if event is not None:
            event.synchronize()  # pragma: no cover - needs a CUDA device
        yield tensor


def iter_chunks(plan: ShardPlan, chunk: int, buffer: torch.Tensor | None = None) -> Iterator:
    """The file's bytes in order: prefix, then tensors (large ones in slices, small ones coalesced).

    With ``buffer`` (an async snapshot), the data area is that buffer; otherwise each tensor's
    own memory. Coalesced chunks are fresh objects: the checksum thread may still read them.
    """
    yield plan.prefix
    if buffer is not None:
        view = memoryview(buffer[: plan.data_len].numpy()).cast("B")
        for pos in range(0, plan.data_len, chunk):
            yield view[pos : pos + chunk]
        return
    pending = bytearray()
    pos = 0
    sources = host_sources(plan)
    for e in plan.tensors:
        if e.offset > pos:
            pending += bytes(e.offset - pos)
        pos = e.offset + e.nbytes
        if not e.nbytes:
            continue
        mv = tensor_bytes(next(sources))
        if e.nbytes < SMALL:
            pending += mv
            if len(pending) >= chunk:
                yield bytes(pending)
                pending = bytearray()
            continue
        if pending:
            yield bytes(pending)
            pending = bytearray()
        for p in range(0, e.nbytes, chunk):
            yield mv[p : p + chunk]
    if plan.data_len > pos:
        pending += bytes(plan.data_len - pos)
    if pending:
        yield bytes(pending)


class _Unpickler(pickle.Unpickler):
    def __init__(self, buf, tensors: list[torch.Tensor]) -> None:
        super().__init__(buf)
        self.tensors = tensors

    def persistent_load(self, pid):  # noqa: D401 - pickle hook
        kind, index = pid
        if kind != "t":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return self.tensors[index]


def parse_shard(whole: torch.Tensor, map_location=None) -> Any:
    """Rebuild the state from a whole file read into the uint8 tensor ``whole`` (already checksummed).

    Tensors are views of ``whole`` (no copy) unless ``map_location`` moves them.
    """
    raw = memoryview(whole.numpy()).cast("B")
    if raw.nbytes < PREFIX.size:
        raise ValueError("file too short for a checkpoint header")
    magic, version, _flags, header_len, pickle_len, data_offset = PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise ValueError("not a corral checkpoint file (bad magic)")
    if version > VERSION:
        raise ValueError(f"checkpoint file format {version} is newer than this corral ({VERSION}); upgrade corral")
    h0 = PREFIX.size
    header = json.loads(bytes(raw[h0 : h0 + header_len]))
    if header["byteorder"] != sys.byteorder:
        raise ValueError(f"checkpoint written on a {header['byteorder']}-endian machine")
    tensors = []
    for e in header["tensors"]:
        start = data_offset + e["offset"]
        t = whole[start : start + e["nbytes"]].view(_dtype_of(e["dtype"])).view(e["shape"])
        tensors.append(t if map_location is None else t.to(map_location))
    pickled = raw[h0 + header_len : h0 + header_len + pickle_len]
    return _Unpickler(io.BytesIO(pickled), tensors).load()

"""Static memory plan: every activation tensor gets a fixed offset in one arena.

Lifetimes come from the execution order (a tensor lives from the step that
writes it to the last step that reads it; the model input from before the
first step, the outputs until the host has read them). RESHAPE is a view: its
output shares its input's buffer. Offsets are chosen greedily by size (largest
first, each at the lowest aligned offset that overlaps no buffer alive at the
same time), which is what TFLite Micro's greedy planner does as well.

Kernels that need scratch memory (the fast convolution's im2col columns) get
it from the arena too: a buffer alive during its one step, sized by the
kernel's ``*_get_buffer_size`` companion (mirrored in ``layouts.py``).

The plan reports its lower bound: the largest total of bytes that must be alive
at one step, scratch included. An arena equal to the bound cannot be beaten in
this schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph

ALIAS_OPS = ("RESHAPE",)


@dataclass
class Buffer:
    name: str  # the tensor that owns the storage
    size: int
    first: int
    last: int
    offset: int = -1
    tensors: list[str] = field(default_factory=list)

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    offsets: dict[str, int]  # tensor name -> arena offset
    arena_size: int
    lower_bound: int
    total_tensor_bytes: int
    alignment: int

    def to_json(self) -> dict:
        return {
            "arena_size": self.arena_size,
            "lower_bound": self.lower_bound,
            "sum_of_tensors": self.total_tensor_bytes,
            "alignment": self.alignment,
            "buffers": [
                {"tensor": b.name, "aliases": b.tensors[1:], "size": b.size, "offset": b.offset,
                 "first_step": b.first, "last_step": b.last}
                for b in sorted(self.buffers, key=lambda b: b.offset)
            ],
        }


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def scratch_name(step: int) -> str:
    """The plan's name for the scratch buffer of a step (never a tensor name: tensors have no '#')."""
    return f"#scratch{step}"


def plan_memory(graph: Graph, alignment: int = 4,
                scratch: dict[int, int] | None = None) -> MemoryPlan:
    """Offsets for every activation tensor, and for ``scratch`` (step -> bytes) buffers."""
    n_steps = len(graph.nodes)
    owner: dict[str, str] = {}
    buffers: dict[str, Buffer] = {}

    def buf_of(t: str) -> Buffer:
        return buffers[owner[t]]

    for t in graph.inputs:
        owner[t] = t
        buffers[t] = Buffer(t, graph.tensors[t].nbytes, -1, -1, tensors=[t])
    for step, node in enumerate(graph.nodes):
        for i in node.inputs:
            if i in owner:
                b = buf_of(i)
                b.last = max(b.last, step)
        out = node.outputs[0]
        if node.op in ALIAS_OPS:
            owner[out] = owner[node.inputs[0]]
            buf_of(out).tensors.append(out)
        else:
            owner[out] = out
            buffers[out] = Buffer(out, graph.tensors[out].nbytes, step, step, tensors=[out])
    for t in graph.outputs:
        buf_of(t).last = n_steps  # the host reads outputs after the last step
    for step, size in sorted((scratch or {}).items()):
        if size > 0:
            name = scratch_name(step)
            owner[name] = name
            buffers[name] = Buffer(name, size, step, step, tensors=[name])

    placed: list[Buffer] = []
    for b in sorted(buffers.values(), key=lambda b: (-b.size, b.first, b.name)):
        offset = 0
        conflicts = sorted((p for p in placed if p.overlaps_in_time(b)), key=lambda p: p.offset)
        for p in conflicts:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.size, alignment))
        b.offset = offset
        placed.append(b)

    arena = _align(max((b.offset + b.size for b in placed), default=0), alignment)
    lower = 0
    for step in range(-1, n_steps + 1):
        live = sum(b.size for b in placed if b.first <= step <= b.last)
        lower = max(lower, live)
    offsets = {t: buffers[owner[t]].offset for t in owner}
    return MemoryPlan(list(buffers.values()), offsets, arena, lower,
                      sum(b.size for b in placed), alignment)

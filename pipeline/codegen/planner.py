"""Static memory plan: every activation tensor gets a fixed offset in one arena.

Lifetimes come from the execution order (a tensor lives from the step that
writes it to the last step that reads it; the model input from before the
first step, the outputs until the host has read them). RESHAPE is a view: its
output shares its input's buffer. ADD runs in place: its output takes the
buffer of an input that is read for the last time there (both add kernels read
each element before writing it).

Kernels that need scratch memory (the fast convolution's im2col columns) get
it from the arena too: a buffer alive during its one step, sized by the
kernel's ``*_get_buffer_size`` companion (mirrored in ``layouts.py``).

Offsets: a few greedy orders (largest first, as TFLite Micro's planner, and
by first use), each buffer at the lowest aligned offset free of buffers alive
at the same time; if none reaches the lower bound, a bounded depth-first
search over candidate offsets (the ends of conflicting buffers, or flush with
the top of the arena) looks for a plan of exactly the lower bound. Chains
(conv after conv) need that: largest-first can leave a hole.

The plan reports its lower bound: the largest total of bytes (each buffer
rounded up to the alignment) that must be alive at one step, scratch
included. An arena equal to the bound cannot be beaten in this schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph

ALIAS_OPS = ("RESHAPE",)
#: Ops whose output may take the buffer of one of its first two inputs.
IN_PLACE_OPS = ("ADD",)
#: Search effort before settling for the best greedy plan.
SEARCH_NODES = 20_000


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
                scratch: dict[int, int] | None = None, in_place: bool = True) -> MemoryPlan:
    """Offsets for every activation tensor, and for ``scratch`` (step -> bytes) buffers."""
    n_steps = len(graph.nodes)
    owner: dict[str, str] = {}
    buffers: dict[str, Buffer] = {}

    def buf_of(t: str) -> Buffer:
        return buffers[owner[t]]

    last_use: dict[str, int] = {}
    for step, node in enumerate(graph.nodes):
        for i in node.inputs:
            last_use[i] = step
    for t in graph.outputs:
        last_use[t] = n_steps  # the host reads outputs after the last step

    for t in graph.inputs:
        owner[t] = t
        buffers[t] = Buffer(t, graph.tensors[t].nbytes, -1, -1, tensors=[t])
    for step, node in enumerate(graph.nodes):
        for i in node.inputs:
            if i in owner:
                b = buf_of(i)
                b.last = max(b.last, step)
        out = node.outputs[0]
        size = graph.tensors[out].nbytes
        shared = None
        if node.op in ALIAS_OPS:
            shared = owner[node.inputs[0]]
        elif in_place and node.op in IN_PLACE_OPS:
            for cand in node.inputs[:2]:
                b = buffers.get(owner.get(cand, ""))
                if b is not None and b.size == size and all(
                        last_use.get(t, -1) <= step for t in b.tensors):
                    shared = b.name
                    break
        if shared is not None:
            owner[out] = shared
            buffers[shared].tensors.append(out)
        else:
            owner[out] = out
            buffers[out] = Buffer(out, size, step, step, tensors=[out])
    for t in graph.outputs:
        buf_of(t).last = n_steps
    for t, b in ((t, buf_of(t)) for t in list(owner)):
        b.last = max(b.last, last_use.get(t, b.last))
    for step, size in sorted((scratch or {}).items()):
        if size > 0:
            name = scratch_name(step)
            owner[name] = name
            buffers[name] = Buffer(name, size, step, step, tensors=[name])

    bufs = list(buffers.values())
    sizes = {b.name: _align(b.size, alignment) for b in bufs}
    lower = 0
    for step in range(-1, n_steps + 1):
        lower = max(lower, sum(sizes[b.name] for b in bufs if b.first <= step <= b.last))

    best: dict[str, int] | None = None
    best_arena = None
    for key in (lambda b: (-b.size, b.first, b.name), lambda b: (b.first, -b.size, b.name),
                lambda b: (-(b.last - b.first), -b.size, b.name)):
        offsets = _greedy(sorted(bufs, key=key), sizes)
        arena = max((offsets[b.name] + sizes[b.name] for b in bufs), default=0)
        if best_arena is None or arena < best_arena:
            best, best_arena = offsets, arena
    for key in (lambda b: (-b.size, b.first, b.name), lambda b: (b.first, -b.size, b.name)):
        if best_arena is None or best_arena <= lower:
            break
        found = _search(sorted(bufs, key=key), sizes, lower, alignment)
        if found is not None:
            best, best_arena = found, lower
    for b in bufs:
        b.offset = best[b.name] if best else 0
    offsets = {t: buffers[owner[t]].offset for t in owner}
    return MemoryPlan(bufs, offsets, best_arena or 0, lower, sum(b.size for b in bufs), alignment)


def _greedy(order: list[Buffer], sizes: dict[str, int]) -> dict[str, int]:
    """Each buffer, in order, at the lowest offset free of placed buffers alive with it."""
    placed: list[Buffer] = []
    offsets: dict[str, int] = {}
    for b in order:
        offset = 0
        for p in sorted((p for p in placed if p.overlaps_in_time(b)), key=lambda p: offsets[p.name]):
            if offset + sizes[b.name] <= offsets[p.name]:
                break
            offset = max(offset, offsets[p.name] + sizes[p.name])
        offsets[b.name] = offset
        placed.append(b)
    return offsets


def _search(order: list[Buffer], sizes: dict[str, int], target: int,
            alignment: int) -> dict[str, int] | None:
    """Depth-first search for offsets within ``target`` bytes; None when the budget runs out."""
    conflicts = {b.name: [p for p in order if p is not b and p.overlaps_in_time(b)] for b in order}
    offsets: dict[str, int] = {}
    nodes = [0]

    def fits(b: Buffer, off: int) -> bool:
        end = off + sizes[b.name]
        return end <= target and all(
            end <= offsets[p.name] or offsets[p.name] + sizes[p.name] <= off
            for p in conflicts[b.name] if p.name in offsets)

    def place(i: int) -> bool:
        if i == len(order):
            return True
        nodes[0] += 1
        if nodes[0] > SEARCH_NODES:
            return False
        b = order[i]
        size = sizes[b.name]
        # Flush with the bottom or top of the arena, or with any placed buffer's edge.
        cands = {0, (target - size) // alignment * alignment}
        for name, off in offsets.items():
            cands.add(off + sizes[name])
            cands.add(off - size)
        for off in sorted(c for c in cands if c >= 0 and c % alignment == 0):
            if fits(b, off):
                offsets[b.name] = off
                if place(i + 1):
                    return True
                del offsets[b.name]
        return False

    return dict(offsets) if place(0) else None

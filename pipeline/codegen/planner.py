"""Static memory plan: every activation tensor gets a fixed offset in one arena.

Lifetimes come from the execution order (a tensor lives from the step that
writes it to the last step that reads it; the model input from before the
first step, the outputs until the host has read them). RESHAPE is a view: its
output shares its input's buffer. ADD runs in place: its output takes the
buffer of an input that is read for the last time there (both add kernels read
each element before writing it); so do LOGISTIC and TANH (one table lookup per
byte).

A CONCATENATION whose output is one contiguous run per input (every dim
before the axis is 1: the outermost non-batch axis, or vectors) can be a view
too: each input's producer writes straight into the input's place inside the
output buffer and no copy runs (the code generator emits no call). The merged
buffer lives from the first input's producer to the last reader of any part,
so a view can raise the peak (the whole output is reserved while the first
input waits for the others); the planner makes a concatenation a view only
where the lower bound does not rise, trying views in schedule order and
dropping them from the set of all (views interact: two may pay off only
together). Along NHWC channels each input is strided through the output, so
that concatenation copies. See :func:`_placeable` for what else must hold.

Kernels that need scratch memory (the fast convolution's im2col columns) get
it from the arena too: a buffer alive during its one step, sized by the
kernel's ``*_get_buffer_size`` companion (mirrored in ``layouts.py``).

Offsets: three greedy orders (largest first, as TFLite Micro's planner; by
first use; longest lifetime first), each buffer at the lowest aligned offset free of buffers alive
at the same time; if none reaches the lower bound, a bounded depth-first
search over candidate offsets (the ends of conflicting buffers, or flush with
the top of the arena) looks for a plan of exactly the lower bound, in four
orders (SEARCH_NODES nodes each), kernel scratch last in the first: a
one-step scratch buffer fits a hole the tensors leave. Chains (conv after
conv) need the search: largest-first can leave a hole.

The plan reports its lower bound: the largest total of bytes (each buffer
rounded up to the alignment) that must be alive at one step, scratch
included. An arena equal to the bound cannot be beaten in this schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph

ALIAS_OPS = ("RESHAPE",)
#: Ops whose inputs may be produced straight into their place in the output (a view).
PLACED_OPS = ("CONCATENATION",)
#: Ops whose output may take the buffer of one of its first two inputs.
IN_PLACE_OPS = ("ADD", "LOGISTIC", "TANH")
#: Search effort per search order before settling for the best greedy plan.
SEARCH_NODES = 10_000


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
    #: Steps of CONCATENATION nodes whose inputs were placed inside their output: no call.
    concat_views: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "arena_size": self.arena_size,
            "lower_bound": self.lower_bound,
            "sum_of_tensors": self.total_tensor_bytes,
            "alignment": self.alignment,
            "concat_views": self.concat_views,
            "buffers": [
                {"tensor": b.name, "aliases": b.tensors[1:], "size": b.size, "offset": b.offset,
                 "first_step": b.first, "last_step": b.last,
                 # Tensors placed inside the buffer (a concatenation's inputs): their own offsets.
                 **({"inner_offsets": {t: self.offsets[t] - b.offset for t in b.tensors
                                       if self.offsets[t] != b.offset}}
                    if any(self.offsets[t] != b.offset for t in b.tensors) else {})}
                for b in sorted(self.buffers, key=lambda b: b.offset)
            ],
        }


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def scratch_name(step: int) -> str:
    """The plan's name for the scratch buffer of a step (never a tensor name: tensors have no '#')."""
    return f"#scratch{step}"


def plan_memory(graph: Graph, alignment: int = 4,
                scratch: dict[int, int] | None = None, in_place: bool = True,
                concat_views: bool = True) -> MemoryPlan:
    """Offsets for every activation tensor, and for ``scratch`` (step -> bytes) buffers.

    With ``concat_views``, each CONCATENATION that :func:`_placeable` allows
    is made a view when that does not raise the lower bound (see the module
    docstring); ``in_place`` likewise for ADD.
    """
    n_steps = len(graph.nodes)
    candidates = [step for step, node in enumerate(graph.nodes)
                  if concat_views and node.op in PLACED_OPS]


    def attempt(views: set[int]) -> tuple[int, int, tuple]:
        state = _buffers(graph, alignment, scratch, in_place, views)
        # Lower bound first; on a tie, more views (fewer copies).
        return _lower_bound(list(state[2].values()), alignment, n_steps), -len(state[3]), state

    # A view reserves the whole output from its first input on, which can raise the peak; and
    # views interact (two may pay off only together). Two greedy passes: add views in schedule
    # order while the bound does not rise; start from all and drop those whose removal lowers it.
    best_try = attempt(set())
    for step in candidates:
        trial = attempt(best_try[2][3] | {step})
        if step in trial[2][3] and trial[:2] <= best_try[:2]:
            best_try = trial
    all_try = attempt(set(candidates))
    for step in reversed(sorted(all_try[2][3])):
        trial = attempt(all_try[2][3] - {step})
        if trial[0] < all_try[0]:
            all_try = trial
    lower, _, (owner, rel, buffers, views_made) = min(best_try, all_try, key=lambda t: t[:2])

    bufs = list(buffers.values())
    sizes = {b.name: _align(b.size, alignment) for b in bufs}
    best: dict[str, int] | None = None
    best_arena = None
    for key in _ORDERS:
        offsets = _greedy(sorted(bufs, key=key), sizes)
        arena = max((offsets[b.name] + sizes[b.name] for b in bufs), default=0)
        if best_arena is None or arena < best_arena:
            best, best_arena = offsets, arena
    for key in _SEARCH_ORDERS:
        if best_arena is None or best_arena <= lower:
            break
        found = _search(sorted(bufs, key=key), sizes, lower, alignment)
        if found is not None:
            best, best_arena = found, lower
    for b in bufs:
        b.offset = best[b.name] if best else 0
    offsets = {t: buffers[owner[t]].offset + rel.get(t, 0) for t in owner}
    return MemoryPlan(bufs, offsets, best_arena or 0, lower, sum(b.size for b in bufs), alignment,
                      sorted(views_made))


#: Greedy placement orders: largest first (TFLite Micro's), by first use, longest lifetime first.
_ORDERS = (lambda b: (-b.size, b.first, b.name), lambda b: (b.first, -b.size, b.name),
           lambda b: (-(b.last - b.first), -b.size, b.name))
#: Orders the exact search tries, each with SEARCH_NODES nodes. Kernel scratch last: a scratch
#: buffer lives one step, so it fits a hole the tensors leave; placed early, it splits the arena
#: for the tensors (concat_net's fast plan: found in ~1,000 nodes this way, not in 2M by size).
_SEARCH_ORDERS = (lambda b: (b.name.startswith("#"), b.first, -b.size, b.name),
                  lambda b: (-b.last, -b.size, b.name),
                  lambda b: (-(b.last - b.first), -b.size, b.name),
                  lambda b: (-b.size, b.first, b.name))


def _lower_bound(bufs: list[Buffer], alignment: int, n_steps: int) -> int:
    """The most (aligned) bytes of buffers alive at one step."""
    sizes = {b.name: _align(b.size, alignment) for b in bufs}
    return max((sum(sizes[b.name] for b in bufs if b.first <= step <= b.last)
                for step in range(-1, n_steps + 1)), default=0)


def _placeable(graph: Graph, node, owner: dict[str, str], rel: dict[str, int],
               buffers: dict[str, Buffer], alignment: int) -> list[int] | None:
    """Where each input of a CONCATENATION goes inside its output, or None if it cannot.

    The output must be one contiguous run per input: every dim before the axis
    is 1 (the outermost non-batch axis of a batch-1 tensor, or vectors). Each
    input must own a whole buffer of its own (its producer writes it there, so
    not a graph input, not a constant, not an input twice or a view of another
    input, not already placed inside another concatenation's output) at an
    offset that keeps the kernels' word alignment. Other readers of an input,
    before or after the concatenation, are safe: its buffer becomes part of
    the output's, which lives as long as the longest of them, and nothing
    writes those bytes meanwhile (an in-place ADD checks every tensor of the
    buffer it takes, these included).
    """
    out = graph.tensors[node.outputs[0]]
    axis = int(node.attrs["axis"]) % len(out.shape)
    if any(int(d) != 1 for d in out.shape[:axis]):
        return None
    bases, base, seen = [], 0, set()
    for t in node.inputs:
        if t not in owner or t in graph.inputs or rel.get(t, 0) != 0:
            return None
        b = buffers[owner[t]]
        if b.name in seen or b.first < 0 or b.size != graph.tensors[t].nbytes or base % alignment:
            return None
        seen.add(b.name)
        bases.append(base)
        base += graph.tensors[t].nbytes
    return bases if base == out.nbytes else None


def _buffers(graph: Graph, alignment: int, scratch: dict[int, int] | None, in_place: bool,
             views: set[int]) -> tuple[dict[str, str], dict[str, int], dict[str, Buffer], set[int]]:
    """Buffers and lifetimes: tensor -> owning buffer, tensor -> offset inside it, the buffers,
    and the steps of ``views`` that could be made views."""
    n_steps = len(graph.nodes)
    owner: dict[str, str] = {}
    rel: dict[str, int] = {}  # offset of a tensor inside its buffer (placed concat inputs)
    buffers: dict[str, Buffer] = {}
    made: set[int] = set()

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
        placed = (_placeable(graph, node, owner, rel, buffers, alignment)
                  if step in views and node.op in PLACED_OPS else None)
        if node.op in ALIAS_OPS:
            shared = owner[node.inputs[0]]
        elif in_place and node.op in IN_PLACE_OPS:
            for cand in node.inputs[:2]:
                b = buffers.get(owner.get(cand, ""))
                if b is not None and b.size == size and rel.get(cand, 0) == 0 and all(
                        last_use.get(t, -1) <= step for t in b.tensors):
                    shared = b.name
                    break
        if shared is not None:
            owner[out] = shared
            rel[out] = rel.get(node.inputs[0], 0) if node.op in ALIAS_OPS else 0
            buffers[shared].tensors.append(out)
        elif placed is not None:
            # The inputs' buffers become parts of the output's: alive from the first input's
            # producer to the last reader of any part.
            made.add(step)
            merged = Buffer(out, size, step, step, tensors=[out])
            for t, base in zip(node.inputs, placed, strict=True):
                part = buffers.pop(owner[t])
                merged.first = min(merged.first, part.first)
                merged.last = max(merged.last, part.last)
                for pt in part.tensors:
                    owner[pt] = out
                    rel[pt] = base + rel.get(pt, 0)
                merged.tensors.extend(part.tensors)
            owner[out] = out
            buffers[out] = merged
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
    return owner, rel, buffers, made


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

"""Run a test set on the device and compare it with the host's answers.

The numbers that matter to a user come out of here: how often the board's
bytes equal the integer reference (must be 100%; any difference is a bug),
accuracy on the device, and the counter (cycles or instructions) per
inference. Every sample goes through DeviceClient.infer, which never returns
a result that failed a check.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from microfit.errors import MicrofitError
from microfit.harness.client import DeviceClient


@dataclass(frozen=True)
class CounterStats:
    """Distribution of per-inference counter values (cycles or instructions)."""

    kind: str
    min: int
    median: float
    p95: float
    max: int
    resolution: int

    @classmethod
    def of(cls, values: np.ndarray, kind: str, resolution: int) -> CounterStats:
        """Summarise `values` (one per sample)."""
        return cls(
            kind=kind,
            min=int(values.min()),
            median=float(np.median(values)),
            p95=float(np.percentile(values, 95)),
            max=int(values.max()),
            resolution=resolution,
        )


def counter_to_us(value: float, kind: str, clock_hz: int) -> float | None:
    """A counter value in microseconds, where that means something.

    Cycles at the board's clock convert exactly; the host build's
    nanoseconds too. QEMU's instructions are not time (QEMU is not
    cycle-accurate), so they have no microseconds: None.
    """
    if kind == "cycles" and clock_hz > 0:
        return value * 1e6 / clock_hz
    if kind == "nanoseconds":
        return value / 1e3
    return None


@dataclass(frozen=True)
class LayerStats:
    """One layer's share of an inference, from the device's per-layer hooks."""

    index: int
    name: str
    median: float
    min: int
    max: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class ValidationResult:
    """Everything a validation run measured, per sample and in summary."""

    outputs: np.ndarray  # int8 [N, output_size]
    ticks: np.ndarray  # uint32 [N]
    counters: np.ndarray  # [N], in counter.kind units
    counter: CounterStats
    retries: int
    wall_time_s: float
    board: str
    model_hash: str
    macs: int
    agreement: float | None = None  # share of samples whose bytes equal `expected`
    mismatches: list[int] = field(default_factory=list)
    accuracy: float | None = None  # argmax vs labels
    clock_hz: int = 0
    link: dict[str, int] = field(default_factory=dict)  # LinkStats counters of this run
    layers: list[LayerStats] = field(default_factory=list)
    labels: np.ndarray | None = None  # [N] true classes, when given
    baud: int | None = None  # the serial line's rate, for the throughput limit

    @property
    def samples(self) -> int:
        """Number of samples run."""
        return int(self.outputs.shape[0])

    @property
    def counter_per_mac(self) -> float | None:
        """Median counter value per MAC: comparable across models."""
        return self.counter.median / self.macs if self.macs else None

    @property
    def predictions(self) -> np.ndarray:
        """Top-1 class of each device output."""
        return self.outputs.reshape(self.samples, -1).argmax(axis=1)

    def confusion(self) -> np.ndarray | None:
        """Confusion matrix [true class, predicted class] (None without labels)."""
        if self.labels is None:
            return None
        n_classes = max(int(self.outputs.shape[1]), int(self.labels.max()) + 1)
        matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(matrix, (self.labels.astype(np.int64), self.predictions), 1)
        return matrix

    def per_class_accuracy(self) -> list[float | None] | None:
        """Recall of each true class (None for a class absent from the labels)."""
        matrix = self.confusion()
        if matrix is None:
            return None
        totals = matrix.sum(axis=1)
        return [float(matrix[c, c] / totals[c]) if totals[c] else None for c in range(len(totals))]

    def latency_us(self) -> dict[str, float] | None:
        """Latency statistics in microseconds at the board clock, where meaningful."""
        c = self.counter
        if counter_to_us(1.0, c.kind, self.clock_hz) is None:
            return None
        return {k: float(counter_to_us(getattr(c, k), c.kind, self.clock_hz))  # type: ignore[arg-type]
                for k in ("min", "median", "p95", "max")}

    def throughput(self) -> dict[str, float | int | None]:
        """Samples per second achieved, beside what the serial line could carry.

        The line limit assumes 10 bits per byte (8N1) and the bytes this run
        really exchanged per sample, requests and replies in turn (the
        protocol waits for each reply). On QEMU's socket the baud rate is
        not enforced, so the achieved rate may exceed it.
        """
        rate = self.samples / self.wall_time_s if self.wall_time_s > 0 else None
        wire = self.link.get("bytes_sent", 0) + self.link.get("bytes_received", 0)
        per_sample = wire / self.samples if self.samples else 0
        limit = (self.baud / 10.0) / per_sample if self.baud and per_sample else None
        return {
            "samples_per_s": rate,
            "wire_bytes_per_sample": per_sample,
            "baud": self.baud,
            "line_limit_samples_per_s": limit,
        }

    def summary(self) -> str:
        """A few human-readable lines for the console and report.md."""
        lines = [f"{self.samples} samples on {self.board} (model {self.model_hash}) in {self.wall_time_s:.1f} s"]
        if self.agreement is not None:
            lines.append(
                f"agreement with reference: {self.agreement:.2%} "
                f"({len(self.mismatches)} differing samples)"
            )
        if self.accuracy is not None:
            lines.append(f"accuracy on device: {self.accuracy:.2%}")
        c = self.counter
        per_mac = f", {self.counter_per_mac:.2f} per MAC" if self.counter_per_mac else ""
        lines.append(
            f"{c.kind} per inference: median {c.median:,.0f} (min {c.min:,}, p95 {c.p95:,.0f}, "
            f"max {c.max:,}; resolution +-{c.resolution}){per_mac}"
        )
        us = self.latency_us()
        if us is not None:
            lines.append(f"latency: median {us['median']:,.1f} us at {self.clock_hz / 1e6:g} MHz")
        tp = self.throughput()
        if tp["samples_per_s"]:
            limit = tp["line_limit_samples_per_s"]
            lines.append(
                f"throughput: {tp['samples_per_s']:.1f} samples/s"
                + (f" (a {self.baud}-baud line allows {limit:.1f})" if limit else "")
            )
        lines.append(f"link retries: {self.retries}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_json(self) -> dict[str, Any]:
        """Alias of to_dict: the name the stages look for."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-sample arrays as lists)."""
        confusion = self.confusion()
        return {
            "samples": self.samples,
            "board": self.board,
            "model_hash": self.model_hash,
            "macs": self.macs,
            "agreement": self.agreement,
            "mismatches": list(self.mismatches),
            "accuracy": self.accuracy,
            "counter_kind": self.counter.kind,
            "counter_stats": {k: v for k, v in asdict(self.counter).items() if k != "kind"},
            "counter_per_mac": self.counter_per_mac,
            "clock_hz": self.clock_hz,
            "latency_us": self.latency_us(),
            "throughput": self.throughput(),
            "retries": self.retries,
            "link": dict(self.link),
            "layers": [layer.to_dict() for layer in self.layers],
            "confusion": None if confusion is None else confusion.tolist(),
            "per_class_accuracy": self.per_class_accuracy(),
            "wall_time_s": self.wall_time_s,
            "ticks": self.ticks.tolist(),
            "counters": self.counters.tolist(),
            "outputs": self.outputs.tolist(),
        }


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]device"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )


def validate(
    client: DeviceClient,
    inputs: np.ndarray,
    labels: np.ndarray | None = None,
    expected: np.ndarray | None = None,
    progress: bool = True,
    layer_names: list[str] | None = None,
    layer_samples: int = 8,
) -> ValidationResult:
    """Run every input on the device; compare with `expected` and `labels`.

    `inputs` is int8 [N, ...] (each sample flattened in C order must be the
    model's input size). `expected` holds the reference's int8 outputs
    [N, ...] for the byte-exact agreement check; `labels` [N] the true classes
    for accuracy (argmax of the device's output). Per-layer counts are read
    for the first `layer_samples` samples (0: never), which is enough for
    their median and keeps the link busy with inputs rather than timings;
    `layer_names[i]` names node i.
    """
    inputs = np.asarray(inputs)
    if inputs.dtype != np.int8:
        raise ValueError(f"inputs must be int8 (quantized), got {inputs.dtype}")
    n = int(inputs.shape[0])
    if n == 0:
        raise ValueError("no inputs to validate")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"{labels.shape[0]} labels for {n} inputs")
    if expected is not None:
        expected = np.asarray(expected, dtype=np.int8).reshape(n, -1)

    info = client.info if client.info is not None else client.hello()
    flat = inputs.reshape(n, -1)
    if flat.shape[1] != info.input_size:
        raise ValueError(
            f"each input has {flat.shape[1]} values, the device's model expects {info.input_size}"
        )
    if expected is not None and expected.shape[1] != info.output_size:
        raise ValueError(
            f"expected outputs have {expected.shape[1]} values, the device's model gives {info.output_size}"
        )

    outputs = np.zeros((n, info.output_size), dtype=np.int8)
    ticks = np.zeros(n, dtype=np.uint64)
    counters = np.zeros(n, dtype=np.uint64)
    mismatches: list[int] = []
    layer_rows: list[list[int]] = []
    correct = 0
    retries = 0
    link_before = client.stats.copy()
    start = time.perf_counter()
    bar = _progress(progress)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("validate", total=n, status="")
    try:
        for i in range(n):
            try:
                result = client.infer(flat[i].tobytes(), layers=i < layer_samples)
            except MicrofitError as exc:
                raise type(exc)(f"sample {i} of {n}: {exc}") from exc
            out = np.frombuffer(result.output, dtype=np.int8)
            outputs[i] = out
            ticks[i] = result.ticks
            counters[i] = result.counter_value
            retries += result.retries
            if result.layers:
                layer_rows.append(result.layers)
            if expected is not None and not np.array_equal(out, expected[i]):
                mismatches.append(i)
            if labels is not None and int(np.argmax(out)) == int(labels[i]):
                correct += 1
            if bar is not None and task is not None:
                status = []
                if labels is not None:
                    status.append(f"acc {correct / (i + 1):.1%}")
                if expected is not None:
                    status.append(f"agree {(i + 1 - len(mismatches)) / (i + 1):.1%}")
                if retries:
                    status.append(f"retries {retries}")
                bar.update(task, advance=1, status=" ".join(status))
    finally:
        if bar is not None:
            bar.stop()
    wall = time.perf_counter() - start

    return ValidationResult(
        outputs=outputs,
        ticks=ticks,
        counters=counters,
        counter=CounterStats.of(counters, info.counter_kind, info.counter_per_tick),
        retries=retries,
        wall_time_s=wall,
        board=info.board_name,
        model_hash=info.model_hash_hex,
        macs=info.macs,
        agreement=None if expected is None else (n - len(mismatches)) / n,
        mismatches=mismatches,
        accuracy=None if labels is None else correct / n,
        clock_hz=info.clock_hz,
        link=client.stats.since(link_before).to_dict(),
        layers=_layer_stats(layer_rows, layer_names),
        labels=labels,
        baud=getattr(client, "baud", None),
    )


def _layer_stats(rows: list[list[int]], names: list[str] | None) -> list[LayerStats]:
    """Median, min and max of each layer over the samples that reported layers."""
    if not rows:
        return []
    width = min(len(r) for r in rows)
    table = np.array([r[:width] for r in rows], dtype=np.int64)
    out = []
    for i in range(width):
        name = names[i] if names is not None and i < len(names) else f"layer {i}"
        col = table[:, i]
        out.append(LayerStats(i, name, float(np.median(col)), int(col.min()), int(col.max())))
    return out

"""Quantization-aware fine-tuning: train the float model through our int8 rounding.

Post-training quantization (quantize.py) rounds a model that never saw
rounding. When that costs more accuracy than the user accepts, fine-tuning
with *fake quantization* lets the weights adapt: every forward pass rounds
exactly where the int8 model will round, and the backward pass treats the
rounding as the identity (the straight-through estimator), so the float
weights learn values that survive quantization.

Where it rounds mirrors microfit's int8 scheme (docs/quantization.md):

- the model's input: asymmetric per tensor, as ``quantize_input`` (half away
  from zero);
- conv / linear weights: symmetric per output channel, zero point 0, range
  -127..127, ``scale = max|w| / 127`` (``quantize_weights_per_channel``),
  *after* a following BatchNorm is folded in with its running statistics
  (frozen: the ONNX export folds the same statistics, so the weights rounded
  here are the ones the int8 model gets); biases round to int32 at
  ``input scale x weight scale``;
- every tensor an int8 layer writes: asymmetric per tensor, the range from
  the user's calibration method (``calibrate_ranges``, the very function the
  quantize stage uses) over the same calibration samples of the float model,
  recomputed before each epoch; a layer's output is rounded after its fused
  ReLU / ReLU6 and BatchNorm, as the IR fuses them;
- ops that keep their input's scale in int8 (max pool, flatten, reshape,
  view, dropout, split) do not round; average pooling and means round to the
  input's scale; softmax, sigmoid and tanh round to TFLite's fixed output
  scales; any other op rounds its output with its own calibrated range.

Simplifications, on purpose: a concatenation's output is rounded at its own
range (the union of its inputs' ranges under minmax) after each input was
rounded at its own, where the int8 model rounds each input once at the
shared scale; requantization is float rounding, not the 32-bit fixed-point
multiply (they differ by at most one step on rare ties). The test holds the
fake-quantized forward within one output step of the int8 reference.

The result is the same float model (same architecture, same state_dict
keys, BatchNorm unfolded): it goes through the normal export -> import ->
quantize path, which re-calibrates with the same method and samples. The
ranges QAT trained against are therefore what quantize computes again, up to
the last epoch's weight updates; passing them on would need a second
calibration format and buys nothing measurable here.

Needs a forward that ``torch.fx.symbolic_trace`` can follow (pruning does
too); plain torch, no ``torch.ao``.
"""

from __future__ import annotations

import copy
import operator
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QuantizationError
from ..ir.graph import Graph
from ..reference.ops import LUT_OUTPUT_QUANT
from ..runfolder import RunFolder
from ..train.data import DataSplits
from ..train.fit import DEFAULT_BATCH_SIZE, deterministic_torch, evaluate, train
from .calibration import CALIBRATION_METHODS, CalibrationOptions, calibrate_ranges
from .quantize import activation_qparams

__all__ = ["DEFAULT_QAT_EPOCHS", "DEFAULT_QAT_LR", "QATConfig", "QATResult", "QATModel",
           "prepare_qat", "qat_finetune", "qat_for_run", "ir_accuracy", "fake_quant",
           "fake_quant_weight", "DEFAULT_QAT_GOAL", "QAT_MODES"]

DEFAULT_QAT_EPOCHS = 5
DEFAULT_QAT_LR = 1e-3

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_ACT_MODULES = (nn.ReLU, nn.ReLU6)
_ACT_FUNCTIONS = (F.relu, torch.relu, F.relu6)
_SAME_SCALE_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Unflatten, nn.Identity,
                       nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_SAME_SCALE_FUNCTIONS = (torch.flatten, torch.reshape, F.max_pool1d, F.max_pool2d, F.dropout,
                         torch.split, torch.chunk, torch.squeeze, torch.unsqueeze,
                         torch.permute, torch.transpose, operator.getitem)
_SAME_SCALE_METHODS = ("view", "reshape", "flatten", "contiguous", "permute", "transpose",
                       "squeeze", "unsqueeze", "split", "chunk")
_MEAN_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_MEAN_FUNCTIONS = (F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                   torch.mean)
_FIXED = (  # TFLite's fixed output quantization: (modules, functions, methods, (scale, zp))
    ((nn.Softmax,), (F.softmax, torch.softmax), ("softmax",), (1.0 / 256.0, -128)),
    ((nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid",), LUT_OUTPUT_QUANT["LOGISTIC"]),
    ((nn.Tanh,), (torch.tanh, F.tanh), ("tanh",), LUT_OUTPUT_QUANT["TANH"]),
)


def fake_quant(x: torch.Tensor, scale: float, zero_point: int,
               qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """Round ``x`` to the int8 grid (half away from zero) and back; STE gradient.

    The gradient is 1 where ``x`` lies inside the representable range and 0
    where it was clipped (the clipped value does not move with ``x``).
    """
    v = x.detach() / scale
    q = torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5) + zero_point, qmin, qmax)
    y = (q - zero_point) * scale
    inside = ((v + zero_point) >= qmin - 0.5) & ((v + zero_point) <= qmax + 0.5)
    xm = x * inside
    return y + (xm - xm.detach())


def fake_quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel (axis 0) symmetric int8, -127..127, as quantize_weights_per_channel.

    Returns the rounded weights (STE gradient 1) and the per-channel scales
    (float32, detached; an all-zero channel keeps scale 1).
    """
    amax = w.detach().reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w.detach() / scale.reshape(shape)), -127, 127)
    y = q * scale.reshape(shape)
    return y + (w - w.detach()), scale


@dataclass
class _Plan:
    """What the traced graph does at each node, decided once."""

    layers: dict[str, str] = field(default_factory=dict)      # conv/linear node -> BN module or ""
    folded: set[str] = field(default_factory=set)             # BN nodes folded into a layer
    points: list[str] = field(default_factory=list)           # nodes whose output has own range
    fixed: dict[str, tuple[float, int]] = field(default_factory=dict)  # softmax etc.
    source: dict[str, str] = field(default_factory=dict)      # node -> point its scale comes from
    requant: set[str] = field(default_factory=set)            # means: round at the input's scale


class QATModel(nn.Module):
    """``model`` run through fake quantization (see the module docstring).

    ``model``'s parameters are this module's parameters: training it trains
    them. The activation ranges are a buffer (saved with the state_dict, so a
    checkpoint keeps the ranges it was evaluated with). ``quantized=False``
    runs the plain float model (BatchNorm folded), which is what calibration
    observes.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as exc:  # noqa: BLE001 - fx raises many types
            raise QuantizationError(
                f"quantization-aware training needs a forward torch.fx can trace; tracing "
                f"{type(model).__name__} failed ({type(exc).__name__}: {exc}). Quantize "
                "without QAT, or write the forward without data-dependent control flow") from exc
        self.model = gm
        # The traced graph shares ``model``'s layers; keep ``model`` (unregistered, so
        # its parameters are not listed twice) to hand back the user's own class.
        self.__dict__["source_model"] = model
        self.quantized = True
        self._observe: dict[str, list[np.ndarray]] | None = None
        self.plan = self._make_plan(gm, example)
        self.register_buffer("ranges", torch.zeros(len(self.plan.points), 2, dtype=torch.float64))

    # -- planning ---------------------------------------------------------
    def _module(self, n: torch.fx.Node) -> nn.Module | None:
        return self.model.get_submodule(n.target) if n.op == "call_module" else None

    def _is(self, n: torch.fx.Node, modules: tuple, functions: tuple = (),
            methods: tuple = ()) -> bool:
        if n.op == "call_module":
            return isinstance(self._module(n), modules)
        if n.op == "call_function":
            return n.target in functions
        if n.op == "call_method":
            return n.target in methods
        return False

    def _make_plan(self, gm: torch.fx.GraphModule, example: torch.Tensor) -> _Plan:
        floating = _floating_outputs(gm, example)
        plan = _Plan()
        nodes = list(gm.graph.nodes)
        for n in nodes:
            if self._is(n, _LAYERS):
                users = list(n.users)
                bn = ""
                if len(users) == 1 and self._is(users[0], _BATCHNORMS):
                    m = self._module(users[0])
                    if m.running_mean is not None:
                        bn = users[0].target
                        plan.folded.add(users[0].name)
                plan.layers[n.name] = bn
        for n in nodes:
            if n.op == "output":
                continue
            src = next((plan.source[a.name] for a in n.all_input_nodes if a.name in plan.source),
                       None)
            if src is not None and self._is(n, _SAME_SCALE_MODULES, _SAME_SCALE_FUNCTIONS,
                                            _SAME_SCALE_METHODS):
                plan.source[n.name] = src  # also split's tuple, so getitem finds it
                continue
            if not floating.get(n.name, False):
                continue
            if src is not None and self._is(n, _MEAN_MODULES, _MEAN_FUNCTIONS, ("mean",)):
                plan.source[n.name] = src
                plan.requant.add(n.name)
                continue
            fixed = next((qp for mods, fns, meths, qp in _FIXED if self._is(n, mods, fns, meths)),
                         None)
            if fixed is not None:
                plan.fixed[n.name] = fixed
                plan.source[n.name] = n.name
                continue
            users = list(n.users)
            fused = len(users) == 1 and (users[0].name in plan.folded or self._is(
                users[0], _ACT_MODULES, _ACT_FUNCTIONS, ("relu", "relu6")))
            if fused:
                continue  # the BatchNorm / activation after it rounds
            plan.points.append(n.name)
            plan.source[n.name] = n.name
        # A layer rounds its bias at its input's scale: every input needs one.
        for n in nodes:
            if n.name in plan.layers:
                arg = n.args[0]
                if plan.source.get(arg.name) is None:
                    raise QuantizationError(
                        f"QAT cannot tell which int8 tensor layer '{n.target}' reads (its input "
                        f"'{arg.name}' comes from no op QAT knows); quantize without --qat")
        return plan

    # -- ranges -----------------------------------------------------------
    def set_ranges(self, ranges: dict[str, tuple[float, float]]) -> None:
        for i, p in enumerate(self.plan.points):
            self.ranges[i, 0], self.ranges[i, 1] = ranges[p]

    def get_ranges(self) -> dict[str, tuple[float, float]]:
        return {p: (float(self.ranges[i, 0]), float(self.ranges[i, 1]))
                for i, p in enumerate(self.plan.points)}

    def qparams(self) -> dict[str, tuple[float, int]]:
        """(scale, zero point) per rounding point, as quantize.activation_qparams gives them."""
        out = dict(self.plan.fixed)
        for p, (lo, hi) in self.get_ranges().items():
            qp = activation_qparams(lo, hi)
            out[p] = (float(qp.scale[0]), int(qp.zero_point[0]))
        return out

    @torch.no_grad()
    def observe(self, x: np.ndarray, batch: int) -> Iterator[dict[str, np.ndarray]]:
        """Float activations at every rounding point, per batch (what calibration watches)."""
        was, self.quantized = self.quantized, False
        training = self.training
        self.eval()  # calibration sees the inference model: no dropout
        batch = batch or 256
        try:
            for start in range(0, len(x), batch):
                self._observe = {}
                self(torch.from_numpy(np.ascontiguousarray(x[start:start + batch])))
                yield {k: np.concatenate(v) for k, v in self._observe.items()}
        finally:
            self._observe = None
            self.quantized = was
            self.train(training)

    # -- forward ----------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Any:
        qp = self.qparams() if self.quantized else {}
        return _Runner(self, qp).run(x)


class _Runner(torch.fx.Interpreter):
    def __init__(self, qat: QATModel, qp: dict[str, tuple[float, int]]) -> None:
        super().__init__(qat.model, garbage_collect_values=True)
        self.qat, self.qp = qat, qp
        self.plan = qat.plan

    def run_node(self, n: torch.fx.Node) -> Any:
        plan = self.plan
        if n.name in plan.folded:  # already in its layer's weights; may still round
            out = self.env[n.args[0]]
        elif n.name in plan.layers:
            out = self._layer(n, self.env[n.args[0]])
        else:
            out = super().run_node(n)
        if n.name in plan.requant and self.qp:
            out = fake_quant(out, *self.qp[plan.source[n.name]])
        elif n.name in plan.source and plan.source[n.name] == n.name:
            if self.qat._observe is not None and n.name in plan.points:
                self.qat._observe.setdefault(n.name, []).append(out.detach().numpy())
            if self.qp:
                out = fake_quant(out, *self.qp[n.name])
        return out

    def _layer(self, n: torch.fx.Node, x: torch.Tensor) -> torch.Tensor:
        m = self.qat.model.get_submodule(n.target)
        w, b = m.weight, m.bias
        if b is None:
            b = torch.zeros(w.shape[0], dtype=w.dtype)
        if self.plan.layers[n.name]:
            bn = self.qat.model.get_submodule(self.plan.layers[n.name])
            k = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
            w = w * k.reshape((-1,) + (1,) * (w.dim() - 1))
            b = (b - bn.running_mean) * k + (bn.bias if bn.affine else 0.0)
        if self.qp:
            w, ws = fake_quant_weight(w)
            s_in = self.qp[self.plan.source[n.args[0].name]][0]
            bs = (s_in * ws.double()).float()
            b = torch.round(b.detach() / bs) * bs + (b - b.detach())
        if isinstance(m, nn.Linear):
            return F.linear(x, w, b)
        return m._conv_forward(x, w, b)


def _floating_outputs(gm: torch.fx.GraphModule, example: torch.Tensor) -> dict[str, bool]:
    """Which nodes produce a floating-point tensor (shape arithmetic does not round)."""
    seen: dict[str, bool] = {}

    class Probe(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            seen[n.name] = isinstance(out, torch.Tensor) and out.is_floating_point()
            return out

    with torch.no_grad():
        Probe(gm).run(example)
    return seen


def prepare_qat(model: nn.Module, example: torch.Tensor) -> QATModel:
    """A fake-quantized twin of ``model`` (a deep copy; ``model`` is untouched)."""
    return QATModel(copy.deepcopy(model).eval(), example)


@dataclass
class QATConfig:
    """How to fine-tune: epochs, learning rate, and the calibration the quantize stage will use."""

    epochs: int = DEFAULT_QAT_EPOCHS
    lr: float = DEFAULT_QAT_LR
    batch_size: int = DEFAULT_BATCH_SIZE
    calibration: str = "minmax"
    calibration_samples: int = 500
    calibration_batch: int = 256
    options: CalibrationOptions = field(default_factory=CalibrationOptions)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise QuantizationError(f"QAT needs at least one epoch, got {self.epochs}; "
                                    "give --qat-epochs 1 or more")
        if self.calibration not in CALIBRATION_METHODS:
            raise QuantizationError(f"calibration method {self.calibration!r} is not available; "
                                    f"use one of {CALIBRATION_METHODS}")


@dataclass
class QATResult:
    """The fine-tuned float model and what QAT measured (validation split only)."""

    model: nn.Module
    val_accuracy_before: float
    val_accuracy_after: float
    best_epoch: int
    kept: bool
    history: list[dict[str, float]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"val_fake_quant_accuracy_before": self.val_accuracy_before,
                "val_fake_quant_accuracy_after": self.val_accuracy_after,
                "best_epoch": self.best_epoch, "kept": self.kept,
                "history": self.history, "seconds": round(self.seconds, 2)}


def calibrate_qat(qat: QATModel, calib_x: np.ndarray, config: QATConfig) -> None:
    """Set ``qat``'s ranges with the quantize stage's method on the float model's activations."""
    ranges = calibrate_ranges(lambda batch: qat.observe(calib_x, batch or config.calibration_batch),
                              config.calibration, config.options)
    qat.set_ranges(ranges)


def qat_finetune(model: nn.Module, splits: DataSplits, config: QATConfig | None = None,
                 progress: bool = False) -> QATResult:
    """Fine-tune a copy of ``model`` through fake quantization; return the float model.

    Ranges are re-calibrated before every epoch (``config.calibration`` on
    the first ``config.calibration_samples`` training samples, as the
    quantize stage does). The checkpoint kept is the epoch with the best
    fake-quantized validation accuracy (fit.train's rule); when no epoch
    beats the model before fine-tuning, the model is returned unchanged
    (``kept`` False).
    """
    config = config or QATConfig()
    t0 = time.time()
    example = torch.from_numpy(splits.x_train[:1])
    calib = splits.x_train[:config.calibration_samples]
    if len(calib) == 0:
        raise QuantizationError("QAT calibration set is empty: the training split has no samples")
    with deterministic_torch(config.seed):
        qat = prepare_qat(model, example)
        calibrate_qat(qat, calib, config)
        before = evaluate(qat, splits.x_val, splits.y_val)
    steps = (len(splits.y_train) + config.batch_size - 1) // config.batch_size
    count = [0]

    def recalibrate(m: nn.Module) -> None:
        count[0] += 1
        if count[0] % steps == 0:  # end of an epoch: the next one trains at fresh ranges
            calibrate_qat(qat, calib, config)

    res = train(qat, splits, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                seed=config.seed, progress=progress, description="QAT", after_step=recalibrate)
    kept = res.val_acc >= before
    out = qat.source_model if kept else copy.deepcopy(model)
    return QATResult(out.eval(), before, res.val_acc if kept else before, res.best_epoch, kept,
                     res.history, time.time() - t0)


#: ``microfit run --qat auto`` fine-tunes when int8 loses more than this (1 point) on validation.
DEFAULT_QAT_GOAL = 0.01
QAT_MODES = ("auto", "on", "off")


def ir_accuracy(fgraph: Graph, qgraph: Graph, x_nchw: np.ndarray, y: np.ndarray
                ) -> tuple[float, float]:
    """Top-1 accuracy of the float IR and of the int8 reference on ``(x, y)``."""
    from ..ir.onnx_import import nchw_to_ir
    from ..reference.executor import run_int8
    from ..reference.float_exec import run_float
    from .quantize import quantize_input

    x = nchw_to_ir(x_nchw)
    fpred = run_float(fgraph, x).reshape(len(x), -1).argmax(-1)
    out = run_int8(qgraph, quantize_input(x, qgraph.tensors[qgraph.inputs[0]].quant))
    qpred = out.reshape(len(out), -1).argmax(-1)
    return float(np.mean(fpred == y)), float(np.mean(qpred == y))


def qat_for_run(run: RunFolder, fgraph: Graph, qgraph: Graph,
                requantize: Callable[[Graph], Graph], mode: str = "on",
                epochs: int = DEFAULT_QAT_EPOCHS, calibration: str = "minmax",
                calibration_samples: int = 500, goal: float = DEFAULT_QAT_GOAL,
                progress: bool = False) -> tuple[Graph, Graph, dict[str, Any]]:
    """The quantize stage's QAT step: returns the float and int8 graphs to keep, and a summary.

    ``fgraph``/``qgraph`` are post-training quantization's result and
    ``requantize`` quantizes a float graph the same way. ``mode`` "on"
    fine-tunes and keeps the result; "auto" first measures the int8 drop on
    the validation split (the test split stays unseen) and fine-tunes only
    when it exceeds ``goal``, keeping QAT's model only when its int8
    validation accuracy is higher. Writes ``qat.pt`` (state_dict, loads like
    ``pruned.pt``) and ``qat.onnx`` when it fine-tunes.
    """
    from ..export.onnx_export import export_onnx
    from ..ir.onnx_import import import_onnx
    from ..train.data import load_splits

    if mode not in QAT_MODES:
        raise QuantizationError(f"--qat must be one of {QAT_MODES}, got {mode!r}")
    if mode != "off":
        QATConfig(epochs=epochs, calibration=calibration)  # bad options fail before any work
    splits = load_splits(run.need("data.npz"))
    info: dict[str, Any] = {"mode": mode, "goal": goal}
    if mode == "off":
        info.update(ran=False, used=False, decision="QAT off")
        return fgraph, qgraph, info
    float_val, int8_val = ir_accuracy(fgraph, qgraph, splits.x_val, splits.y_val)
    drop = float_val - int8_val
    info.update(ptq_float_val_accuracy=float_val, ptq_int8_val_accuracy=int8_val)
    head = (f"int8 validation accuracy {100 * int8_val:.2f}% is {100 * drop:.2f} points below "
            f"float {100 * float_val:.2f}% (goal {100 * goal:.2f})")
    if mode == "auto" and drop <= goal:
        info.update(ran=False, used=False, decision=f"QAT not needed: {head}")
        return fgraph, qgraph, info
    pruned = run.file("pruned.pt")
    if not pruned.exists():
        raise QuantizationError(
            f"QAT fine-tunes the pruned torch model, but {pruned} is missing: run `microfit prune "
            f"{run.path}` first (a run folder made from a .tflite has no torch model; quantize it "
            "without --qat)")
    from ..stages import _load_model  # the run's model factory + plan + weights

    model = _load_model(run, "pruned.pt")
    res = qat_finetune(model, splits, QATConfig(epochs=epochs, calibration=calibration,
                                                calibration_samples=calibration_samples,
                                                seed=run.settings().get("seed", 0)), progress)
    torch.save(res.model.state_dict(), run.file("qat.pt"))
    # 1e-4, not the prune stage's 1e-5: QAT may grow a layer's weights, and float32
    # summation-order differences between torch and onnxruntime grow with them.
    export_onnx(res.model, (1, *splits.input_shape), run.file("qat.onnx"), atol=1e-4)
    qfgraph = import_onnx(run.file("qat.onnx"))
    qqgraph = requantize(qfgraph)
    qat_float_val, qat_int8_val = ir_accuracy(qfgraph, qqgraph, splits.x_val, splits.y_val)
    used = mode == "on" or qat_int8_val > int8_val
    info.update(res.to_json(), ran=True, used=used, epochs=epochs,
                qat_float_val_accuracy=qat_float_val, qat_int8_val_accuracy=qat_int8_val)
    after = (f"QAT ({epochs} epochs) -> int8 validation accuracy {100 * qat_int8_val:.2f}% "
             f"(float {100 * qat_float_val:.2f}%)")
    if used:
        info["decision"] = f"{head}; {after}: using the QAT model (qat.onnx)"
        return qfgraph, qqgraph, info
    info["decision"] = f"{head}; {after}, no better: keeping post-training quantization"
    return fgraph, qgraph, info

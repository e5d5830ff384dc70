"""Float ONNX export of the (pruned) model, checked against torch with onnxruntime.

``float.onnx`` is what the IR importer reads, so it must be self-contained
(weights inside the file, not in a ``.data`` side file), have fixed names
(``input``/``output``) and batch 1, and be byte-identical for the same model
(DESIGN invariant 5). The exporter is torch's default (dynamo-based) one;
its optimizer folds eval-mode BatchNorm into the preceding Conv, so the IR
sees Conv/Relu/MaxPool/Reshape/Gemm for the default model.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MicrofitError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
# The lowest opset torch's exporter has implementations for.
_EXPORTER_OPSET = 18


class ExportError(MicrofitError):
    """The model could not be exported to ONNX, or the export disagrees with torch."""


@dataclass
class OnnxExport:
    """Where the model went and how closely onnxruntime reproduces torch."""

    path: Path
    opset: int
    op_types: list[str]
    max_abs_diff: float


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (opset notices, deprecation warnings).

    The exporter warns that it builds opset 18 and converts down to 17; that
    is expected here, and the resulting opset is checked after export.
    """
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_inputs(sample_shape: tuple[int, ...], inputs: np.ndarray | None,
                  count: int, seed: int) -> np.ndarray:
    if inputs is not None:
        arr = np.ascontiguousarray(inputs, dtype=np.float32)
        if tuple(arr.shape[1:]) != sample_shape:
            raise ValueError(
                f"check inputs have sample shape {tuple(arr.shape[1:])}, expected {sample_shape}"
            )
        return arr[:count] if count else arr
    # Uniform [0, 1) like normalised pixel data, plus an all-zero input.
    rng = np.random.default_rng(seed)
    arr = rng.random((max(count - 1, 0), *sample_shape), dtype=np.float32)
    return np.concatenate([np.zeros((1, *sample_shape), dtype=np.float32), arr])


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    *,
    check_inputs: np.ndarray | None = None,
    num_checks: int = 4,
    atol: float = 1e-5,
    seed: int = 0,
) -> OnnxExport:
    """Export ``model`` in eval mode to ``path`` and verify it with onnxruntime.

    ``input_shape`` is the full input shape with batch 1, e.g. ``(1, 1, 8,
    8)`` = ``(1, *splits.input_shape)``; it becomes the ONNX input's fixed
    shape. ``opset`` is the opset to write where the model converts to it;
    a model with an op that has no form at that opset keeps the exporter's
    own (18), and ``OnnxExport.opset`` says which was written. Up to
    ``num_checks`` inputs (from ``check_inputs``, an ``[N,
    *input_shape[1:]]`` array such as test images, or seeded uniform noise)
    run through both torch and onnxruntime one at a time; a max absolute
    difference above ``atol`` times the output's largest magnitude (at least
    1: float32 rounding grows with the values, and logits of 20 or more
    differ by 1e-5 between two correct runtimes) raises ExportError, as does
    an exporter failure or a wrong opset.
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 2 or shape[0] != 1:
        raise ValueError(
            f"input_shape {shape} must be the full input shape with batch 1, "
            "e.g. (1, *splits.input_shape)"
        )
    net = copy.deepcopy(model).cpu().float().eval()
    example = torch.zeros(shape, dtype=torch.float32)
    try:
        with torch.no_grad():
            net(example)
    except Exception as exc:
        # Usually a per-sample shape passed where the full one was meant.
        raise ValueError(
            f"{type(model).__name__} fails on a zero input of shape {shape} "
            f"({type(exc).__name__}: {exc}); input_shape must be the full input shape with "
            "batch 1, e.g. (1, *splits.input_shape)"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_exporter():
            torch.onnx.export(
                net, (example,), str(path),
                opset_version=max(opset, _EXPORTER_OPSET),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamo=True,
                # Inline weights: a side file would carry the .onnx file's
                # name inside the model, so renaming it breaks determinism.
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed for {type(model).__name__} with input "
            f"{list(shape)}: {type(exc).__name__}: {exc}"
        ) from exc

    proto = onnx.load(str(path))
    written = _EXPORTER_OPSET if opset < _EXPORTER_OPSET else opset
    if opset < _EXPORTER_OPSET:
        converted = _convert_down(proto, opset)
        if converted is not None:
            proto, written = converted, opset
            onnx.save(proto, str(path))
    got_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got_opset != written:
        raise ExportError(
            f"'{path}' was written with opset {got_opset}, not the requested {opset}; "
            "the exporter could not convert this model to that opset"
        )
    op_types = [n.op_type for n in proto.graph.node]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    max_diff = 0.0
    for i, x in enumerate(_check_inputs(shape[1:], check_inputs, num_checks, seed)):
        batch = x[None]
        with torch.no_grad():
            want = net(torch.from_numpy(batch)).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        if got.shape != want.shape:
            raise ExportError(
                f"'{path}' outputs shape {got.shape} but torch gives {want.shape}"
            )
        diff = float(np.max(np.abs(got - want)))
        max_diff = max(max_diff, diff)
        tol = atol * max(1.0, float(np.max(np.abs(want))))
        if not diff <= tol:
            raise ExportError(
                f"'{path}' disagrees with torch on check input {i}: max |onnxruntime - torch| = "
                f"{diff:.3g} > {tol:.3g} ({atol:g} x the largest output magnitude)"
            )
    return OnnxExport(path=path, opset=written, op_types=op_types, max_abs_diff=max_diff)


def _convert_down(proto, opset: int):  # onnx.ModelProto -> onnx.ModelProto | None
    """``proto`` converted to ``opset``, or None when an op has no older form.

    Done here, after the exporter's optimizer has made ReduceMean's axes an
    initializer (the exporter's own down-conversion runs before that and
    fails on global average pooling). onnx's converter keeps ReduceMean-18's
    ``noop_with_empty_axes`` attribute, which older ReduceMean rejects; at
    its default 0 it means nothing, so it is dropped. Ops without an adapter
    (Split-18 has none) keep the exporter's opset: a valid file at a newer
    opset beats no file.
    """
    import onnx
    from onnx import version_converter

    try:
        out = version_converter.convert_version(proto, opset)
    except Exception:  # noqa: BLE001 - the converter raises RuntimeError/AssertionError
        return None
    for node in out.graph.node:
        if node.op_type.startswith("Reduce") and opset < 18:
            keep = [a for a in node.attribute
                    if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            if len(keep) != len(node.attribute):
                del node.attribute[:]
                node.attribute.extend(keep)
    try:
        onnx.checker.check_model(out)
    except Exception:  # noqa: BLE001
        return None
    return out

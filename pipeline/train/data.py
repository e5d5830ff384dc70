"""Data for the run: train / validation / test splits as numpy arrays.

Every later stage (calibration, the integer reference, the on-device check)
reads the same ``data.npz`` from the run folder, so the split is made once,
seeded, and written byte-for-byte reproducibly. The test split is held out:
training picks its checkpoint on validation, calibration uses train data, and
only reports touch test.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, RunFolderError
from .userfunc import load_callable

ARRAY_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

# Digits split sizes: 400 test images leaves room for the >= 350 the on-device
# accuracy check wants, 200 validation images pick the checkpoint.
DIGITS_TEST = 400
DIGITS_VAL = 200


@dataclass
class DataSplits:
    """Float32 NCHW inputs and int64 labels, split three ways.

    ``input_shape`` is one sample's shape without the batch dimension, e.g.
    ``(1, 8, 8)``. (Functions that take a model input shape, such as
    count_macs_params and export_onnx, want the full shape with the batch:
    ``(1, *splits.input_shape)``.)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ARRAY_KEYS:
            value = np.asarray(getattr(self, key))
            if key.startswith("y") and value.dtype.kind == "f" and not np.all(value == np.round(value)):
                raise ValueError(f"{key} holds non-integer labels; labels must be class indices")
            dtype = np.float32 if key.startswith("x") else np.int64
            setattr(self, key, np.ascontiguousarray(value, dtype=dtype))
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.num_classes = int(self.num_classes)
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        self.class_names = [str(c) for c in self.class_names]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on inconsistent shapes or labels, naming the field."""
        for split in ("train", "val", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.ndim < 2:
                raise ValueError(f"x_{split} must be [N, ...], got shape {x.shape}")
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"x_{split} samples have shape {tuple(x.shape[1:])}, "
                    f"but input_shape is {self.input_shape}"
                )
            if y.shape != (x.shape[0],):
                raise ValueError(
                    f"y_{split} must be a vector of {x.shape[0]} labels, got shape {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"y_{split} has labels in [{y.min()}, {y.max()}], "
                    f"outside [0, {self.num_classes - 1}]"
                )
            if split != "test" and x.shape[0] == 0:
                raise ValueError(f"x_{split} is empty")
            if not np.isfinite(x).all():
                raise ValueError(f"x_{split} contains NaN or infinite values")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )

    def __repr__(self) -> str:
        return (
            f"DataSplits(train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def load_digits_splits(seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (no download), stratified and seeded.

    Pixel values 0..16 are scaled to [0, 1]; shapes are ``[N, 1, 8, 8]``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=DIGITS_TEST, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=DIGITS_VAL, stratify=y[rest], random_state=seed
    )
    return DataSplits(
        x_train=x[train], y_train=y[train],
        x_val=x[val], y_val=y[val],
        x_test=x[test], y_test=y[test],
        input_shape=(1, 8, 8),
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    )


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz that np.load reads, with fixed zip timestamps.

    np.savez stamps each member with the current time, which would make the
    same data produce different bytes on every run (DESIGN invariant 5).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def save_splits(splits: DataSplits, path: str | Path) -> Path:
    """Write ``splits`` to ``path`` (the run folder's data.npz); same data, same bytes."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {k: getattr(splits, k) for k in ARRAY_KEYS}
    arrays["input_shape"] = np.asarray(splits.input_shape, dtype=np.int64)
    arrays["num_classes"] = np.asarray(splits.num_classes, dtype=np.int64)
    arrays["class_names"] = np.asarray(splits.class_names, dtype=np.str_)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_npz_bytes(arrays))
    return path


def load_splits(path: str | Path) -> DataSplits:
    """Read a data.npz written by save_splits."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"data file '{path}' does not exist; run the data/train stage first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in (*ARRAY_KEYS, "input_shape", "num_classes") if k not in npz]
            if missing:
                raise ModelLoadError(f"data file '{path}' lacks {', '.join(missing)}")
            fields: dict[str, Any] = {k: npz[k] for k in ARRAY_KEYS}
            fields["input_shape"] = tuple(int(d) for d in npz["input_shape"])
            fields["num_classes"] = int(npz["num_classes"])
            names = npz["class_names"].tolist() if "class_names" in npz else []
            fields["class_names"] = [str(n) for n in names]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"data file '{path}' is not a readable .npz: {exc}") from exc
    try:
        return DataSplits(**fields)
    except ValueError as exc:
        raise ModelLoadError(f"data file '{path}' is inconsistent: {exc}") from exc


def load_user_data(spec: str) -> DataSplits:
    """Call the user's ``"file.py:func"`` data loader and check what it returns.

    The function takes no arguments and returns a DataSplits or a dict with
    the six arrays ``x_train, y_train, x_val, y_val, x_test, y_test``;
    ``input_shape`` (default: ``x_train.shape[1:]``), ``num_classes``
    (default: largest label + 1) and ``class_names`` are optional.
    """
    fn, where = load_callable(spec, "data loader")
    try:
        result = fn()
    except Exception as exc:
        raise ModelLoadError(
            f"data loader {where} raised {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(result, DataSplits):
        try:
            result.validate()
        except ValueError as exc:
            raise ModelLoadError(f"data loader {where} returned bad data: {exc}") from exc
        return result
    if not isinstance(result, Mapping):
        raise ModelLoadError(
            f"data loader {where} returned {type(result).__name__}; "
            "it must return a DataSplits or a dict with keys " + ", ".join(ARRAY_KEYS)
        )
    missing = [k for k in ARRAY_KEYS if k not in result]
    if missing:
        raise ModelLoadError(f"data loader {where} returned a dict without {', '.join(missing)}")
    unknown = sorted(set(result) - set(ARRAY_KEYS) - {"input_shape", "num_classes", "class_names"})
    if unknown:
        raise ModelLoadError(f"data loader {where} returned unknown keys {', '.join(unknown)}")
    try:
        fields: dict[str, Any] = {k: np.asarray(result[k]) for k in ARRAY_KEYS}
        fields["input_shape"] = tuple(result.get("input_shape", fields["x_train"].shape[1:]))
        labels = [fields[k] for k in ("y_train", "y_val", "y_test") if fields[k].size]
        default_classes = int(max(int(np.max(y)) for y in labels)) + 1 if labels else 0
        fields["num_classes"] = int(result.get("num_classes", default_classes))
        fields["class_names"] = list(result.get("class_names", []))
        return DataSplits(**fields)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"data loader {where} returned bad data: {exc}") from exc

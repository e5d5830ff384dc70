"""Data, the default model and deterministic training (the run's first stage)."""

from .data import DataSplits, load_digits_splits, load_splits, load_user_data, save_splits
from .fit import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    TrainResult,
    deterministic_torch,
    evaluate,
    predict,
    train,
)
from .models import DigitsCNN, ModelFactory, instantiate, load_model_factory, make_default_model

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "DataSplits",
    "DigitsCNN",
    "ModelFactory",
    "TrainResult",
    "deterministic_torch",
    "evaluate",
    "instantiate",
    "load_digits_splits",
    "load_model_factory",
    "load_splits",
    "load_user_data",
    "make_default_model",
    "predict",
    "save_splits",
    "train",
]

"""Access to the .tflite flatbuffer schema (generated Python code), without TensorFlow.

Two packages ship the generated object API (``ModelT``, ``TensorT``, ...):
``ai-edge-litert`` (the LiteRT interpreter) and ``tflite-micro``. Either is
enough to read and write .tflite files; microfit takes whichever is installed
so that ``microfit generate model.tflite`` needs neither PyTorch nor
TensorFlow.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import ModelLoadError

_SCHEMA_MODULES = (
    "ai_edge_litert.schema_py_generated",
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
)

#: Four bytes at offset 4 of every .tflite file.
FILE_IDENTIFIER = b"TFL3"
#: The schema version TFLite writes into ``Model.version``.
SCHEMA_VERSION = 3


def schema() -> ModuleType:
    """The generated schema module of the first package that provides it."""
    import importlib

    errors = []
    for name in _SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ModelLoadError(
        "reading or writing .tflite needs the flatbuffer schema from ai-edge-litert or "
        "tflite-micro: pip install 'microfit[oracles]' (tried " + "; ".join(errors) + ")")


def enum_names(enum_cls: type) -> dict[int, str]:
    """Value -> name of a generated flatbuffer enum class (e.g. BuiltinOperator)."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}

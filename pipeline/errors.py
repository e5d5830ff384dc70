"""Exception types a user can meet. Each message names the cause and the fix."""

from __future__ import annotations


class MicrofitError(Exception):
    """Base class: every error microfit raises on purpose derives from it."""


class ModelLoadError(MicrofitError):
    """A model factory, model file or data loader could not be loaded."""


class UnsupportedOpError(MicrofitError):
    """The model contains an operator or layer microfit cannot convert."""


class QuantizationError(MicrofitError):
    """The model cannot be quantized as asked (e.g. empty calibration set)."""


class BoardNotFoundError(MicrofitError):
    """No board file of that name exists in targets/."""


class ToolchainMissingError(MicrofitError):
    """A compiler, emulator or flashing tool is not installed."""


class BuildError(MicrofitError):
    """The generated project failed to compile or link."""


class FitError(MicrofitError):
    """The model does not fit the board's flash or RAM."""


class DeviceError(MicrofitError):
    """The device (or emulator) misbehaved on the serial link."""


class DeviceTimeoutError(DeviceError):
    """The device did not answer in time."""


class ProtocolError(DeviceError):
    """A frame was corrupt or unexpected and retries did not recover it."""


class ModelMismatchError(DeviceError):
    """The device runs a different model than the run folder describes."""


class PortError(DeviceError):
    """The serial port or socket could not be opened."""


class RunFolderError(MicrofitError):
    """A stage needs an artifact that the run folder does not have yet."""

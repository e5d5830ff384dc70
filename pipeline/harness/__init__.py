"""Host side of the device protocol: framing, the serial client, validation."""

from microfit.harness.client import DeviceClient, InferResult, LinkStats
from microfit.harness.protocol import DeviceInfo
from microfit.harness.validate import ValidationResult, validate

__all__ = [
    "DeviceClient",
    "DeviceInfo",
    "InferResult",
    "LinkStats",
    "ValidationResult",
    "validate",
]

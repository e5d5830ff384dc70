"""Emulators that run the firmware without hardware (QEMU for Cortex-M)."""

from microfit.emulate.qemu import QemuSession

__all__ = ["QemuSession"]

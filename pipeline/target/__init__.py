"""Boards and project rendering: from a board file and model sources to a buildable folder."""

from microfit.target.boards import (
    Board,
    CounterSpec,
    EmulatorSpec,
    MemoryRegion,
    ToolchainSpec,
    UartSpec,
    list_boards,
    load_board,
)
from microfit.target.project import render_project

__all__ = [
    "Board",
    "CounterSpec",
    "EmulatorSpec",
    "MemoryRegion",
    "ToolchainSpec",
    "UartSpec",
    "list_boards",
    "load_board",
    "render_project",
]

"""C runtime and per-family project templates, shipped as package data."""

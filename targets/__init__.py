"""Board description files (one TOML per board), shipped as package data."""

"""The build stage's source: compiling generated models for boards (firmware.py) and for
this host (host.py). Hand-written code, not build output; it was named `build` until
generic "build/ is generated" rules mistook it for output."""

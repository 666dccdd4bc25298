"""asr: end-to-end speech recognition toolkit (see README.md and DESIGN.md)."""

__version__ = "0.1.0"

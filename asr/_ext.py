"""Access to the compiled ops (`asr._C`, built from csrc/ by the package's build)."""

from __future__ import annotations

from types import ModuleType

_ops: ModuleType | None = None


def ops() -> ModuleType:
    """The compiled extension; a clear error naming the build command when it is missing."""
    global _ops
    if _ops is None:
        try:
            from . import _C
        except ImportError as e:
            raise RuntimeError(
                "asr's compiled ops (asr._C, from csrc/) are not built or do not match the installed torch: "
                "run `make setup` (or `pip install --no-build-isolation -e .` after installing torch)"
            ) from e
        _ops = _C
    return _ops

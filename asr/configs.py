"""Where `asr train` finds its Hydra configs.

The repository keeps one copy of them, the top-level conf/. A regular install (`pip install .`,
a wheel) ships that tree inside the package as asr/conf (setup.py's build_py copies it there).
An editable install or a plain checkout has no asr/conf and reads the repository's conf/ beside
the package. `asr train --config-dir DIR` reads a tree of one's own instead of either.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir(package_dir: Path = PACKAGE_DIR) -> Path:
    """The packaged package_dir/conf if it holds train.yaml, else the checkout's conf/ next to the package."""
    packaged = package_dir / "conf"
    if (packaged / "train.yaml").is_file():
        return packaged
    return package_dir.parent / "conf"


CONF_DIR = config_dir()

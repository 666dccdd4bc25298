"""A regular (non-editable) install ships the configs (issue 12).

The repository keeps one conf/ at the top; setup.py copies it into the wheel as asr/conf and
asr/configs.py finds it there, falling back to the checkout's conf/ for editable installs.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from asr.configs import config_dir

ROOT = Path(__file__).resolve().parents[1]


def test_config_dir_prefers_the_packaged_tree_else_the_checkouts(tmp_path):
    pkg = tmp_path / "site-packages" / "asr"
    pkg.mkdir(parents=True)
    assert config_dir(pkg) == tmp_path / "site-packages" / "conf"  # a checkout: conf/ beside asr/
    (pkg / "conf").mkdir()
    assert config_dir(pkg) == tmp_path / "site-packages" / "conf"  # an empty or partial asr/conf is not a config tree
    (pkg / "conf" / "train.yaml").write_text("defaults: []\n")
    assert config_dir(pkg) == pkg / "conf"  # installed: asr/conf inside the package


def test_checkout_reads_the_repository_conf():
    import asr
    from asr.train import CONF_DIR

    if Path(asr.__file__).resolve().parent != ROOT / "asr":
        pytest.skip(f"asr imported from {asr.__file__}, not from this checkout")
    assert CONF_DIR == ROOT / "conf"


def test_train_config_dir_reads_a_users_own_tree(tmp_path, monkeypatch):
    """`asr train --config-dir DIR` composes from DIR, not from the default tree."""
    import shutil

    import asr.train
    from asr.cli import main
    from asr.train import CONF_DIR

    mine = tmp_path / "my_conf"
    shutil.copytree(CONF_DIR, mine)
    (mine / "train.yaml").write_text((mine / "train.yaml").read_text().replace("seed: 42", "seed: 7"))
    seen = []
    monkeypatch.setattr(asr.train, "run_train", lambda cfg: seen.append(cfg) or tmp_path / "best.ckpt")
    assert main(["train", "--config-dir", str(mine), "trainer.max_epochs=3"]) == 0
    assert main(["train", "trainer.max_epochs=3"]) == 0
    assert [(c.seed, c.trainer.max_epochs) for c in seen] == [(7, 3), (42, 3)]


def _run(args: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    cmd = " ".join(map(str, args))
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout


def _source_files() -> list[str]:
    """The checkout's source files as git sees them (tracked, or untracked and not ignored): no
    build/, *.egg-info, compiled .so or data that a build could pick up instead of the sources."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


@pytest.mark.slow
def test_wheel_install_trains_outside_the_checkout(tiny_corpus, tmp_path):
    """Build an sdist from the checkout's sources and a wheel from that sdist (compiling csrc/,
    about 3 minutes on 2 cores), install it into a fresh venv, and train one step from a
    directory outside the checkout with the packaged configs.

    The build works on a copy of the sources, so nothing the checkout holds (build/, an egg-info
    with a stale SOURCES.txt, asr/_C*.so) is reused or written; going through the sdist checks
    that it carries conf/ and csrc/ too. The venv sees the dependencies already installed for
    this interpreter through a .pth file, appended after its own site-packages; that file adds
    directories only (a .pth inside them, such as an editable install's finder, is not run), so
    `asr` comes from the wheel."""
    src, dist, venv, work = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((ROOT / f).read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    build_sdist = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = _run([sys.executable, "-c", build_sdist, dist], cwd=src, env=env).strip().splitlines()[-1]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            dist / sdist,
            "-w",
            dist,
        ],
        cwd=tmp_path,
        env=env,
        timeout=1800,
    )
    (wheel,) = dist.glob("asr-*.whl")

    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env)
    py, asr_cmd = venv / "bin" / "python", venv / "bin" / "asr"
    # installed before the .pth exists, so pip does not see the editable asr of this interpreter
    _run(
        [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=tmp_path,
        env=env,
    )
    (purelib,) = {
        Path(p)
        for p in _run(
            [py, "-c", "import site; print(*site.getsitepackages(), sep='\\n')"], cwd=tmp_path, env=env
        ).split()
    }
    (purelib / "zz_deps_of_test_python.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))

    work.mkdir()
    imported = "import torch, asr, asr._C, asr.train as t; print(asr.__file__, asr._C.__file__, t.CONF_DIR)"
    where = _run([py, "-c", imported], cwd=work, env=env).split()
    pkg = purelib / "asr"
    assert [Path(w) for w in where] == [pkg / "__init__.py", *pkg.glob("_C*.so"), pkg / "conf"], where
    # the whole conf/ tree, byte for byte
    shipped = sorted(p.relative_to(pkg / "conf").as_posix() for p in (pkg / "conf").rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*") if p.is_file())
    assert all((pkg / "conf" / f).read_bytes() == (ROOT / "conf" / f).read_bytes() for f in shipped)
    assert "train.yaml" in shipped and {"model/conformer_ctc.yaml", "model/conformer_tdt.yaml"} <= set(shipped)

    # every config group with its options, as `asr train --help` lists them
    groups = [
        f"  {g.relative_to(ROOT / 'conf').as_posix()}: {', '.join(sorted(f.stem for f in g.glob('*.yaml')))}"
        for g in sorted(d for d in (ROOT / "conf").rglob("*") if d.is_dir())
    ]
    help_text = _run([asr_cmd, "train", "--help"], cwd=work, env=env)
    assert "\n".join(groups) in help_text and "  model: conformer_ctc," in help_text

    man, exp = work / "manifests", work / "exp"
    _run(
        [
            asr_cmd,
            "prepare",
            "librispeech",
            "--root",
            tiny_corpus,
            "--out",
            man,
            "--tokenizer",
            "char",
            "--splits",
            "train-clean",
            "dev-clean",
        ],
        cwd=work,
        env=env,
    )
    # data.max_duration=20: the default 100 s is more than a duration bucket of this corpus holds,
    # so the sampler (drop_last) would leave no training batch
    _run(
        [
            asr_cmd,
            "train",
            f"data.manifest_dir={man}",
            f"exp_dir={exp}",
            "data.max_duration=20",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "model.encoder.d_model=32",
            "model.encoder.num_layers=1",
            "model.encoder.subsampling_channels=8",
            "data.num_workers=0",
            "cmvn_utterances=8",
            "num_threads=2",
        ],
        cwd=work,
        env=env,
    )
    assert (exp / "best.ckpt").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["exp", "manifests"]  # nothing else written to the cwd

"""Shared fixtures: a tiny synthesized corpus (real espeak-ng speech) and its manifests; the
training tests' corpus and the models trained once per run for several test files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def speech_wave(tmp_path_factory) -> torch.Tensor:
    """About 3 s of real speech at 16 kHz from espeak-ng."""
    import subprocess

    # imported here, not at the top: collecting the loss tests needs no audio stack (soundfile), which
    # the GPU machine's image lacks (scripts/gpu_session.sh runs them there)
    from asr.data.audio import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make setup`")
    p = tmp_path_factory.mktemp("speech") / "a.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us+m3", "-w", str(p), "THE QUICK BROWN FOX JUMPS OVER SEVEN LAZY DOGS"], check=True
    )
    return load_audio(p)[0]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small LibriSpeech-layout corpus: 40 train, 8 dev, 8 test utterances."""
    from asr.data.synthetic import synthesize_corpus

    root = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    synthesize_corpus(root, {"train-clean": 40, "dev-clean": 8, "test-clean": 8}, seed=1, jobs=2)
    return root


@pytest.fixture(scope="session")
def tiny_manifests(tiny_corpus, tmp_path_factory) -> Path:
    """Manifests and a char tokenizer of `tiny_corpus` (`asr prepare librispeech`)."""
    from asr.cli import main

    man = tmp_path_factory.mktemp("tiny") / "manifests"
    assert main(["prepare", "librispeech", "--root", str(tiny_corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    return man


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(folder, corpus, manifests): training.PREPARED_SIZES synthesized (held-out dev and test
    voices) and prepared with a char tokenizer. The corpus the minutes-long training tests share."""
    from training import PREPARED_SEED, PREPARED_SIZES

    from asr.cli import main
    from asr.data.synthetic import synthesize_corpus

    tmp = tmp_path_factory.mktemp("train")
    corpus = synthesize_corpus(tmp / "LibriSpeech", PREPARED_SIZES, seed=PREPARED_SEED, jobs=2)
    man = tmp / "manifests"
    assert main(["prepare", "librispeech", "--root", str(corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    return tmp, corpus, man


@pytest.fixture(scope="session")
def transducer_exp(prepared) -> Path:
    """The exp dir of the shared streaming pruned RNN-T + CTC model (training.TRANSDUCER), trained
    once on `prepared` for test_train's accuracy test and test_export's runtimes."""
    from training import COMMON, TRANSDUCER

    from asr.cli import main

    tmp, _, man = prepared
    exp = tmp / "transducer_streaming"
    assert main(["train", *TRANSDUCER, f"exp_dir={exp}", f"data.manifest_dir={man}", *COMMON]) == 0
    return exp


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run on one torch thread, restoring the count afterwards. For tensors this small (and the
    compiled losses' per-utterance OpenMP loops over B = 2) a second thread only adds fork/join
    and synchronization, which costs 10x or more when the cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)

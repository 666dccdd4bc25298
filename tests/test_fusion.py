"""The score-provider protocol beam searches will share, FusionOptions and Fusion."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from asr.data.synthetic import generate_sentences
from asr.data.tokenizer import train_tokenizer
from asr.decoding.fusion import Fusion, FusionOptions, ScoreProvider, build_fusion
from asr.decoding.hotwords import ContextGraph
from asr.lm import NgramLM, train_lm

SENTENCES = generate_sentences(200, random.Random(0), set())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(tokenizer, lm.arpa, hotwords.txt)."""
    d = tmp_path_factory.mktemp("fusion")
    tok = train_tokenizer(SENTENCES, d / "tok.model", "bpe", 100)
    (d / "text.txt").write_text("\n".join(SENTENCES) + "\n")
    train_lm(d / "text.txt", tok, d / "lm.arpa", 3)
    words = SENTENCES[0].split()
    (d / "hot.txt").write_text(f"{' '.join(words[:2])}\n{' '.join(words[-2:])} :3.0\n")
    return tok, d / "lm.arpa", d / "hot.txt"


def test_lm_and_graph_satisfy_the_protocol(files):
    tok, lm_path, hot = files
    assert isinstance(NgramLM.load(lm_path, tok), ScoreProvider)
    assert isinstance(ContextGraph.from_file(hot, tok), ScoreProvider)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"lm_weight": -0.1}, "lm_weight must be a number >= 0"),
        ({"lm_weight": float("nan")}, "lm_weight must be a number >= 0"),
        ({"lm_weight": "0.5"}, "lm_weight must be a number >= 0"),
        ({"ilm_weight": 0.2}, "ilm_weight subtracts the model's internal LM .* give lm too"),
        ({"lm": "x.arpa", "ilm_weight": -1}, "ilm_weight must be a number >= 0"),
        ({"hotword_boost": 0}, "hotword_boost must be a number > 0"),
        ({"hotword_boost": True}, "hotword_boost must be a number > 0"),
        ({"lm": ""}, "lm must be a file path or None"),
        ({"hotwords": 3}, "hotwords must be a file path or None"),
    ],
)
def test_options_are_validated_once(kwargs, error):
    with pytest.raises(ValueError, match=error):
        FusionOptions(**kwargs)


def test_options_defaults_and_paths():
    o = FusionOptions(lm=Path("a/lm.arpa"), hotwords="hot.txt")
    assert o.lm == "a/lm.arpa" and o.active and o.to_dict()["lm_weight"] == 0.3
    assert not FusionOptions().active and not FusionOptions(lm="x.arpa", lm_weight=0).active
    with pytest.raises(AttributeError):
        o.lm_weight = 1.0  # frozen


def test_build_fusion(files):
    tok, lm_path, hot = files
    assert build_fusion(FusionOptions(), tok) is None
    # weight 0: the LM is not even read, so decoding equals decoding without one
    assert build_fusion(FusionOptions(lm="/nonexistent.arpa", lm_weight=0.0), tok) is None
    f = build_fusion(FusionOptions(lm=str(lm_path), lm_weight=0.5, hotwords=str(hot), hotword_boost=2.0), tok)
    assert f.names == ["lm", "hotwords"] and f.weights == [0.5, 1.0] and f.vocab_size == len(tok)
    assert f.get("hotwords").phrases[1].boost == 3.0 and f.get("nothing") is None
    with pytest.raises(FileNotFoundError, match="nope.arpa: ARPA language model not found"):
        build_fusion(FusionOptions(lm="nope.arpa"), tok)


def test_fusion_is_the_weighted_sum_of_its_providers(files):
    tok, lm_path, hot = files
    lm, graph = NgramLM.load(lm_path, tok), ContextGraph.from_file(hot, tok, boost=2.0)
    f = Fusion([("lm", lm, 0.4), ("hotwords", graph, 1.0)])
    ids = tok.encode(SENTENCES[0])
    state, total = f.initial_state(), 0.0
    states = [state]
    for t in ids:
        d, state = f.score(state, t)
        total += d
        states.append(state)
    total += f.final_score(state)
    hot_total = sum(m.phrase.boost * len(m.phrase.tokens) for m in graph.matches(ids))
    assert hot_total > 0
    assert total == pytest.approx(0.4 * lm.sentence_score(ids) + hot_total, abs=1e-6)
    # batched: rows for every token, next states per provider
    batch = torch.tensor(states)
    delta, nxt = f.score_all(batch)
    assert delta.shape == (len(states), len(tok)) and nxt.shape == (len(states), len(tok), 2)
    assert torch.equal(f.initial_states(3), torch.tensor([f.initial_state()] * 3))
    for i, s in enumerate(states[:-1]):
        d, s2 = f.score(s, ids[i])
        assert float(delta[i, ids[i]]) == pytest.approx(d, abs=1e-5) and tuple(nxt[i, ids[i]].tolist()) == s2
    assert torch.all(delta[:, 0] == 0) and torch.equal(nxt[:, 0], batch)  # blank: no event


def test_fusion_rejects_mismatched_providers(files):
    tok, lm_path, _ = files
    with pytest.raises(ValueError, match="at least one provider"):
        Fusion([])
    graph = ContextGraph([], vocab_size=7)
    with pytest.raises(ValueError, match=r"disagree on the vocabulary size: \[7, 100\]"):
        Fusion([("lm", NgramLM.load(lm_path, tok), 1.0), ("hotwords", graph, 1.0)])

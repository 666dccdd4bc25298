"""Hotword biasing: the Aho-Corasick context graph's bonuses, matches and phrase files."""

from __future__ import annotations

import random

import pytest
import torch

from asr.data.tokenizer import BLANK_ID, train_tokenizer
from asr.decoding.hotwords import ContextGraph, HotwordsError, Phrase, phrases_from_lines, read_hotwords

TEXTS = ["THE RED HORSE CARRIES SEVEN BOXES", "A CAT SEES THE BLUE DOG", "DON'T MOVE THE CHAIRS"] * 10
V = 10  # token ids 1..9 in the synthetic graphs below


def phrase(tokens: list[int] | str, boost: float = 1.0) -> Phrase:
    toks = tuple(int(t) for t in tokens)
    return Phrase(" ".join(map(str, toks)), toks, boost, "test")


def walk(graph: ContextGraph, tokens: list[int], finalize: bool = True) -> tuple[list[float], int]:
    """The bonus of each step (and of finalize) and the last state."""
    state, bonuses = graph.initial_state(), []
    for t in tokens:
        b, state = graph.forward(state, t)
        bonuses.append(b)
    if finalize:
        bonuses.append(graph.finalize(state))
    return bonuses, state


def test_full_match_gets_boost_per_token():
    g = ContextGraph([phrase("123", 2.0)], V)
    bonuses, state = walk(g, [1, 2, 3])
    assert bonuses == pytest.approx([2.0, 2.0, 2.0, 0.0])  # b per token; nothing to take back at the end
    assert [p.tokens for p in g.fired(state)] == [(1, 2, 3)]
    bonuses, _ = walk(g, [5, 1, 2, 3, 5])  # inside other tokens
    assert sum(bonuses) == pytest.approx(6.0) and bonuses[-2:] == [0.0, 0.0]


def test_abandoned_prefix_is_taken_back():
    g = ContextGraph([phrase("1234", 1.5)], V)
    bonuses, _ = walk(g, [1, 2, 3, 7], finalize=False)  # abandoned by a token
    assert bonuses == pytest.approx([1.5, 1.5, 1.5, -4.5])
    bonuses, _ = walk(g, [1, 2])  # the hypothesis ends inside the phrase: finalize takes it back
    assert bonuses == pytest.approx([1.5, 1.5, -3.0])
    assert g.matches([1, 2, 3, 7]) == []


def test_fail_links_restart_a_match_inside_an_abandoned_one():
    g = ContextGraph([phrase("129"), phrase("23")], V)
    bonuses, state = walk(g, [1, 2, 3])
    # 1 2 builds toward `1 2 9`; 3 abandons it but `2 3` was matching all along
    assert bonuses == pytest.approx([1.0, 1.0, 0.0, 0.0]) and sum(bonuses) == 2.0
    assert [(m.phrase.tokens, m.start, m.end) for m in g.matches([1, 2, 3])] == [((2, 3), 1, 3)]
    # a repeated first token restarts the same phrase
    g = ContextGraph([phrase("112")], V)
    assert sum(walk(g, [1, 1, 1, 2])[0]) == pytest.approx(3.0)


def test_overlapping_phrases_each_fire():
    # one a prefix of the other: `1 2` fires on the way to `1 2 3`
    g = ContextGraph([phrase("12"), phrase("123")], V)
    assert sum(walk(g, [1, 2, 3])[0]) == pytest.approx(2 + 3)
    assert sum(walk(g, [1, 2, 7])[0]) == pytest.approx(2)  # the longer abandoned, the shorter kept
    assert sum(walk(g, [1, 2])[0]) == pytest.approx(2)  # the longer unfinished
    # one a suffix of the other: `1 2` fires inside `5 1 2` through an output link
    g = ContextGraph([phrase("512", 2.0), phrase("12")], V)
    bonuses, state = walk(g, [5, 1, 2])
    assert sum(bonuses) == pytest.approx(2 * 3 + 2) and [p.tokens for p in g.fired(state)] == [(5, 1, 2), (1, 2)]
    assert sum(walk(g, [6, 1, 2])[0]) == pytest.approx(2)


def test_per_phrase_boosts_and_repeated_phrases():
    g = ContextGraph([phrase("123", 2.0), phrase("12", 3.0), phrase("34", 0.5), phrase("12", 1.0)], V)
    assert sum(walk(g, [1, 2, 3, 4])[0]) == pytest.approx(3.0 * 2 + 2.0 * 3 + 0.5 * 2)
    # a repeated phrase counts once, with the larger boost; phrases stay in the given order
    assert [(p.tokens, p.boost) for p in g.phrases] == [((1, 2, 3), 2.0), ((1, 2), 3.0), ((3, 4), 0.5)]


def test_bonuses_add_up_to_the_phrases_that_fired_whatever_the_sequence():
    """Against a brute-force substring search, for many overlapping phrases and random sequences."""
    phrases = [phrase("12"), phrase("123", 2.0), phrase("412", 0.5), phrase("234", 3.0), phrase("3", 0.7)]
    phrases += [phrase("1256", 1.2), phrase("5555", 0.3)]
    g = ContextGraph(phrases, V)
    value = {p.tokens: p.boost * len(p.tokens) for p in phrases}
    rng = random.Random(0)
    for _ in range(2000):
        toks = [rng.choice([1, 2, 3, 4, 5, 5, 6, 7]) for _ in range(rng.randrange(0, 14))]
        brute = [
            (p.tokens, i, i + len(p.tokens))
            for p in phrases
            for i in range(len(toks))
            if tuple(toks[i : i + len(p.tokens)]) == p.tokens
        ]
        found = [(m.phrase.tokens, m.start, m.end) for m in g.matches(toks)]
        assert sorted(found) == sorted(brute)
        assert sum(walk(g, toks)[0]) == pytest.approx(sum(value[t] for t, _, _ in brute))


def test_score_all_equals_forward_and_blank_is_no_event():
    g = ContextGraph([phrase("12"), phrase("123", 2.0), phrase("23", 0.5)], V)
    states = torch.arange(g.num_states)
    bonus, nxt = g.score_all(states)
    assert bonus.shape == nxt.shape == (g.num_states, V)
    for s in range(g.num_states):
        for t in range(V):
            b, n = g.forward(s, t)
            assert float(bonus[s, t]) == pytest.approx(b) and int(nxt[s, t]) == n
    assert torch.all(bonus[:, BLANK_ID] == 0) and torch.equal(nxt[:, BLANK_ID], states)
    assert g.score(1, 2) == g.forward(1, 2)  # the ScoreProvider names
    assert g.final_score(1) == g.finalize(1)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(TEXTS, tmp_path_factory.mktemp("hw") / "bpe.model", "bpe", 60)


def test_phrases_in_real_sentences(tok, tmp_path):
    f = tmp_path / "hot.txt"
    f.write_text("# two phrases\nSEVEN BOXES\n\n  BLUE   DOG :3.5\n")
    phrases = read_hotwords(f, tok, boost=2.0)
    assert [(p.text, p.boost, p.where) for p in phrases] == [
        ("SEVEN BOXES", 2.0, f"{f}:2"),
        ("BLUE DOG", 3.5, f"{f}:4"),
    ]
    g = ContextGraph.from_file(f, tok, boost=2.0)
    ids = tok.encode("THE RED HORSE CARRIES SEVEN BOXES")
    assert [m.phrase.text for m in g.matches(ids)] == ["SEVEN BOXES"]
    bonuses, _ = walk(g, ids)
    assert sum(bonuses) == pytest.approx(2.0 * len(tok.encode("SEVEN BOXES")))
    assert g.matches(tok.encode("A CAT SEES THE BLUE DOG"))[0].phrase.boost == 3.5
    assert phrases_from_lines(["SEVEN BOXES :1.0", "", "# no"], tok)[0].where == "phrase 1"


@pytest.mark.parametrize(
    "text,error",
    [
        ("SEVEN BOXES :two\n", r"hot.txt:1: boost 'two' is not a number \(write `PHRASE :2.5`\)"),
        ("SEVEN\nBOXES :0\n", r"hot.txt:2: boost must be a positive number, not '0'"),
        ("SEVEN :-1\n", r"hot.txt:1: boost must be a positive number, not '-1'"),
        ("SEVEN :nan\n", r"hot.txt:1: boost must be a positive number, not 'nan'"),
        (":2.0\n", r"hot.txt:1: a boost but no phrase before it"),
        ("\nSEVEN ZEBRAS\n", r"hot.txt:2: 'SEVEN ZEBRAS' has characters the tokenizer cannot encode: 'Z'"),
        ("seven boxes\n", r"hot.txt:1: 'seven boxes' has .* the tokenizer knows 'SEVEN BOXES' \(write phrases cased"),
        ("# only a comment\n\n", r"hot.txt: no phrase \(one a line; blank and # lines are skipped\)"),
    ],
)
def test_bad_lines_name_file_and_line(tok, tmp_path, text, error):
    f = tmp_path / "hot.txt"
    f.write_text(text)
    with pytest.raises(HotwordsError, match=error):
        ContextGraph.from_file(f, tok)


def test_unreadable_and_missing_files(tok, tmp_path):
    f = tmp_path / "hot.txt"
    f.write_bytes(b"SEVEN\n\xff BOXES\n")
    with pytest.raises(HotwordsError, match=r"hot.txt:2: not UTF-8 text"):
        read_hotwords(f, tok)
    with pytest.raises(FileNotFoundError, match="nope.txt: hotwords file not found"):
        read_hotwords(tmp_path / "nope.txt", tok)
    with pytest.raises(HotwordsError, match=r"test: '0 3' has token ids \(0, 3\) outside 1..9"):
        ContextGraph([phrase("03")], V)

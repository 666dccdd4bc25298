"""The token n-gram LM: Kneser-Ney estimation, ARPA files, the beam-search scorer, `asr lm`."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from asr.cli import main
from asr.data.synthetic import generate_sentences
from asr.data.tokenizer import BLANK_ID, load_tokenizer, train_tokenizer
from asr.lm import Arpa, ArpaError, NgramLM, estimate, read_arpa, train_lm, write_arpa
from asr.lm.arpa import BOS, EOS

SENTENCES = generate_sentences(300, random.Random(0), set())


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("lm") / "text.txt"
    p.write_text("\n".join(SENTENCES) + "\n")
    return p


@pytest.fixture(scope="module", params=[("char", 0, 5), ("bpe", 120, 3)], ids=["char5", "bpe3"])
def trained(request, text_file, tmp_path_factory):
    """(tokenizer, NgramLM read back from the ARPA file, Arpa) for a char and a BPE tokenizer."""
    kind, size, order = request.param
    d = tmp_path_factory.mktemp(kind)
    tok = train_tokenizer(SENTENCES, d / "tok.model", kind, size)
    est, report = train_lm(text_file, tok, d / "lm.arpa", order)
    assert report.kept == len(SENTENCES) and not report.skipped
    return tok, NgramLM.load(d / "lm.arpa", tok), read_arpa(d / "lm.arpa")


def reference_logprob(arpa: Arpa, history: tuple[str, ...], word: str) -> float:
    """ln p(word | full history) by the textbook back-off recursion over the ARPA tables (slow)."""
    h = history[-(arpa.order - 1) :] if arpa.order > 1 else ()
    total = 0.0
    while True:
        entry = arpa.ngrams[len(h)].get(h + (word,))
        if entry is not None:
            return (total + entry[0]) * math.log(10)
        if not h:
            unk = arpa.ngrams[0].get(("<unk>",))
            return (total + (unk[0] if unk else -99.0)) * math.log(10)
        bow = arpa.ngrams[len(h) - 1].get(h, (0.0, None))[1]
        total += bow or 0.0
        h = h[1:]


def test_hand_computed_bigram(tmp_path):
    """Interpolated KN on `<s> A B </s>`, `<s> B </s>` over {<unk>, ▁, A, B, </s>}, computed by hand.

    Bigram counts of counts t1=3, t2=1 and unigram continuation counts (A 1, B 2, </s> 1: t1=2,
    t2=1) leave modified KN undefined, so each order uses one discount D = t1 / (t1 + 2 t2):
    0.6 for bigrams, 0.5 for unigrams. Unigrams: p(w) = max(c - 0.5, 0) / 4 + (0.5 * 3 / 4) / 5:
    A 0.2, B 0.45, </s> 0.2, <unk> = ▁ = 0.075. Bigrams after <s> (A 1, B 1; gamma = 0.6 * 2 / 2):
    p(A|<s>) = 0.4 / 2 + 0.6 * 0.2 = 0.32; after A (B 1; gamma 0.6): p(B|A) = 0.4 + 0.6 * 0.45 = 0.67;
    after B (</s> 2; gamma = 0.6 / 2): p(</s>|B) = 1.4 / 2 + 0.3 * 0.2 = 0.76, p(A|B) = 0.3 * 0.2.
    """
    vocab = ["<unk>", "▁", "A", "B"]
    est = estimate([["A", "B"], ["B"]], 2, vocab)
    assert est.modified == [False, False]
    assert est.discounts[0] == pytest.approx((0.5,) * 3) and est.discounts[1] == pytest.approx((0.6,) * 3)
    uni, bi = est.arpa.ngrams

    def p(table, *g):
        return 10 ** table[g][0]

    assert [p(uni, w) for w in ("A", "B", EOS, "<unk>", "▁")] == pytest.approx([0.2, 0.45, 0.2, 0.075, 0.075])
    assert p(bi, BOS, "A") == pytest.approx(0.32) and p(bi, "A", "B") == pytest.approx(0.67)
    assert p(bi, "B", EOS) == pytest.approx(0.76)
    assert 10 ** uni[(BOS,)][1] == pytest.approx(0.6) and 10 ** uni[("B",)][1] == pytest.approx(0.3)
    assert uni[(EOS,)][1] is None and uni[(BOS,)][0] == -99.0

    # the scorer over a tokenizer with these pieces
    tok = train_tokenizer(["AB", "B A"], tmp_path / "c.model", "char")
    ids = {tok.sp.id_to_piece(i): i for i in range(len(tok))}
    assert set(ids) == {"<blk>", "<unk>", "▁", "A", "B"}
    write_arpa(est.arpa, tmp_path / "lm.arpa")
    lm = NgramLM.load(tmp_path / "lm.arpa", tok)
    s0 = lm.initial_state()
    lp, s1 = lm.score(s0, ids["A"])
    assert lp == pytest.approx(math.log(0.32))
    lp, s2 = lm.score(s1, ids["B"])
    assert lp == pytest.approx(math.log(0.67))
    assert lm.final_score(s2) == pytest.approx(math.log(0.76))
    assert lm.score(s2, ids["A"])[0] == pytest.approx(math.log(0.3 * 0.2))  # seen history, unseen bigram
    # back-off: p(▁|<s>) = gamma(<s>) p(▁); the history ▁ was never seen: plain unigrams after it
    lp, s3 = lm.score(s0, ids["▁"])
    assert lp == pytest.approx(math.log(0.6 * 0.075)) and lm.history(s3) == ()
    assert lm.score(s3, ids["A"])[0] == pytest.approx(math.log(0.2))
    assert lm.score(s3, BLANK_ID) == (0.0, s3)
    assert lm.sentence_score([ids["A"], ids["B"]]) == pytest.approx(math.log(0.32 * 0.67 * 0.76))


def test_modified_discounts_follow_chen_goodman():
    """On a real corpus the highest order's discounts come from its raw counts of counts:
    Y = t1 / (t1 + 2 t2), D(k) = k - (k + 1) Y t(k+1) / t(k)."""
    from collections import Counter

    words = [s.split() for s in SENTENCES]
    est = estimate(words, 3, sorted({w for s in words for w in s}))
    # the trigrams: every window of three in <s> w1 .. wn </s>
    grams = Counter(tuple(t[i : i + 3]) for s in words for t in [[BOS, *s, EOS]] for i in range(len(t) - 2))
    t = Counter(grams.values())  # t[k]: how many trigrams occur exactly k times
    y = t[1] / (t[1] + 2 * t[2])
    want = (1 - 2 * y * t[2] / t[1], 2 - 3 * y * t[3] / t[2], 3 - 4 * y * t[4] / t[3])
    assert est.modified[2] and est.discounts[2] == pytest.approx(want)


def test_probabilities_sum_to_one_for_every_history(trained):
    tok, lm, _ = trained
    for state in range(lm.num_states):
        lp, _ = lm.score_all(torch.tensor([state]))
        p = lp[0, 1:].double().exp().sum() + math.exp(lm.final_score(state))  # every token but blank, and </s>
        assert float(p) == pytest.approx(1.0, abs=1e-5), lm.history(state)


def test_scores_equal_the_back_off_recursion_over_full_histories(trained):
    """The scorer's states lose nothing: it equals the ARPA recursion over the whole history,
    for training sentences and for random token sequences (unseen histories)."""
    tok, lm, arpa = trained
    pieces = [tok.sp.id_to_piece(i) for i in range(len(tok))]
    rng = random.Random(1)
    seqs = [tok.encode(s) for s in SENTENCES[:20]]
    seqs += [[rng.randrange(1, len(tok)) for _ in range(rng.randrange(1, 15))] for _ in range(30)]
    for ids in seqs:
        state, hist = lm.initial_state(), (BOS,)
        for t in ids:
            lp, state = lm.score(state, t)
            assert lp == pytest.approx(reference_logprob(arpa, hist, pieces[t]), abs=1e-9)
            hist += (pieces[t],)
        assert lm.final_score(state) == pytest.approx(reference_logprob(arpa, hist, EOS), abs=1e-9)


def test_score_all_equals_score(trained):
    tok, lm, _ = trained
    states = torch.tensor([lm.initial_state(), 0, lm.num_states - 1, lm.initial_state()])
    lp, nxt = lm.score_all(states)
    assert lp.shape == nxt.shape == (4, len(tok)) and lp.dtype == torch.float32
    for i, s in enumerate(states.tolist()):
        for t in range(len(tok)):
            want_lp, want_next = lm.score(s, t)
            assert float(lp[i, t]) == pytest.approx(want_lp, abs=1e-5) and int(nxt[i, t]) == want_next
    assert torch.all(lp[:, BLANK_ID] == 0) and torch.equal(nxt[:, BLANK_ID], states)


def test_arpa_round_trip_is_exact(trained, tmp_path):
    _, _, arpa = trained
    write_arpa(arpa, tmp_path / "a.arpa")
    again = read_arpa(tmp_path / "a.arpa")
    assert again.ngrams == arpa.ngrams
    write_arpa(again, tmp_path / "b.arpa")
    assert (tmp_path / "a.arpa").read_bytes() == (tmp_path / "b.arpa").read_bytes()


KENLM_STYLE = """
\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-99 <s> -0.3
-0.5 A -0.2
-0.6 B
-0.7 </s>

\\2-grams:
-0.1 <s> A
-0.2 A B

\\end\\
"""


def test_reads_other_writers_files_and_names_bad_lines(tmp_path):
    p = tmp_path / "k.arpa"
    p.write_text(KENLM_STYLE.replace("-0.5 A", "-0.5  A"))  # any white space between fields
    arpa = read_arpa(p)
    assert arpa.order == 2 and arpa.ngrams[0][("A",)] == (-0.5, -0.2) and arpa.ngrams[1][("A", "B")] == (-0.2, None)
    p.write_text(KENLM_STYLE.replace("\\end\\", ""))
    with pytest.raises(ArpaError, match=r"k.arpa: ends without \\end\\ \(truncated\?\)"):
        read_arpa(p)
    p.write_text(KENLM_STYLE.replace("ngram 2=2", "ngram 2=3"))
    with pytest.raises(ArpaError, match=r"k.arpa:16: the 2-gram section has 2 entries but the header says 3"):
        read_arpa(p)
    p.write_text(KENLM_STYLE.replace("-0.6 B", "x.6 B"))
    with pytest.raises(ArpaError, match=r"k.arpa:9: 'x.6' is not a number"):
        read_arpa(p)
    p.write_text(KENLM_STYLE.replace("-0.2 A B", "-0.2 A"))
    with pytest.raises(ArpaError, match=r"k.arpa:14: a 2-gram line holds"):
        read_arpa(p)
    p.write_text("hello\n")
    with pytest.raises(ArpaError, match=r"no \\data\\ header"):
        read_arpa(p)
    with pytest.raises(FileNotFoundError, match="nope.arpa: ARPA language model not found"):
        read_arpa(tmp_path / "nope.arpa")


def test_words_outside_the_tokenizer_are_a_clear_error(tmp_path):
    tok = train_tokenizer(["AB", "B A"], tmp_path / "c.model", "char")
    (tmp_path / "w.arpa").write_text(KENLM_STYLE.replace(" A", " CAT"))
    with pytest.raises(ArpaError, match=r"w.arpa: words \['CAT'\] .*another tokenizer, or over words"):
        NgramLM.load(tmp_path / "w.arpa", tok)


def test_lines_the_tokenizer_cannot_encode_are_skipped_and_named(tmp_path, caplog):
    tok = train_tokenizer(SENTENCES, tmp_path / "c.model", "char")
    text = tmp_path / "t.txt"
    text.write_bytes(b"THE CAT\n\nthe lower case line\n\xff\xfe\nA DOG\n")
    est, report = train_lm(text, tok, tmp_path / "lm.arpa", 2)
    assert (report.lines, report.kept) == (4, 2) and est.sentences == 2
    assert report.skipped[0].startswith(f"{text}:3: characters outside the tokenizer")
    assert report.skipped[1].startswith(f"{text}:4: not UTF-8 text")
    assert f"{text}:3" in caplog.text
    text.write_text("all lower case\n")
    with pytest.raises(ValueError, match=r"t.txt: no usable line \(0 of 1 lines kept, 1 skipped\):\n  .*t.txt:1:"):
        train_lm(text, tok, tmp_path / "lm2.arpa", 2)


def test_state_count_is_bounded_by_the_model_and_cache_by_bytes(trained):
    tok, lm, arpa = trained
    assert lm.num_states <= 1 + sum(len(t) for t in arpa.ngrams[: arpa.order - 1])
    rng = random.Random(0)
    for _ in range(200):  # long random histories reach no new states
        state = lm.initial_state()
        for _ in range(30):
            state = lm.score(state, rng.randrange(1, len(tok)))[1]
            assert 0 <= state < lm.num_states
    small = NgramLM(arpa, tok, cache_mb=0)
    assert small._row.cache_info().maxsize == 64
    assert small.sentence_score(tok.encode(SENTENCES[0])) == pytest.approx(lm.sentence_score(tok.encode(SENTENCES[0])))


def test_cli_train_and_perplexity(text_file, tmp_path, capsys):
    tok = train_tokenizer(SENTENCES, tmp_path / "tok.model", "bpe", 120)
    # the tokenizer may come from a checkpoint too
    torch.save({"hyper_parameters": {}, "tokenizer": tok.model_proto}, tmp_path / "m.ckpt")
    assert load_tokenizer(tmp_path / "m.ckpt").encode("THE CAT") == tok.encode("THE CAT")
    out = tmp_path / "lm" / "lm.arpa"
    args = ["lm", "train", "--order", "3", "--text", str(text_file), "--tokenizer", str(tmp_path / "m.ckpt")]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: order 3 over {len(tok)} tokens; 1-grams {len(tok) + 1}," in printed  # and <s>, </s>, less blank
    assert "300 sentences" in printed and "300 of 300 lines kept, 0 skipped" in printed
    ref = tmp_path / "test.ref.txt"
    ref.write_text("".join(f"utt-{i} {s}\n" for i, s in enumerate(generate_sentences(20, random.Random(5), set()))))
    assert main(["lm", "perplexity", "--lm", str(out), "--tokenizer", str(tmp_path / "tok.model"),
                 "--text", str(ref), "--skip-ids"]) == 0  # fmt: skip
    ppl = float(capsys.readouterr().out.split()[1])
    assert 1.0 < ppl < 20.0  # the grammar is very predictable
    with pytest.raises(SystemExit, match=r"asr lm train: .*nope.txt: text file not found"):
        main(["lm", "train", "--text", str(tmp_path / "nope.txt"), "--tokenizer", str(tmp_path / "tok.model"),
              "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit, match=r"asr lm train: .*x.model: tokenizer or checkpoint not found"):
        main(["lm", "train", "--text", str(text_file), "--tokenizer", str(tmp_path / "x.model"), "--out", str(out)])
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(SystemExit, match=r"asr lm perplexity: .*junk.model: not a usable tokenizer"):
        main(["lm", "perplexity", "--lm", str(out), "--tokenizer", str(tmp_path / "junk.model"), "--text", str(ref)])


@pytest.mark.parametrize("argv", [["lm"], ["lm", "train"], ["lm", "perplexity"]])
def test_lm_help_has_examples(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "asr lm train --order 3 --text" in out and "asr lm perplexity" in out


def test_rows_are_read_only_views_of_the_cache(trained):
    """Callers get copies in score_all; the cached rows themselves cannot be written to."""
    _, lm, _ = trained
    lp, nxt = lm._row(lm.initial_state())
    with pytest.raises(ValueError):
        lp[0] = 1.0
    assert isinstance(nxt, np.ndarray) and not nxt.flags.writeable

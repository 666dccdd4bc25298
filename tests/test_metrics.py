import logging

import pytest

from asr.cli import main
from asr.metrics import normalize, read_kaldi_text, score


def test_counts_substitution_deletion_insertion():
    rep = score({"u1": "the cat sat on the mat"}, {"u1": "THE  bat sat the mat today"})
    u = rep.utts[0]
    assert (u.sub, u.dele, u.ins, u.ref_len) == (1, 1, 1, 6)
    assert rep.error_rate == pytest.approx(3 / 6)
    assert "REF:" in u.alignment and "HYP:" in u.alignment


def test_missing_hypothesis_is_all_deletions_and_extra_is_reported(caplog):
    with caplog.at_level(logging.WARNING):
        rep = score({"a": "ONE TWO", "b": "THREE FOUR FIVE"}, {"a": "ONE TWO", "zzz": "EXTRA"})
    assert rep.missing == ["b"] and rep.extra == ["zzz"]
    assert rep.total("dele") == 3 and rep.error_rate == pytest.approx(3 / 5)
    assert "no hypothesis for utterance b" in caplog.text
    s = rep.summary()
    assert "1 utterances had no hypothesis" in s and "zzz" in s


def test_cer_and_normalization():
    assert normalize("  a  b\tc ") == "A B C"
    rep = score({"u": "abcd"}, {"u": "abed"}, cer=True)
    assert rep.unit == "char" and rep.error_rate == pytest.approx(0.25)


@pytest.mark.parametrize(
    "refs,hyps",
    [
        ({"a": "A B C D", "b": "AB CD"}, {"a": "X", "b": "ABCD"}),  # the issue's case: jiwer says 8/12
        ({"a": "THE CAT SAT", "b": "ON THE MAT"}, {"a": "the bat  sat today", "b": "ONTHE MAT"}),
    ],
)
def test_cer_agrees_with_jiwer(refs: dict[str, str], hyps: dict[str, str]):
    """Errors and reference length both count the spaces between words, as jiwer.cer does."""
    import jiwer

    ids = sorted(refs)
    rep = score(refs, hyps, cer=True)
    want = jiwer.process_characters([normalize(refs[i]) for i in ids], [normalize(hyps[i]) for i in ids])
    assert rep.error_rate == pytest.approx(want.cer)
    assert (rep.total("sub"), rep.total("dele"), rep.total("ins")) == (
        want.substitutions,
        want.deletions,
        want.insertions,
    )
    assert rep.ref_len == sum(len(normalize(refs[i])) for i in ids)


def test_cer_of_an_empty_hypothesis_deletes_every_character_and_space():
    rep = score({"a": "HELLO WORLD"}, {"a": ""}, cer=True)
    assert (rep.total("dele"), rep.ref_len, rep.error_rate) == (11, 11, 1.0)


def test_cer_of_the_issue_case_is_two_thirds(tmp_path, capsys):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("a A B C D\nb AB CD\n")
    hyp.write_text("a X\nb ABCD\n")
    main(["score", str(ref), str(hyp), "--cer"])
    assert "%CER 66.67 [ 8 / 12," in capsys.readouterr().out


def test_empty_reference_counts_insertions():
    rep = score({"u": ""}, {"u": "HELLO THERE"})
    assert rep.total("ins") == 2 and rep.ref_len == 0


def test_score_cli_prints_wer_and_writes_report(tmp_path, capsys):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("u1 THE CAT SAT\nu2 HELLO WORLD\nu3 MISSING ONE\n")
    hyp.write_text("u1 the cat\nu2 HELLO WORLD\n")
    assert read_kaldi_text(hyp) == {"u1": "the cat", "u2": "HELLO WORLD"}
    main(["score", str(ref), str(hyp), "--report", str(tmp_path / "r.txt"), "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert "%WER 42.86 [ 3 / 7, 0 ins, 3 del, 0 sub ]" in out
    report = (tmp_path / "r.txt").read_text()
    assert report.index("u3") < report.index("u1") < report.index("u2")  # worst first
    assert (tmp_path / "p.png").stat().st_size > 1000

"""End-to-end: synthesize speech, prepare, train for a few CPU minutes per model (a streaming
Conformer-CTC shared by the CTC, resume, streaming and delay-penalty tests; the streaming pruned
RNN-T + CTC that test_export exports too; hybrid TDT+CTC; CTC+attention; TAED), decode held-out
speakers through the CLI, score, and resume. The corpus and the shared transducer are session
fixtures (conftest.py, settings in training.py).

Every threshold below sits between what a working run measures and what a broken one
gives, with the margin stated. Measured 2026-11-24 on dev-cpu at exactly these settings
(training is bit-for-bit reproducible on one machine, so these are the figures CI sees
there; another CPU moves them by float rounding):
- streaming Conformer-CTC, 18 epochs: 25.35% greedy offline (25.12% beam 4), 27.21%
  streamed at 320 ms.
  WER_THRESHOLD 40% is 1.6x that; an untrained model scores ~100%, and the full-context
  CTC model at half the epochs measured 45-60%, so training that stalls fails.
- streaming pruned RNN-T + CTC head (0.3), 14 epochs (279 s of training): 8.14% greedy offline,
  6.74% beam 4 (threshold 40%: 4.9x); its CTC head 42.56% (threshold 75%: 1.76x). It replaced a
  full-context full-loss RNN-T (14.19% greedy after 14 epochs), which TAED's RNN-T loss still trains.
- hybrid TDT+CTC, 8 epochs: TDT 15.35% greedy, 12.56% beam 4 (threshold 40%: 2.6x); its CTC
  head (weight 0.3) 60.93% (threshold 75%: 14 points). At 14 epochs it measured 6.05% / 4.19% /
  36.51%; 8 keep the test suite inside its time budget.
- CTC (0.3) + attention (0.7, right-to-left decoder 0.3; decoder d_model 96, 2 layers), 12
  epochs: CTC greedy 38.84%, CTC prefix beam 8 37.21%, attention rescoring of that n-best
  36.05%, joint CTC/attention beam 4 28.60%; the decoder's own beam search 125.58% (at this
  budget it loses its place after a few words and repeats one until the length cap: insertions).
  Thresholds: CTC greedy 50% (1.3x); joint at least 5 points better than CTC greedy (measured
  10.2), rescoring not worse than CTC greedy (measured 2.8 points better).
- TAED (the transducer's predictor is a 2-layer d_model 96 attention decoder; RNN-T loss + 0.3
  x the decoder's cross-entropy), 14 epochs: greedy 76.51%, beam 4 73.49%, attention rescoring
  of the beam's n-best 73.95%, the decoder alone 163.95% (insertions). It learns much more
  slowly than the stateless-predictor RNN-T (14.19%): dev WER sits at 88-89% for epochs 1-6,
  then falls every epoch (77.6% at 14, dev loss still falling). Threshold 85% greedy: under
  the plateau, 8.5 points above the measured figure; beam and rescoring may be at most 3
  points worse than greedy and beam.
- Word times (start error against the forced alignment of the reference by the same model's CTC
  head, over the words scored correct; median / 90th percentile) and word-confidence AUROC:
  shared RNN-T greedy 0 / 40 ms, AUROC 0.835; beam 4 0 / 40 ms, 0.827; its CTC head greedy
  0 / 0 ms (AUROC 0.790, not asserted: a 42% WER head). The TDT hybrid's earliest kept checkpoint
  (epoch05 of 8, dev WER 21.77%, "half-trained"): TDT greedy 0 / 40 ms, 0.847; CTC greedy 0 / 0 ms,
  0.866. Thresholds: the issue's 40 / 120 ms and AUROC 0.8.
- LM fusion (8-gram character LM of the training transcripts), beam 4: the shared model's CTC
  head 42.33% -> 12.79% (weight 0.6; asserted gain 10 points), its RNN-T 6.74% -> 3.72% (0.6, ILM
  0.3; asserted 1 point), the half-trained TDT 24.19% -> 13.02% (0.6, ILM 0.4; asserted 5 points).
- Hotwords (the 7 words the RNN-T beam gets wrong that occur in <= 3 test sentences, boost 0.7):
  5 -> 15 of 16 occurrences recognized (asserted +5), other words' WER 6.04% -> 4.83% (asserted
  at most +0.5 points).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training import COMMON, TRANSDUCER_EPOCHS

from asr.cli import main
from asr.metrics import read_kaldi_text, score
from asr.model import load_model

EPOCHS = 18
WER_THRESHOLD = 0.40
# Delay penalty: 4 fine-tuning epochs of the shared streaming CTC model (measured 2026-11-24,
# mean forced-aligned token start over the test split; control 1.206 s at 20.7% WER):
#   penalty 0.2: 26 ms earlier, WER 18.8%;  0.3: 50 ms earlier, WER 26.3%;  0.5: 322 ms, WER 87%.
# 0.3 moves starts 2.5x MIN_SHIFT_S and keeps WER under WER_THRESHOLD (1.5x margin). Without
# a working penalty the two fine-tunes are the same run (training is deterministic): 0 ms.
DELAY_PENALTY = 0.3
FINETUNE_EPOCHS = 4
CTC_HEAD_THRESHOLD = 0.75  # a hybrid's auxiliary CTC head (weight 0.3)
TDT_EPOCHS = 8
MIN_SHIFT_S = 0.02  # half an encoder frame
# streaming at 320 ms may be at most 5 WER points worse than full context (measured: 1.9 points,
# 27.21% against 25.35%)
STREAM_MARGIN = 0.05
# conformer_ctc_attention (figures in the module docstring)
ATTENTION_EPOCHS = 12
TAED_THRESHOLD = 0.85
ATTENTION_CTC_THRESHOLD = 0.50
JOINT_GAIN = 0.05
# word times against forced alignment, and confidence (issue 18's targets; figures in the docstring)
MEDIAN_START_MS, P90_START_MS, CONFIDENCE_AUROC = 40.0, 120.0, 0.8
# LM fusion and hotwords on the shared transducer (figures in the docstring)
LM_CTC_GAIN, LM_RNNT_GAIN, LM_TDT_GAIN = 0.10, 0.01, 0.05
HOTWORD_GAIN, HOTWORD_OTHER_WER = 5, 0.005


def _test_wer(exp, corpus, man, out, *args) -> float:
    assert (
        main(
            [
                "transcribe",
                "--ckpt",
                str(exp / "best.ckpt"),
                "--data",
                str(corpus / "test-clean"),
                "--out",
                str(out),
                "--quiet",
                *args,
            ]
        )
        == 0
    )
    rep = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(out))
    print(out.name, rep.summary())
    assert len(rep.utts) == 60 and not rep.missing
    return rep.error_rate


def _transducer_wers(exp: Path, corpus: Path, man: Path) -> dict[str, float]:
    """Test WER of a transducer + CTC hybrid: transducer greedy and beam 4, the CTC head greedy."""
    return {
        "greedy": _test_wer(exp, corpus, man, exp / "hyp_greedy.txt"),
        "beam": _test_wer(exp, corpus, man, exp / "hyp_beam.txt", "--method", "beam", "--beam", "4"),
        "ctc": _test_wer(exp, corpus, man, exp / "hyp_ctc.txt", "--head", "ctc"),
    }


def _word_times_and_confidence(ckpt: Path, split: Path, searches: list[tuple[str, str]]) -> dict[str, dict]:
    """Per (head, method) search of a checkpoint on a split: word start errors against the forced
    alignment (`asr align`, the model's CTC head) of the reference, over the words `asr score`'s
    alignment finds correct (median and 90th percentile, seconds), and the AUROC of the words'
    confidences separating correct from wrong words."""
    import statistics

    from asr.align import align_items
    from asr.decoding import DecodeOptions
    from asr.metrics import auroc, matched_words
    from asr.transcribe import split_items, transcribe_items

    model = load_model(ckpt)
    items, refs, _ = split_items(split, progress=False)
    ali, _ = align_items(model, items, refs, progress=False)
    out = {}
    for head, method in searches:
        res, _ = transcribe_items(model, items, DecodeOptions(method, 4, head=head), progress=False)
        errors, conf, right = [], [], []
        for uid, r in res.items():
            assert [w.word for w in r.words] == r.text.split() and all(0 <= w.confidence <= 1 for w in r.words)
            starts = [w.start for w in r.words]
            assert starts == sorted(starts) and all(w.end > w.start for w in r.words), uid
            for w, j in zip(r.words, matched_words(refs[uid], r.text)):
                conf.append(w.confidence)
                right.append(j is not None)
                if j is not None:
                    errors.append(abs(w.start - ali[uid].words[j].start))
        errors.sort()
        out[f"{head} {method}"] = {
            "median_ms": 1000 * statistics.median(errors),
            "p90_ms": 1000 * errors[int(0.9 * (len(errors) - 1))],
            "auroc": auroc(conf, right),
            "words": len(right),
            "correct": sum(right),
        }
    print(ckpt, {k: {m: round(x, 3) for m, x in v.items()} for k, v in out.items()})
    return out


def _check_word_times(found: dict[str, dict], confidence: bool) -> None:
    for search, f in found.items():
        assert f["median_ms"] <= MEDIAN_START_MS and f["p90_ms"] <= P90_START_MS, (search, f)
        if confidence:
            assert f["auroc"] >= CONFIDENCE_AUROC, (search, f)


def _check_transducer_wers(wer: dict[str, float]) -> None:
    print({k: f"{100 * v:.2f}%" for k, v in wer.items()})
    assert wer["greedy"] < WER_THRESHOLD, wer
    assert wer["beam"] <= wer["greedy"] + 0.03, wer
    # the auxiliary CTC head (weight 0.3) decodes on its own: learnt, if less well
    assert wer["ctc"] < CTC_HEAD_THRESHOLD, wer


@pytest.mark.slow
def test_streaming_pruned_transducer_learns_on_held_out_speakers(prepared, transducer_exp):
    """The shared streaming pruned RNN-T with its auxiliary CTC head (conftest.transducer_exp,
    which test_export exports) decodes held-out speakers offline: transducer greedy and beam, and
    the CTC head alone (figures and margins in the module docstring). An untrained transducer
    scores ~90-100%."""
    _, corpus, man = prepared
    _check_transducer_wers(_transducer_wers(transducer_exp, corpus, man))


@pytest.mark.slow
def test_word_times_and_confidence_of_rnnt_and_its_ctc_head(prepared, transducer_exp):
    """Word start times of RNN-T greedy and beam search and of the CTC head's searches against the
    forced alignment of the same model, and RNN-T word confidences against the words `asr score`
    finds wrong (figures in the module docstring)."""
    _, corpus, _ = prepared
    split = corpus / "test-clean"
    rnnt = [("transducer", "greedy"), ("transducer", "beam")]
    _check_word_times(_word_times_and_confidence(transducer_exp / "best.ckpt", split, rnnt), confidence=True)
    # the auxiliary CTC head (42.56% WER) is timed as well; its confidence is tested on the TDT
    # hybrid's, below
    ctc = [("ctc", "greedy")]
    _check_word_times(_word_times_and_confidence(transducer_exp / "best.ckpt", split, ctc), confidence=False)


def _decode_json(ckpt: Path, split: Path, out: Path, *flags: str) -> dict[str, dict]:
    """`asr transcribe --format json` of a split: {utt id: record}."""
    import json

    args = ["transcribe", "--ckpt", str(ckpt), "--data", str(split), "--quiet", "--format", "json", "--out", str(out)]
    assert main([*args, *flags]) == 0
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


def _train_lm(man: Path, ckpt: Path, out: Path) -> Path:
    """`asr lm train`: an 8-gram LM over the model's characters from the training transcripts."""
    args = ["lm", "train", "--order", "8", "--text", str(man / "train-clean.ref.txt"), "--skip-ids"]
    assert main([*args, "--tokenizer", str(ckpt), "--out", str(out)]) == 0
    return out


def _wer(refs: dict[str, str], found: dict[str, dict]) -> float:
    return score(refs, {u: r["text"] for u, r in found.items()}).error_rate


@pytest.mark.slow
def test_lm_fusion_and_hotwords_help_on_held_out_speakers(prepared, transducer_exp, tmp_path):
    """An 8-gram character LM trained on the training transcripts (`asr lm train`) lowers the WER
    of the shared model's CTC head and of its RNN-T (with the internal LM subtracted); hotwords
    naming words the RNN-T beam search gets wrong make it recognize them, leave the other words'
    WER within HOTWORD_OTHER_WER of what it was, and are reported when they fire (figures in the
    module docstring)."""
    from collections import Counter

    from asr.metrics import matched_words, normalize

    _, corpus, man = prepared
    split, ckpt = corpus / "test-clean", transducer_exp / "best.ckpt"
    refs = read_kaldi_text(man / "test-clean.ref.txt")
    lm = _train_lm(man, ckpt, tmp_path / "lm8.arpa")
    beam = ["--method", "beam", "--beam", "4"]
    wer = {
        "ctc": _wer(refs, _decode_json(ckpt, split, tmp_path / "c.json", *beam, "--head", "ctc")),
        "ctc+lm": _wer(
            refs,
            _decode_json(
                ckpt, split, tmp_path / "cl.json", *beam, "--head", "ctc", "--lm", str(lm), "--lm-weight", "0.6"
            ),
        ),
    }
    base = _decode_json(ckpt, split, tmp_path / "t.json", *beam)
    wer["rnnt"] = _wer(refs, base)
    lm_flags = ["--lm", str(lm), "--lm-weight", "0.6", "--ilm-weight", "0.3"]
    wer["rnnt+lm-ilm"] = _wer(refs, _decode_json(ckpt, split, tmp_path / "tl.json", *beam, *lm_flags))
    print({k: f"{100 * v:.2f}%" for k, v in wer.items()})
    assert wer["ctc+lm"] <= wer["ctc"] - LM_CTC_GAIN, wer
    assert wer["rnnt+lm-ilm"] <= wer["rnnt"] - LM_RNNT_GAIN, wer

    # hotwords: the words the beam search got wrong that occur in at most 3 test sentences
    in_sentences = Counter(w for t in refs.values() for w in set(normalize(t).split()))
    missed = set()
    for uid, r in base.items():
        ref_words = normalize(refs[uid]).split()
        found = {j for j in matched_words(refs[uid], r["text"]) if j is not None}
        missed |= {w for j, w in enumerate(ref_words) if j not in found and in_sentences[w] <= 3}
    assert len(missed) >= 3, missed
    (tmp_path / "hot.txt").write_text("".join(f"{w}\n" for w in sorted(missed)))
    biased = _decode_json(
        ckpt, split, tmp_path / "h.json", *beam, "--hotwords", str(tmp_path / "hot.txt"), "--hotword-boost", "0.7"
    )

    def hits(found: dict[str, dict]) -> int:
        return sum(w in set(found[u]["text"].split()) for u in refs for w in normalize(refs[u]).split() if w in missed)

    def others(found: dict[str, dict]) -> float:
        def keep(t: str) -> str:
            return " ".join(w for w in normalize(t).split() if w not in missed)

        return score({u: keep(t) for u, t in refs.items()}, {u: keep(r["text"]) for u, r in found.items()}).error_rate

    occurrences = sum(w in missed for t in refs.values() for w in normalize(t).split())
    print(
        f"hotwords {sorted(missed)}: {hits(base)} -> {hits(biased)} of {occurrences} occurrences; other words "
        f"{100 * others(base):.2f}% -> {100 * others(biased):.2f}%"
    )
    assert hits(biased) >= hits(base) + HOTWORD_GAIN
    assert others(biased) <= others(base) + HOTWORD_OTHER_WER
    fired = [p for r in biased.values() for p in r["hotwords"]]
    assert (
        fired and set(fired) <= missed and all(p in r["text"].split() for r in biased.values() for p in r["hotwords"])
    )


@pytest.mark.slow
def test_transcribe_and_stream_write_word_times(prepared, transducer_exp, tmp_path, capsys):
    """`asr transcribe --format json|srt` and `asr stream --format ctm` write the words of the texts
    they decode, with times inside each file and confidences; formats a method cannot fill are errors."""
    import json

    import soundfile as sf

    _, corpus, _ = prepared
    ckpt = str(transducer_exp / "best.ckpt")
    files = [str(f) for f in sorted((corpus / "test-clean").rglob("*.flac"))[:3]]
    seconds = {Path(f).stem: sf.info(f).duration for f in files}
    assert main(["transcribe", "--ckpt", ckpt, *files, "--quiet", "--timestamps"]) == 0  # json
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["id"] for x in lines] == list(seconds)
    for x in lines:
        assert [w["word"] for w in x["words"]] == x["text"].split() and x["words"]
        assert all(0 <= w["start"] < w["end"] <= seconds[x["id"]] + 0.04 for w in x["words"])
        assert all(0 <= w["confidence"] <= 1 for w in x["words"])
    assert main(["transcribe", "--ckpt", ckpt, *files, "--quiet", "--format", "srt", "--out", str(tmp_path / "s")]) == 0
    srt = (tmp_path / "s" / f"{lines[0]['id']}.srt").read_text()
    assert srt.startswith("1\n00:00:0") and " ".join(srt.split("\n")[2::4]).split() == lines[0]["text"].split()
    capsys.readouterr()
    assert main(["stream", "--ckpt", ckpt, *files, "--quiet"]) == 0
    texts = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert main(["stream", "--ckpt", ckpt, *files, "--quiet", "--format", "ctm"]) == 0
    ctm = [line.split() for line in capsys.readouterr().out.splitlines()]
    for uid, text in texts.items():
        rows = [r for r in ctm if r[0] == uid]
        assert [r[4] for r in rows] == text.split()
        starts = [float(r[2]) for r in rows]
        assert starts == sorted(starts) and all(0 <= float(r[5]) <= 1 for r in rows)
    for bad, said in (
        (["--format", "srt"], "give --out FOLDER"),
        (["--format", "ctm", "--method", "attention"], "does not give"),
    ):
        with pytest.raises(SystemExit, match=said):
            main(["transcribe", "--ckpt", ckpt, *files, "--quiet", *bad])


@pytest.mark.slow
def test_hybrid_tdt_ctc_learns_on_held_out_speakers(prepared):
    """The TDT head and the hybrid's CTC head learn the same task (figures in the module docstring)."""
    tmp, corpus, man = prepared
    exp = tmp / "hybrid_tdt_ctc"
    args = ["train", "model=conformer_hybrid_tdt_ctc", f"exp_dir={exp}", f"data.manifest_dir={man}"]
    assert main([*args, f"trainer.max_epochs={TDT_EPOCHS}", *COMMON]) == 0
    _check_transducer_wers(_transducer_wers(exp, corpus, man))
    # word times and confidence of a half-trained model: the earliest checkpoint the run kept
    half = sorted((exp / "checkpoints").glob("epoch*.ckpt"))[0]  # epoch05 (6 of 8) when measured
    searches = [("transducer", "greedy"), ("ctc", "greedy")]  # beam search times: test_timestamps
    _check_word_times(_word_times_and_confidence(half, corpus / "test-clean", searches), confidence=True)
    # an LM (with the internal LM subtracted) helps the half-trained TDT beam search
    lm = _train_lm(man, half, exp / "lm8.arpa")
    refs = read_kaldi_text(man / "test-clean.ref.txt")
    beam = ["--method", "beam", "--beam", "4"]
    plain = _wer(refs, _decode_json(half, corpus / "test-clean", exp / "half.json", *beam))
    flags = ["--lm", str(lm), "--lm-weight", "0.6", "--ilm-weight", "0.4"]
    fused = _wer(refs, _decode_json(half, corpus / "test-clean", exp / "half_lm.json", *beam, *flags))
    print(f"half-trained TDT beam 4: {100 * plain:.2f}% -> {100 * fused:.2f}% with the LM")
    assert fused <= plain - LM_TDT_GAIN, (plain, fused)


@pytest.mark.slow
def test_ctc_attention_learns_and_every_attention_method_decodes(prepared):
    """conformer_ctc_attention (CTC 0.3 + attention 0.7 with a right-to-left decoder) learns the
    task, and its decoder helps: attention rescoring of the CTC n-best and joint CTC/attention
    decoding transcribe held-out speakers better than CTC alone (figures in the module docstring)."""
    tmp, corpus, man = prepared
    exp = tmp / "ctc_attention"
    overrides = [f"model.heads.attention.{k}={v}" for k, v in (("d_model", 96), ("num_layers", 2))]
    args = ["train", "model=conformer_ctc_attention", f"exp_dir={exp}", f"data.manifest_dir={man}"]
    assert main([*args, f"trainer.max_epochs={ATTENTION_EPOCHS}", *COMMON, *overrides]) == 0
    wer = {
        "ctc": _test_wer(exp, corpus, man, exp / "hyp_ctc.txt"),
        "rescoring": _test_wer(
            exp, corpus, man, exp / "hyp_resc.txt", "--method", "attention_rescoring", "--beam", "8"
        ),
        "joint": _test_wer(exp, corpus, man, exp / "hyp_joint.txt", "--method", "joint", "--beam", "4"),
    }
    print("conformer_ctc_attention", {k: f"{100 * v:.2f}%" for k, v in wer.items()})
    assert wer["ctc"] < ATTENTION_CTC_THRESHOLD, wer
    # the decoder's scores help: the second pass is not worse than CTC alone, and one-pass joint
    # decoding is clearly better (a decoder that learnt nothing would add noise to both)
    assert wer["rescoring"] <= wer["ctc"], wer
    assert wer["joint"] <= wer["ctc"] - JOINT_GAIN, wer


@pytest.mark.slow
def test_taed_learns_and_its_decoder_rescores(prepared):
    """conformer_taed (the transducer's predictor is the attention decoder) learns the task with
    transducer greedy and beam search, and its decoder rescores the beam's n-best (figures in the
    module docstring)."""
    tmp, corpus, man = prepared
    exp = tmp / "taed"
    overrides = [f"model.heads.taed.decoder.{k}={v}" for k, v in (("d_model", 96), ("num_layers", 2))]
    args = ["train", "model=conformer_taed", f"exp_dir={exp}", f"data.manifest_dir={man}"]
    assert main([*args, f"trainer.max_epochs={TRANSDUCER_EPOCHS}", *COMMON, *overrides]) == 0
    wer = {
        "greedy": _test_wer(exp, corpus, man, exp / "hyp_greedy.txt"),
        "beam": _test_wer(exp, corpus, man, exp / "hyp_beam.txt", "--method", "beam", "--beam", "4"),
        "rescoring": _test_wer(
            exp, corpus, man, exp / "hyp_resc.txt", "--method", "attention_rescoring", "--beam", "4"
        ),
        "attention": _test_wer(exp, corpus, man, exp / "hyp_att.txt", "--method", "attention", "--beam", "4"),
    }
    print("conformer_taed", {k: f"{100 * v:.2f}%" for k, v in wer.items()})
    assert wer["greedy"] < TAED_THRESHOLD, wer
    assert wer["beam"] <= wer["greedy"] + 0.03, wer
    assert wer["rescoring"] <= wer["beam"] + 0.03, wer


def _ctc_overrides(exp: Path, man: Path) -> list[str]:
    """Train overrides of the shared streaming Conformer-CTC in exp (epochs set by the caller)."""
    return ["model=conformer_ctc_streaming", f"exp_dir={exp}", f"data.manifest_dir={man}", *COMMON]


@pytest.fixture(scope="module")
def ctc_exp(prepared):
    """One streaming Conformer-CTC (dynamic chunk training), trained once for the CTC, resume,
    streaming and delay-penalty tests: its exp dir."""
    tmp, _, man = prepared
    exp = tmp / "exp"
    assert main(["train", *_ctc_overrides(exp, man), f"trainer.max_epochs={EPOCHS}"]) == 0
    return exp


@pytest.mark.slow
def test_conformer_ctc_learns_on_held_out_speakers(prepared, ctc_exp, capsys):
    tmp, corpus, man = prepared
    exp = ctc_exp
    assert (exp / "best.ckpt").exists() and (exp / "checkpoints" / "last.ckpt").exists()
    assert (exp / "csv" / "version_0" / "metrics.csv").read_text().count("\n") > EPOCHS
    assert list((exp / "tb" / "version_0").glob("events.out.tfevents.*"))
    # the 3 best epochs by dev WER are kept beside last.ckpt, and best.ckpt is the best of them
    top = sorted((exp / "checkpoints").glob("epoch*.ckpt"), key=lambda p: float(p.stem.split("wer")[1]))
    assert len(top) == 3
    assert torch.equal(
        torch.load(exp / "best.ckpt", weights_only=False)["state_dict"]["normalizer.mean"],
        torch.load(top[0], weights_only=False)["state_dict"]["normalizer.mean"],
    )

    # load_model rebuilds the trained model with its CMVN statistics and tokenizer
    model = load_model(exp / "best.ckpt")
    assert int(model.normalizer.count) > 10_000 and model.normalizer.mean.abs().max() > 1.0
    assert model.tokenizer is not None and len(model.tokenizer) == model.hparams.vocab_size

    hyp = tmp / "hyp.txt"
    assert (
        main(
            [
                "transcribe",
                "--ckpt",
                str(exp / "best.ckpt"),
                "--data",
                str(corpus / "test-clean"),
                "--out",
                str(hyp),
                "--quiet",
            ]
        )
        == 0
    )
    rep = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp))
    assert len(rep.utts) == 60 and not rep.missing
    assert rep.error_rate < WER_THRESHOLD, rep.summary()

    # Beam search is at least as good as greedy here, give or take an utterance.
    hyp_beam = tmp / "hyp_beam.txt"
    main(
        [
            "transcribe",
            "--ckpt",
            str(exp / "best.ckpt"),
            "--data",
            str(corpus / "test-clean"),
            "--out",
            str(hyp_beam),
            "--method",
            "beam",
            "--beam",
            "4",
            "--quiet",
        ]
    )
    rep_beam = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp_beam))
    assert rep_beam.error_rate <= rep.error_rate + 0.03

    # File mode prints "utt-id TEXT" lines.
    files = sorted((corpus / "test-clean").rglob("*.flac"))[:2]
    capsys.readouterr()
    main(["transcribe", "--ckpt", str(exp / "best.ckpt"), *map(str, files), "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [f.stem for f in files]
    print("CTC greedy:", rep.summary(), "\nCTC beam 4:", rep_beam.summary())  # after capsys took the rest


@pytest.mark.slow
def test_resume_continues_the_run(prepared, ctc_exp, tmp_path):
    """resume=true goes on from last.ckpt: the step count, Adam's state and the scheduler continue,
    and the first run's logs stay. Runs on a copy, so the other tests see the trained model."""
    import shutil

    _, _, man = prepared
    exp = ctc_exp
    run = tmp_path / "resumed"
    shutil.copytree(exp / "checkpoints", run / "checkpoints")
    shutil.copytree(exp / "csv", run / "csv")
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert before["epoch"] == EPOCHS - 1  # last.ckpt is the last epoch's, whether it improved or not
    mine = _ctc_overrides(run, man)
    with pytest.raises(FileExistsError, match="resume=true"):
        main(["train", *mine, f"trainer.max_epochs={EPOCHS}"])
    assert main(["train", *mine, f"trainer.max_epochs={EPOCHS + 1}", "resume=true"]) == 0
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    steps = after["global_step"] - before["global_step"]
    # one more epoch: about 1/EPOCHS of the first run's steps (the bucketing sampler varies them)
    assert 0.5 * before["global_step"] / EPOCHS < steps < 1.5 * before["global_step"] / EPOCHS
    assert after["epoch"] == EPOCHS
    opt_before, opt_after = before["optimizer_states"][0]["state"], after["optimizer_states"][0]["state"]
    assert int(opt_before[0]["step"]) == before["global_step"] and int(opt_after[0]["step"]) == after["global_step"]
    assert after["lr_schedulers"][0]["last_epoch"] == after["global_step"]
    # the first run's logs are kept; the resumed run logs beside them
    assert (run / "csv" / "version_0" / "metrics.csv").read_text() == (
        exp / "csv" / "version_0" / "metrics.csv"
    ).read_text()
    assert (run / "csv" / "version_1" / "metrics.csv").read_text().count("\n") > 1


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_and_gathers_the_validation_wer(prepared, ctc_exp, tmp_path):
    """One more epoch of the shared CTC model with Lightning DDP: 2 processes on one machine
    (gloo), as `trainer.strategy=ddp trainer.devices=2`. The bucketing sampler's dynamic batches
    do not split evenly, yet lhotse gives every rank as many as the others (the remainder round
    dropped), so no rank waits forever in the gradient all-reduce (the timeout would catch it);
    and the validation WER Lightning logs, its counts summed over both ranks' halves of dev,
    equals the WER `asr transcribe` gets in one process with the same weights."""
    import csv
    import shutil
    import subprocess
    import sys

    _, corpus, man = prepared
    run = tmp_path / "ddp"
    shutil.copytree(ctc_exp / "checkpoints", run / "checkpoints")
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    overrides = [o for o in _ctc_overrides(run, man) if not o.startswith("num_threads=")]
    cmd = [str(Path(sys.executable).parent / "asr"), "train", *overrides, "num_threads=1", "resume=true"]
    cmd += [f"trainer.max_epochs={EPOCHS + 1}", "trainer.strategy=ddp", "trainer.devices=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert after["epoch"] == EPOCHS
    # each rank took about half of an epoch's batches: one optimizer step per pair
    per_epoch = before["global_step"] / EPOCHS
    assert 0.3 * per_epoch < after["global_step"] - before["global_step"] < 0.7 * per_epoch

    with open(run / "csv" / "version_0" / "metrics.csv") as f:  # the copy has no earlier logs
        val_wer = [float(r["val_wer"]) for r in csv.DictReader(f) if r.get("val_wer")][-1]
    hyp = tmp_path / "dev_hyp.txt"
    ckpt = str(run / "checkpoints" / "last.ckpt")
    args = ["transcribe", "--ckpt", ckpt, "--data", str(corpus / "dev-clean"), "--out", str(hyp), "--quiet"]
    assert main([*args, "--method", "greedy"]) == 0
    rep = score(read_kaldi_text(man / "dev-clean.ref.txt"), read_kaldi_text(hyp))
    assert len(rep.utts) == 40 and 0 < rep.error_rate < 1  # a WER that can tell a lost or doubled cut
    assert val_wer == pytest.approx(rep.error_rate, abs=1e-6)


def _mean_token_start(ctm: Path) -> float:
    starts = [float(line.split()[2]) for line in ctm.read_text().splitlines()]
    assert starts
    return sum(starts) / len(starts)


@pytest.mark.slow
def test_delay_penalty_moves_emissions_earlier(prepared, ctc_exp, tmp_path):
    """Fine-tune the trained CTC model with the FSA loss, with and without a delay penalty.

    Same start, same epochs, same data; only delay_penalty differs. The forced alignments
    of the held-out test transcripts (asr align) must start tokens earlier on average with
    the penalty, and the model must still recognize (WER under the same threshold).
    """
    import shutil

    _, corpus, man = prepared
    exp = ctc_exp
    epoch = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    starts, wers = {}, {}
    for name, penalty in (("control", 0.0), ("delay", DELAY_PENALTY)):
        run = tmp_path / name
        shutil.copytree(exp / "checkpoints", run / "checkpoints")
        assert (
            main(
                [
                    "train",
                    *_ctc_overrides(run, man),
                    f"trainer.max_epochs={epoch + 1 + FINETUNE_EPOCHS}",
                    "resume=true",
                    "model.heads.ctc.loss=ctc_fst",
                    f"model.heads.ctc.delay_penalty={penalty}",
                ]
            )
            == 0
        )
        ckpt = run / "checkpoints" / "last.ckpt"
        # a copied experiment resumes into its own last.ckpt (no stale last.ckpt beside a last-v1.ckpt)
        assert torch.load(ckpt, weights_only=False)["epoch"] == epoch + FINETUNE_EPOCHS
        assert not list((run / "checkpoints").glob("last-v*.ckpt"))
        assert (
            main(
                [
                    "align",
                    "--ckpt",
                    str(ckpt),
                    "--data",
                    str(corpus / "test-clean"),
                    "--out",
                    str(run / "ali"),
                    "--quiet",
                ]
            )
            == 0
        )
        starts[name] = _mean_token_start(run / "ali" / "tokens.ctm")
        hyp = run / "hyp.txt"
        assert (
            main(
                ["transcribe", "--ckpt", str(ckpt), "--data", str(corpus / "test-clean"), "--out", str(hyp), "--quiet"]
            )
            == 0
        )
        wers[name] = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp)).error_rate
    print("mean token start (s):", starts, "WER:", wers)
    assert starts["delay"] < starts["control"] - MIN_SHIFT_S
    assert wers["delay"] < WER_THRESHOLD


@pytest.mark.slow
def test_streaming_model_streams_near_its_offline_wer(prepared, ctc_exp):
    """The dynamic-chunk-trained Conformer-CTC, decoded by `asr stream` at 320 ms chunks, stays
    within STREAM_MARGIN of the same model decoded offline with full context."""
    _, corpus, man = prepared
    exp = ctc_exp
    offline = _test_wer(exp, corpus, man, exp / "hyp_offline.txt")
    hyp = exp / "hyp_stream.txt"
    assert (
        main(
            [
                "stream",
                "--ckpt",
                str(exp / "best.ckpt"),
                "--data",
                str(corpus / "test-clean"),
                "--out",
                str(hyp),
                "--chunk-ms",
                "320",
                "--left-context-ms",
                "1280",
                "--quiet",
            ]
        )
        == 0
    )
    rep = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp))
    print("streaming 320 ms:", rep.summary(), "offline:", offline)
    assert len(rep.utts) == 60 and not rep.missing
    assert rep.error_rate < WER_THRESHOLD
    assert rep.error_rate <= offline + STREAM_MARGIN

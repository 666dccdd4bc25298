from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from asr.cli import main

if TYPE_CHECKING:
    from asr.data.tokenizer import Tokenizer


def save_checkpoint(model, tok, path) -> None:
    """The parts of a Lightning checkpoint that load_model reads."""
    import torch

    torch.save(
        {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(), "tokenizer": tok.model_proto}, path
    )


@pytest.mark.parametrize("cmd", ["prepare", "transcribe", "stream", "align", "score", "lm"])
def test_subcommand_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"asr {cmd}" in out


def test_train_help_lists_config_groups(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "resume=true" in out and "model: conformer_ctc" in out and "data: librispeech, open, synthetic" in out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("prepare", "train", "transcribe", "stream", "align", "score", "lm"):
        assert cmd in out


def test_transcribe_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="asr transcribe: .*nope.ckpt: checkpoint not found"):
        main(["transcribe", "--ckpt", str(tmp_path / "nope.ckpt"), "x.flac"])


def test_train_without_prepared_data_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer not found; run `asr prepare` first"):
        main(["train", f"exp_dir={tmp_path / 'exp'}", f"data.manifest_dir={tmp_path / 'none'}"])


def test_transcribe_names_bad_files_and_keeps_going(tmp_path, capsys, caplog, speech_wave):
    """Unreadable audio is skipped and named; other sample rates are resampled and named."""
    import soundfile as sf

    from asr.data.audio import resample
    from asr.data.tokenizer import train_tokenizer
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    model = ASRModel(
        len(tok),
        encoder={"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4, "subsampling_channels": 8},
        heads={"ctc": {"kind": "ctc"}},
    )
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(model, tok, ckpt)
    good, low, bad = tmp_path / "good.flac", tmp_path / "low.wav", tmp_path / "bad.flac"
    sf.write(str(good), speech_wave.numpy(), 16000)
    sf.write(str(low), resample(speech_wave, 16000, 8000).numpy(), 8000)
    bad.write_bytes(b"not audio")
    import logging

    with caplog.at_level(logging.WARNING):
        assert main(["transcribe", "--ckpt", str(ckpt), str(good), str(low), str(bad), "--quiet"]) == 0
    out = capsys.readouterr()
    assert [line.split()[0] for line in out.out.strip().splitlines()] == ["good", "low"]
    assert f"{bad}: unreadable audio" in caplog.text and f"{low}: 8000 Hz, resampled" in caplog.text
    assert "unreadable audio                 1" in out.err and "resampled audio                  1" in out.err
    assert "decoded 2 of 3 utterances" in out.err


def _fixed_hybrid(tmp_path: Path, name: str, decode: dict | None) -> tuple[Path, Path, int, Tokenizer]:
    """A hybrid checkpoint whose heads ignore the audio, so every decoding choice has a known answer.

    The output layers get zero weights and a chosen bias, so each frame has the same scores:
    - transducer (the first head, RNN-T, max_symbols 4): "C" has probability ~1, so greedy and
      beam search both emit "C" until the labels-per-frame cap moves them on: the text is
      "C" * max_symbols * frames, and its length shows which max_symbols was used.
    - ctc: blank 0.4, A 0.35, B 0.25 on every frame: greedy (argmax) is all blank, "", while
      prefix beam search adds paths and finds "A"/"B" strings that depend on the beam size.
    Returns (checkpoint, a 1 s wav, encoder frames of that wav, tokenizer).
    """
    import soundfile as sf
    import torch

    from asr.data.tokenizer import train_tokenizer
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    torch.manual_seed(0)
    model = ASRModel(
        len(tok),
        encoder={"name": "mingru", "d_model": 16, "num_layers": 1, "subsampling_channels": 4},
        heads={
            "transducer": {"kind": "transducer", "pred_dim": 8, "joint_dim": 8, "max_symbols": 4},
            "ctc": {"kind": "ctc"},
        },
        decode=decode,
    )
    piece = tok.sp.piece_to_id
    with torch.no_grad():
        out = model.heads["transducer"].joint.out
        out.weight.zero_()
        out.bias.zero_()
        out.bias[piece("C")] = 10.0  # blank and the other labels are e^-10 times less likely
        proj = model.heads["ctc"].proj
        proj.weight.zero_()
        proj.bias.fill_(-30.0)
        proj.bias[0] = math.log(0.4)
        proj.bias[piece("A")] = math.log(0.35)
        proj.bias[piece("B")] = math.log(0.25)
    ckpt = tmp_path / f"{name}.ckpt"
    save_checkpoint(model, tok, ckpt)
    wav = tmp_path / "a.wav"
    wave = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(1))
    sf.write(str(wav), wave.numpy(), 16000)
    _, frames = model.eval()(wave[None], torch.tensor([len(wave)]))
    return ckpt, wav, int(frames), tok


def _search_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None, int | None]]:
    """Record (search, beam, max_symbols) of every search the decoding registry builds (what
    ASRModel.decode runs), and still run it.

    Transducer greedy and beam search agree on the fixed hybrid, so only a spy can tell which ran.
    """
    from asr.decoding import registry

    names = {
        ("ctc", "greedy"): "ctc_greedy_search",
        ("ctc", "beam"): "ctc_prefix_beam_search",
        ("transducer", "greedy"): "transducer_greedy_search",
        ("transducer", "beam"): "transducer_beam_search",
    }
    calls: list[tuple[str, int | None, int | None]] = []
    for key, name in names.items():
        real = registry.SEARCHES[key]

        def spy(head, options, fusion, _real=real, _name=name):
            search = _real(head, options, fusion)  # the beam and max_symbols the search was built with
            calls.append((_name, getattr(search, "beam", None), getattr(search, "max_symbols", None)))
            return search

        monkeypatch.setitem(registry.SEARCHES, key, spy)
    return calls


def _transcribe_one(capsys: pytest.CaptureFixture, ckpt: Path, wav: Path, *flags: str) -> str:
    """The text `asr transcribe` prints for one file (may be empty)."""
    assert main(["transcribe", "--ckpt", str(ckpt), str(wav), "--quiet", *flags]) == 0
    uid, text = capsys.readouterr().out.rstrip("\n").split(" ", 1)
    assert uid == wav.stem
    return text


def test_transcribe_flags_override_the_checkpoint_decode_options(tmp_path, capsys, monkeypatch):
    """The checkpoint's decode options (head ctc, beam search with beam 2, max_symbols 2) are what
    runs without flags, and --head, --method, --beam and --max-symbols each change the result."""
    import torch

    from asr.decoding import ctc_prefix_beam_search

    ckpt, wav, frames, tok = _fixed_hybrid(
        tmp_path, "m", {"head": "ctc", "method": "beam", "beam": 2, "max_symbols": 2}
    )
    lp = torch.full((1, frames, len(tok)), -30.0)  # the ctc head's log-probs, as set up above
    for token, p in ((0, 0.4), (tok.sp.piece_to_id("A"), 0.35), (tok.sp.piece_to_id("B"), 0.25)):
        lp[..., token] = math.log(p)
    lp = lp.log_softmax(-1)
    ctc_beam = {b: tok.decode(ctc_prefix_beam_search(lp, torch.tensor([frames]), beam=b)[0]) for b in (1, 2, 4)}
    # the test only discriminates if greedy ("") and each of these beams give different texts
    assert len({"", ctc_beam[2], ctc_beam[4]}) == 3 and ctc_beam[1] == ""
    calls = _search_spy(monkeypatch)
    cases = [
        # (flags, expected text, the search that must run with (beam, max_symbols))
        ([], ctc_beam[2], ("ctc_prefix_beam_search", 2, None)),  # all from the checkpoint
        (["--beam", "4"], ctc_beam[4], ("ctc_prefix_beam_search", 4, None)),
        (["--beam", "1"], "", ("ctc_prefix_beam_search", 1, None)),
        (["--method", "greedy"], "", ("ctc_greedy_search", None, None)),
        (["--head", "transducer"], "C" * 2 * frames, ("transducer_beam_search", 2, 2)),
        (["--head", "transducer", "--max-symbols", "3"], "C" * 3 * frames, ("transducer_beam_search", 2, 3)),
        (["--head", "transducer", "--method", "greedy"], "C" * 2 * frames, ("transducer_greedy_search", None, 2)),
        (
            ["--head", "transducer", "--method", "greedy", "--max-symbols", "1"],
            "C" * frames,
            ("transducer_greedy_search", None, 1),
        ),
        (["--head", "transducer", "--beam", "3", "--max-symbols", "1"], "C" * frames, ("transducer_beam_search", 3, 1)),
    ]
    for flags, want, search in cases:
        calls.clear()
        got = _transcribe_one(capsys, ckpt, wav, *flags)
        assert got == want, f"{flags}: {got[:12]!r}... ({len(got)} chars), want {want[:12]!r}... ({len(want)} chars)"
        assert calls == [search], flags


def test_transcribe_without_decode_options_uses_first_head_greedy_and_its_max_symbols(tmp_path, capsys, monkeypatch):
    """A checkpoint with no decode options: the first head (transducer), greedy, the head's max_symbols (4)."""
    ckpt, wav, frames, _ = _fixed_hybrid(tmp_path, "plain", None)
    calls = _search_spy(monkeypatch)
    assert _transcribe_one(capsys, ckpt, wav) == "C" * 4 * frames
    assert calls == [("transducer_greedy_search", None, None)]
    calls.clear()
    assert _transcribe_one(capsys, ckpt, wav, "--head", "ctc") == ""
    assert calls == [("ctc_greedy_search", None, None)]


def test_transcribe_unknown_head_names_the_heads(tmp_path):
    ckpt, wav, _, _ = _fixed_hybrid(tmp_path, "m", None)
    with pytest.raises(SystemExit, match=r"has no head 'attention'; its heads are \['transducer', 'ctc'\]"):
        main(["transcribe", "--ckpt", str(ckpt), str(wav), "--head", "attention"])


def _split(root, waves_texts) -> None:
    """A one-speaker LibriSpeech-style split: root/1/2/1-2-000i.flac + 1-2.trans.txt."""
    import soundfile as sf

    d = root / "1" / "2"
    d.mkdir(parents=True)
    lines = []
    for i, (wave, text) in enumerate(waves_texts):
        sf.write(str(d / f"1-2-{i:04d}.flac"), wave.numpy(), 16000)
        lines.append(f"1-2-{i:04d} {text}\n")
    (d / "1-2.trans.txt").write_text("".join(lines))


def test_align_writes_ctm_and_skips_bad_transcripts(tmp_path, capsys, caplog, speech_wave):
    """An untrained CTC model still gives a valid path: every word in order, on the frame grid, inside the audio."""
    import logging

    import torch

    from asr.data.tokenizer import train_tokenizer
    from asr.model import ASRModel

    text = "THE QUICK BROWN FOX JUMPS OVER SEVEN LAZY DOGS"
    tok = train_tokenizer(
        [text, "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z"] * 5, tmp_path / "t.model", "char"
    )
    torch.manual_seed(0)
    model = ASRModel(
        len(tok),
        encoder={"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4, "subsampling_channels": 8},
        heads={"ctc": {"kind": "ctc"}},
    )
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(model, tok, ckpt)
    short = speech_wave[: 16000 // 5]  # 0.2 s: 4 frames, too few for the sentence
    _split(tmp_path / "split", [(speech_wave, text), (speech_wave, "THE FOX 42"), (short, text)])
    out = tmp_path / "ali"
    with caplog.at_level(logging.WARNING):
        assert (
            main(
                [
                    "align",
                    "--ckpt",
                    str(ckpt),
                    "--data",
                    str(tmp_path / "split"),
                    "--out",
                    str(out),
                    "--plot",
                    "1",
                    "--quiet",
                ]
            )
            == 0
        )
    err = capsys.readouterr().err
    assert "characters outside the vocabulary" in err and "transcript longer than the audio" in err
    assert "1-2.trans.txt:2: '24'" in caplog.text and "1-2-0001.flac)" in caplog.text  # line, then audio
    assert "1-2.trans.txt:3: " in caplog.text and "1-2-0002.flac" in caplog.text
    assert "aligned 1 of 3 utterances" in err
    words = [line.split() for line in (out / "words.ctm").read_text().splitlines()]
    assert [w[4] for w in words] == text.split() and {w[0] for w in words} == {"1-2-0000"}
    starts = [float(w[2]) for w in words]
    ends = [float(w[2]) + float(w[3]) for w in words]
    assert starts == sorted(starts) and all(e > s for s, e in zip(starts, ends))
    assert ends[-1] <= len(speech_wave) / 16000 + 0.05
    assert all(abs(s / 0.04 - round(s / 0.04)) < 1e-6 for s in starts)  # 40 ms encoder frames
    tokens = (out / "tokens.ctm").read_text().splitlines()
    assert len(tokens) == len(tok.encode(text))
    assert (out / "1-2-0000.png").stat().st_size > 0


def test_align_needs_a_ctc_head(tmp_path, speech_wave):
    from asr.data.tokenizer import train_tokenizer
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    model = ASRModel(
        len(tok),
        encoder={"name": "mingru", "d_model": 16, "num_layers": 1, "subsampling_channels": 4},
        heads={"transducer": {"kind": "transducer", "pred_dim": 8, "joint_dim": 8}},
    )
    save_checkpoint(model, tok, tmp_path / "m.ckpt")
    _split(tmp_path / "split", [(speech_wave, "THE FOX")])
    with pytest.raises(SystemExit, match="alignment needs a CTC head"):
        main(
            [
                "align",
                "--ckpt",
                str(tmp_path / "m.ckpt"),
                "--data",
                str(tmp_path / "split"),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_stream_files_and_split(tmp_path, capsys, speech_wave):
    """asr stream: partial hypotheses that grow, final lines equal to the streaming recognizer's,
    latency figures; --data writes hypotheses for asr score; a non-streaming model is refused."""
    import torch

    from asr.data.tokenizer import train_tokenizer
    from asr.decoding.streaming import StreamingRecognizer, stream_decode
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    torch.manual_seed(0)
    enc = {
        "name": "conformer",
        "d_model": 32,
        "num_layers": 1,
        "num_heads": 4,
        "subsampling_channels": 8,
        "causal": True,
    }
    model = ASRModel(len(tok), encoder=enc, heads={"ctc": {"kind": "ctc"}})
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(model, tok, ckpt)
    _split(tmp_path / "split", [(speech_wave, "THE FOX"), (speech_wave[:20000], "THE")])
    wav = next((tmp_path / "split").rglob("*-0000.flac"))
    assert main(["stream", "--ckpt", str(ckpt), str(wav), "--chunk-ms", "160", "--left-context-ms", "640"]) == 0
    out = capsys.readouterr()
    model.tokenizer = tok
    want = tok.decode(stream_decode(StreamingRecognizer(model, 4, 16), [speech_wave], 2560)[0])
    assert out.out.strip() == f"1-2-0000 {want}".strip()
    partials = [line for line in out.err.splitlines() if line.startswith("1-2-0000 [")]
    assert partials and partials[-1].split("] ", 1)[-1] == want
    assert "algorithmic latency 205 ms" in out.err and "RTF " in out.err  # 160 + 30 + 15 ms
    assert (
        main(
            [
                "stream",
                "--ckpt",
                str(ckpt),
                "--data",
                str(tmp_path / "split"),
                "--out",
                str(tmp_path / "h.txt"),
                "--quiet",
            ]
        )
        == 0
    )
    assert [line.split()[0] for line in (tmp_path / "h.txt").read_text().splitlines()] == ["1-2-0000", "1-2-0001"]
    assert "check split" not in capsys.readouterr().err  # --quiet silences the split scan's progress bar too
    assert main(["stream", "--ckpt", str(ckpt), str(wav), "--method", "beam", "--beam", "3", "--quiet"]) == 0
    out = capsys.readouterr()
    rec = StreamingRecognizer(model, 8, 64, method="beam", beam=3)
    assert out.out.strip() == f"1-2-0000 {tok.decode(stream_decode(rec, [speech_wave], 5120)[0])}".strip()
    assert "beam search (beam 3) with the ctc head" in out.err
    with pytest.raises(SystemExit, match="multiples of the 40 ms"):
        main(["stream", "--ckpt", str(ckpt), str(wav), "--chunk-ms", "100"])
    offline = ASRModel(len(tok), encoder={**enc, "causal": False}, heads={"ctc": {"kind": "ctc"}})
    save_checkpoint(offline, tok, tmp_path / "off.ckpt")
    with pytest.raises(SystemExit, match="causal"):
        main(["stream", "--ckpt", str(tmp_path / "off.ckpt"), str(wav)])


@pytest.mark.parametrize("command", ["transcribe", "stream"])
def test_bad_decode_flags_are_clear_errors_not_fallbacks(tmp_path, capsys, command):
    """--beam 0/-3 and --max-symbols 0 used to raise deep inside a search or fall back silently to
    the default; DecodeOptions validates them once, for both commands."""
    ckpt, wav, frames, _ = _fixed_hybrid(tmp_path, "m", None)
    for flags, msg in (
        (["--method", "beam", "--beam", "0"], "beam must be an integer >= 1, not 0"),
        (["--beam", "-3"], "beam must be an integer >= 1, not -3"),
        (["--max-symbols", "0"], "max_symbols must be an integer >= 1"),
    ):
        with pytest.raises(SystemExit, match=f"asr {command}: {msg}"):
            main([command, "--ckpt", str(ckpt), str(wav), "--quiet", *flags])
    # the device is selectable for streaming too, and --max-symbols 1 is honoured, not replaced by the default
    assert main([command, "--ckpt", str(ckpt), str(wav), "--quiet", "--device", "cpu", "--max-symbols", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"{wav.stem} {'C' * frames}"


@pytest.mark.parametrize("command", ["transcribe", "stream"])
def test_skip_blank_flag_reaches_the_decode_options_and_reports_the_frames_kept(tmp_path, capsys, command):
    """--skip-blank P: the fixed hybrid's CTC head gives blank 0.4 on every frame, so P = 0.5 keeps
    every frame (the transducer's "C" * 4 per frame) and P = 0.3 skips them all (no text); the run
    logs the frames kept; bad values and a CTC decoding head are clear errors."""
    ckpt, wav, frames, _ = _fixed_hybrid(tmp_path, "m", None)
    every = f"kept {frames} of {frames} frames (100.0%)"
    for p, text, kept in (("0.5", "C" * 4 * frames, every), ("0.3", "", f"kept 0 of {frames} frames (0.0%)")):
        assert main([command, "--ckpt", str(ckpt), str(wav), "--quiet", "--skip-blank", p]) == 0
        out = capsys.readouterr()
        assert out.out.rstrip("\n") == f"{wav.stem} {text}"
        assert [line for line in out.err.splitlines() if line.startswith("frame skipping")] == [
            f"frame skipping: {kept}"
        ]
    with pytest.raises(SystemExit, match=rf"asr {command}: skip_blank must be a blank posterior in \(0, 1\]"):
        main([command, "--ckpt", str(ckpt), str(wav), "--quiet", "--skip-blank", "1.5"])
    with pytest.raises(SystemExit, match="frame skipping needs a CTC head beside a transducer head; the heads are"):
        main([command, "--ckpt", str(ckpt), str(wav), "--quiet", "--skip-blank", "0.5", "--head", "ctc"])
    assert (
        "frame skipping" not in (main([command, "--ckpt", str(ckpt), str(wav), "--quiet"]), capsys.readouterr().err)[1]
    )

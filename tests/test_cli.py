import pytest

from asr.cli import main


def save_checkpoint(model, tok, path) -> None:
    """The parts of a Lightning checkpoint that load_model reads."""
    import torch

    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(),
                "tokenizer": tok.model_proto}, path)


@pytest.mark.parametrize("cmd", ["prepare", "transcribe", "stream", "align", "score"])
def test_subcommand_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"asr {cmd}" in out


def test_train_help_lists_config_groups(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "resume=true" in out and "model: conformer_ctc" in out and "data: librispeech, synthetic" in out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("prepare", "train", "transcribe", "stream", "align", "score"):
        assert cmd in out


def test_transcribe_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt: checkpoint not found"):
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
    model = ASRModel(len(tok), encoder={"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4,
                                        "subsampling_channels": 8}, heads={"ctc": {"kind": "ctc"}})
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
    assert [l.split()[0] for l in out.out.strip().splitlines()] == ["good", "low"]
    assert f"{bad}: unreadable audio" in caplog.text and f"{low}: 8000 Hz resampled" in caplog.text
    assert "unreadable or empty audio        1" in out.err and "resampled audio                  1" in out.err
    assert "decoded 2 of 3 utterances" in out.err


def test_transcribe_hybrid_heads_and_unknown_head(tmp_path, capsys, speech_wave):
    """--head picks the decoding head of a hybrid checkpoint; an unknown head names the heads there are."""
    import soundfile as sf
    import torch

    from asr.data.tokenizer import train_tokenizer
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    torch.manual_seed(0)
    model = ASRModel(len(tok), encoder={"name": "mingru", "d_model": 16, "num_layers": 1, "subsampling_channels": 4},
                     heads={"transducer": {"kind": "transducer", "loss": "tdt", "pred_dim": 8, "joint_dim": 8},
                            "ctc": {"kind": "ctc"}}, decode={"method": "greedy", "head": "ctc"})
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(model, tok, ckpt)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), speech_wave.numpy(), 16000)
    for args in ([], ["--head", "transducer"], ["--head", "ctc", "--method", "beam"],
                 ["--head", "transducer", "--method", "beam", "--beam", "2", "--max-symbols", "1"]):
        assert main(["transcribe", "--ckpt", str(ckpt), str(wav), "--quiet", *args]) == 0
        assert capsys.readouterr().out.startswith("a")
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
    tok = train_tokenizer([text, "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z"] * 5, tmp_path / "t.model",
                          "char")
    torch.manual_seed(0)
    model = ASRModel(len(tok), encoder={"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4,
                                        "subsampling_channels": 8}, heads={"ctc": {"kind": "ctc"}})
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(model, tok, ckpt)
    short = speech_wave[:16000 // 5]  # 0.2 s: 4 frames, too few for the sentence
    _split(tmp_path / "split", [(speech_wave, text), (speech_wave, "THE FOX 42"), (short, text)])
    out = tmp_path / "ali"
    with caplog.at_level(logging.WARNING):
        assert main(["align", "--ckpt", str(ckpt), "--data", str(tmp_path / "split"), "--out", str(out),
                     "--plot", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "characters outside the vocabulary" in err and "transcript longer than the audio" in err
    assert "1-2-0001.flac: '24'" in caplog.text and "1-2-0002.flac" in caplog.text
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
    model = ASRModel(len(tok), encoder={"name": "mingru", "d_model": 16, "num_layers": 1, "subsampling_channels": 4},
                     heads={"transducer": {"kind": "transducer", "pred_dim": 8, "joint_dim": 8}})
    save_checkpoint(model, tok, tmp_path / "m.ckpt")
    _split(tmp_path / "split", [(speech_wave, "THE FOX")])
    with pytest.raises(SystemExit, match="alignment needs a CTC head"):
        main(["align", "--ckpt", str(tmp_path / "m.ckpt"), "--data", str(tmp_path / "split"), "--out",
              str(tmp_path / "o")])


def test_stream_files_and_split(tmp_path, capsys, speech_wave):
    """asr stream: partial hypotheses that grow, final lines equal to the streaming recognizer's,
    latency figures; --data writes hypotheses for asr score; a non-streaming model is refused."""
    import torch

    from asr.data.tokenizer import train_tokenizer
    from asr.decoding.streaming import StreamingRecognizer, stream_decode
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    torch.manual_seed(0)
    enc = {"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4, "subsampling_channels": 8,
           "causal": True}
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
    assert main(["stream", "--ckpt", str(ckpt), "--data", str(tmp_path / "split"), "--out", str(tmp_path / "h.txt"),
                 "--quiet"]) == 0
    assert [l.split()[0] for l in (tmp_path / "h.txt").read_text().splitlines()] == ["1-2-0000", "1-2-0001"]
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

import pytest

from asr.cli import main


def save_checkpoint(model, tok, path) -> None:
    """The parts of a Lightning checkpoint that load_model reads."""
    import torch

    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(),
                "tokenizer": tok.model_proto}, path)


@pytest.mark.parametrize("cmd", ["prepare", "transcribe", "score"])
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
    for cmd in ("prepare", "train", "transcribe", "score"):
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

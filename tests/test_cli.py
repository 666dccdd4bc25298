import pytest

from asr.cli import main


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

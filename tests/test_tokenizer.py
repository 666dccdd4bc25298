import pytest

from asr.data.tokenizer import BLANK_ID, UNK_ID, Tokenizer, train_tokenizer

TEXTS = ["THE CAT SEES THE DOG", "A HORSE CARRIES SEVEN BOXES", "DON'T MOVE THE RED CHAIRS"] * 20


@pytest.mark.parametrize("kind,size", [("char", 0), ("bpe", 40), ("unigram", 25)])
def test_roundtrip_and_reserved_ids(tmp_path, kind, size):
    tok = train_tokenizer(TEXTS, tmp_path / "t.model", kind, size)
    assert tok.sp.id_to_piece(BLANK_ID) == "<blk>" and tok.sp.unk_id() == UNK_ID
    for t in TEXTS[:3]:
        ids = tok.encode(t)
        assert BLANK_ID not in ids and UNK_ID not in ids
        assert tok.decode(ids) == t
    again = Tokenizer.load(tmp_path / "t.model")
    assert again.encode(TEXTS[0]) == tok.encode(TEXTS[0])


def test_unknown_chars_and_blank_dropped_on_decode(tmp_path):
    tok = train_tokenizer(TEXTS, tmp_path / "c.model", "char")
    assert tok.unknown_chars("THE CAT! Z") == {"!", "Z"}
    ids = tok.encode("CAT")
    assert tok.decode([BLANK_ID] + ids + [BLANK_ID]) == "CAT"


def test_rejects_foreign_model(tmp_path):
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=26, hard_vocab_limit=False, minloglevel=2
    )
    with pytest.raises(ValueError, match="<blk>=0"):
        Tokenizer(buf.getvalue())

"""Sentencepiece tokenizer with the toolkit's id conventions.

Id 0 is `<blk>` (CTC/transducer blank) and id 1 is `<unk>`. The serialized model
travels inside every checkpoint, so a checkpoint decodes on its own.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

BLANK_ID = 0
UNK_ID = 1


class Tokenizer:
    """Text <-> token ids. `encode(text) -> list[int]`, `decode(ids) -> str`."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.piece_to_id("<blk>") != BLANK_ID or self.sp.unk_id() != UNK_ID:
            raise ValueError(
                "tokenizer must have <blk>=0 and <unk>=1; train it with asr.data.tokenizer.train_tokenizer"
            )

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls(Path(path).read_bytes())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        return len(self)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) != BLANK_ID])

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of `text` that encode to <unk>."""
        return {c for c in set(text) if not c.isspace() and UNK_ID in self.sp.encode(c, out_type=int)}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer in `path`: a sentencepiece model (`asr prepare`'s tokenizer_*.model) or an
    asr checkpoint, which carries its model's tokenizer.

    Raises FileNotFoundError, or ValueError naming the file when it is neither."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer or checkpoint not found")
    with path.open("rb") as f:
        is_zip = f.read(2) == b"PK"  # a zip archive: torch.save's format, so a checkpoint
    if is_zip:
        import torch

        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as e:  # zip and pickle errors: their text is all the reason there is
            raise ValueError(f"{path}: not a readable checkpoint: {e}") from e
        if not isinstance(ckpt, dict) or "tokenizer" not in ckpt:
            raise ValueError(f"{path}: a PyTorch file without a tokenizer; not an asr checkpoint")
        data = ckpt["tokenizer"]
    else:
        data = path.read_bytes()
    try:
        return Tokenizer(data)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a usable tokenizer (a sentencepiece model or asr checkpoint): {e}") from e


def train_tokenizer(texts: Iterable[str], out_path: str | Path, kind: str = "bpe", vocab_size: int = 500) -> Tokenizer:
    """Train a sentencepiece model (`kind` in bpe|unigram|char) and write it to out_path."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("train_tokenizer: no training text")
    if kind not in ("bpe", "unigram", "char"):
        raise ValueError(f"unknown tokenizer kind {kind!r}; use bpe, unigram or char")
    chars = {c for t in texts for c in t if not c.isspace()}
    if kind == "char":
        vocab_size = len(chars) + 3  # chars, word boundary, <blk>, <unk>
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        model_type=kind,
        vocab_size=vocab_size,
        character_coverage=1.0,
        user_defined_symbols=["<blk>"],
        unk_id=UNK_ID,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=kind != "char",
        minloglevel=2,
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(buf.getvalue())
    return Tokenizer(buf.getvalue())

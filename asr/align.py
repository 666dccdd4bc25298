"""Forced alignment of transcripts with a CTC head: token and word times, written as CTM.

The CTC head's log-probs and the transcript's training graph go through Viterbi
(asr.losses.forced_align). A token starts on the frame where the best path first emits
it and ends on the last frame that repeats it; encoder frame i covers
[i * shift, (i + 1) * shift) seconds, shift = feature hop x encoder subsampling (40 ms for
the default models). A word runs from the start of its first token with letters to the
end of its last token (sentencepiece marks word starts with "▁"; a bare "▁" token is the
word boundary itself and takes no time of its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .data.audio import pad_waves
from .decoding.timestamps import Word, group_words
from .losses import forced_align
from .model import ASRModel
from .problems import Problems
from .transcribe import audio_batches

log = logging.getLogger(__name__)


@dataclass
class UttAlignment:
    tokens: list[Word] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    score: float = 0.0  # log-score of the best path
    frames: torch.Tensor | None = None  # [T] token id per encoder frame (for plots)
    log_probs: torch.Tensor | None = None  # [T, V] (kept only when asked, for plots)


def ctc_head_name(model: ASRModel, head: str | None) -> str:
    """The CTC head to align with: `head`, else the first CTC head; a clear error if none."""
    names = [n for n, h in model.heads.items() if h.kind == "ctc"]  # Viterbi over the CTC graph needs a CTC head
    if head is not None:
        if head not in names:
            raise ValueError(f"head {head!r} is not a CTC head of this model; its CTC heads are {names or 'none'}")
        return head
    if not names:
        raise ValueError(
            f"alignment needs a CTC head; this model's heads are {list(model.heads)} "
            "(train a hybrid, e.g. model=conformer_hybrid_tdt_ctc)"
        )
    return names[0]


@torch.no_grad()
def align_items(
    model: ASRModel,
    items: list[tuple[str, str]],
    texts: dict[str, str],
    head: str | None = None,
    max_seconds: float = 120.0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_log_probs: int = 0,
    where: dict[str, str] | None = None,
) -> tuple[dict[str, UttAlignment], Problems]:
    """Align (utt_id, path) items to their transcripts texts[utt_id].

    Skipped and counted (with the file named): unreadable audio, transcripts with
    characters outside the vocabulary, transcripts longer than the audio can hold.
    keep_log_probs: keep frames and log-probs of the first N utterances (for plots).
    where: {utt_id: "trans.txt:LINE"} to name transcripts by their line (default: the audio path).
    """
    name = ctc_head_name(model, head)
    ctc = model.heads[name]
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the model has no tokenizer (load it with asr.model.load_model)")
    shift = model.frame_seconds
    model = model.to(device).eval()
    problems = Problems()
    out: dict[str, UttAlignment] = {}
    paths = dict(items)
    where = {uid: where[uid] if where and uid in where else path for uid, path in items}
    usable = []
    for uid, path in items:
        text = texts.get(uid)
        if text is None:
            problems.add("missing transcript", f"{path}: no transcript for {uid}")
        elif tok.unknown_chars(text):
            problems.add(
                "characters outside the vocabulary",
                f"{where[uid]}: {''.join(sorted(tok.unknown_chars(text)))!r} in {text!r} ({path})",
            )
        else:
            usable.append((uid, path))
    bar = tqdm(total=len(usable), desc="align", unit="utt", disable=not progress)
    for ids, waves in audio_batches(usable, max_seconds, problems):
        audio, lens = pad_waves(waves)
        enc, enc_lens = model(audio.to(device), lens.to(device))
        log_probs = ctc(enc).cpu()
        targets = [tok.encode(texts[uid]) for uid in ids]
        ali = forced_align(log_probs, targets, enc_lens.cpu())
        for i, uid in enumerate(ids):
            if not torch.isfinite(ali.scores[i]):
                problems.add(
                    "transcript longer than the audio",
                    f"{where[uid]}: {len(targets[i])} tokens do not fit in {int(enc_lens[i])} frames ({paths[uid]})",
                )
                continue
            spans = ali.token_spans(i)
            pieces = [tok.sp.id_to_piece(t) for t, _, _ in spans]
            times = [(s * shift, (e + 1) * shift) for _, s, e in spans]
            u = UttAlignment(
                [Word(p, s, e) for p, (s, e) in zip(pieces, times)],
                group_words(pieces, times),
                float(ali.scores[i]),
            )
            if len(out) < keep_log_probs:
                n = int(enc_lens[i])
                u.frames, u.log_probs = ali.labels[i, :n].clone(), log_probs[i, :n].clone()
            out[uid] = u
        bar.update(len(ids))
    bar.close()
    return out, problems


def write_ctm(path: str | Path, alignments: dict[str, UttAlignment], level: str = "words") -> None:
    """CTM lines `utt-id 1 start duration text` (seconds, 2 decimals), sorted by utterance."""
    lines = []
    for uid in sorted(alignments):
        for seg in getattr(alignments[uid], level):
            lines.append(f"{uid} 1 {seg.start:.2f} {seg.end - seg.start:.2f} {seg.word}\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(lines))


def plot_alignment(ali: UttAlignment, shift: float, path: str | Path, title: str = "") -> None:
    """PNG: per-frame log-probs (tokens of the transcript only) with the aligned words above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert ali.log_probs is not None and ali.frames is not None
    n = ali.log_probs.shape[0]
    fig, ax = plt.subplots(figsize=(max(6.0, n * shift * 2.5), 3.2))
    ax.plot([i * shift for i in range(n)], ali.log_probs[:, 0].exp().numpy(), color="0.7", lw=1, label="blank")
    emitted = (ali.frames > 0).numpy()
    probs = ali.log_probs.exp()[torch.arange(n), ali.frames.clamp(min=0)].numpy()
    ax.bar(
        [i * shift for i in range(n)],
        probs * emitted,
        width=shift,
        align="edge",
        color="tab:blue",
        label="aligned token",
    )
    for w in ali.words:
        ax.axvspan(w.start, w.end, color="tab:orange", alpha=0.15)
        ax.text((w.start + w.end) / 2, 1.02, w.word, ha="center", va="bottom", fontsize=8, rotation=30)
    ax.set_xlim(0, n * shift)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

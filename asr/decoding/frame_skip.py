"""Frame skipping: a transducer search that reads only the frames a CTC head does not call blank.

Yang et al., "Blank-regularized CTC for Frame Skipping in Neural Transducer" (icefall's
`pruned_transducer_stateless7_ctc_bs`): a CTC head on the same encoder as the transducer
gives each frame a blank posterior; frames where it is >= a threshold carry no token, so the
transducer's search skips them and runs over a shorter sequence. Training the CTC head with
a repeat penalty (asr.losses.ctc_fst_loss, `repeat_penalty`) makes it put blank on more frames,
so more are skipped.

`FrameSkipSearch` wraps any transducer Search (greedy, beam, with fusion): on each `advance`
it runs the CTC head on the chunk (frame-wise, so chunked and whole-utterance calls keep the
same frames), packs each utterance's kept frames to the left of a shorter padded batch, and
advances the inner search on it. It remembers the original index of every kept frame, and
`hypotheses` maps token frames back to them, so word times stay those of the full sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from .search import Hypothesis, Search


def check_blank_threshold(value: object, name: str) -> None:
    """The one check of a frame-skipping threshold (DecodeOptions.skip_blank, frame_skip.threshold,
    FrameSkipSearch): a blank posterior in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a blank posterior in (0, 1], not {value!r}")


def skipping_ctc_head(heads: Mapping[str, torch.nn.Module]) -> str | None:
    """The name of the CTC head whose blanks frame skipping drops (the first, in decoding and in
    training alike), or None when the model has none."""
    return next((name for name, h in heads.items() if h.kind == "ctc"), None)


@dataclass(frozen=True)
class FrameSkipTraining:
    """Frame skipping in training (the model config's `frame_skip`): the transducer heads' losses
    read only the frames the model's CTC head does not call blank, as their searches do with
    `--skip-blank`, so that a transducer learns to emit on the frames it will be given
    (icefall's ctc_bs recipe trains so; a transducer trained on all frames loses words when its
    frames are dropped only at inference)."""

    threshold: float = 0.95  # frames with blank posterior >= this are dropped (decode with the same skip_blank)
    after_steps: int = 0  # training steps on all frames first: the CTC head must learn before it chooses

    def __post_init__(self) -> None:
        check_blank_threshold(self.threshold, "frame_skip.threshold")
        if not isinstance(self.after_steps, int) or self.after_steps < 0:
            raise ValueError(f"frame_skip.after_steps must be an integer >= 0, not {self.after_steps!r}")


def keep_mask(ctc_head: torch.nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B, T] bool: the valid frames of enc[B, T, D] whose blank posterior under ctc_head
    (CTCHead.blank_posterior, no dropout, no gradient) is below `threshold`."""
    with torch.no_grad():
        blank = ctc_head.blank_posterior(enc)
    valid = torch.arange(enc.shape[1], device=enc.device)[None, :] < enc_lens.to(enc.device)[:, None]
    return valid & (blank < threshold)


@dataclass
class SkipCounts:
    """Frames seen and kept (passed to the inner search), summed over utterances."""

    seen: int = 0
    kept: int = 0

    @property
    def skipped_fraction(self) -> float:
        """The fraction of frames the inner search did not read (0 when none were seen)."""
        return 1.0 - self.kept / self.seen if self.seen else 0.0

    def summary(self) -> str:
        """The line transcribe and stream log once per run."""
        pct = 100.0 * self.kept / self.seen if self.seen else 100.0
        return f"frame skipping: kept {self.kept} of {self.seen} frames ({pct:.1f}%)"


@dataclass
class FrameSkipState:
    """The inner search's state plus, per utterance, which frames it has read."""

    inner: Any  # the wrapped search's state (over packed frames)
    kept: list[list[int]]  # per utterance: the original index of each kept frame, from the stream's start
    seen: list[int]  # per utterance: frames seen so far (kept or not)

    def counts(self, b: int) -> SkipCounts:
        """Frames seen and kept of utterance b so far."""
        return SkipCounts(self.seen[b], len(self.kept[b]))


def pack_frames(enc: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's kept frames, in order, at the start of a shorter padded batch.

    Args:
        enc: [B, T, D]. keep: [B, T] bool, False at padding.
    Returns: (packed [B, T', D] with T' = max(1, most frames kept in a row), zeros past each
    row's length; lengths [B] int64; index [B, T']: the frame of enc each packed frame came
    from (meaningful below the row's length)). T' is at least 1 so that a chunk where every
    frame is skipped still gives the inner search a well-formed (all-padding) batch.
    """
    b, t, d = enc.shape
    lens = keep.sum(1)
    width = max(1, int(lens.max()) if b else 0)
    if t == 0:  # nothing to take: one padding frame
        return enc.new_zeros(b, width, d), lens, torch.zeros(b, width, dtype=torch.long, device=enc.device)
    # a stable sort puts the kept frames first, in their order; skipped and padding frames follow
    index = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
    packed = enc.gather(1, index[..., None].expand(-1, -1, d))
    valid = torch.arange(width, device=enc.device)[None, :] < lens[:, None]
    return packed.masked_fill(~valid[..., None], 0.0), lens, index


def _map_hypothesis(h: Hypothesis, kept: list[int]) -> Hypothesis:
    """h with its token frames mapped from packed to original frames (`kept`: original index of
    each packed frame).

    A token read at packed frame f with duration d (TDT's; RNN-T's 1) covers the original frames
    kept[f] through kept[f + d - 1], the last kept frame it spans: the skipped frames between
    those count in, the skipped frames after it do not (they were blank, so a word does not
    stretch over the pause that follows it). A TDT jump past the last kept frame runs on past
    it by as many frames; duration 0 (a TDT label that stays on its frame) stays 0. With
    nothing skipped this is the identity.
    """
    if h.frames is None:
        return h

    def original(j: int) -> int:  # packed frame j in original frames (past the end: beyond the last)
        return kept[j] if j < len(kept) else kept[-1] + j - len(kept) + 1

    durations = None
    if h.durations is not None:
        durations = [0 if d == 0 else original(f + d - 1) - kept[f] + 1 for f, d in zip(h.frames, h.durations)]
    return replace(h, frames=[kept[f] for f in h.frames], durations=durations)


class FrameSkipSearch:
    """A Search that feeds `inner` only the frames where `ctc_head` gives blank posterior < threshold.

    Args:
        inner: the transducer search (greedy, beam, fused) to run on the kept frames.
        ctc_head: a CTC head over the same encoder frames (forward(enc[B, T, D]) -> log_probs[B, T, V]).
        threshold: in (0, 1]; frames with blank posterior >= threshold are skipped.
        counts: where the frames seen and kept of every utterance advanced are added up (the
            run's total, for the "kept X of Y frames" line; default: a new SkipCounts, the
            attribute `counts`); per utterance: FrameSkipState.counts(b).
    """

    def __init__(self, inner: Search, ctc_head: torch.nn.Module, threshold: float, counts: SkipCounts | None = None):
        check_blank_threshold(threshold, "the blank threshold of frame skipping")
        self.inner, self.ctc_head, self.threshold = inner, ctc_head, threshold
        self.counts = SkipCounts() if counts is None else counts

    def init(self, batch_size: int, device: torch.device | str) -> FrameSkipState:
        return FrameSkipState(self.inner.init(batch_size, device), [[] for _ in range(batch_size)], [0] * batch_size)

    def keep_mask(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: the valid frames whose blank posterior is below the threshold."""
        return keep_mask(self.ctc_head, enc, enc_lens, self.threshold)

    def advance(
        self, state: FrameSkipState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor
    ) -> FrameSkipState:
        packed, lens, index = pack_frames(enc, self.keep_mask(enc, enc_lens))
        inner = self.inner.advance(state.inner, packed, lens, final)
        # the lists grow in place, as the searches' own do (a long stream must not copy them)
        for b, (n, seen, idx) in enumerate(zip(lens.tolist(), enc_lens.tolist(), index.tolist())):
            state.kept[b].extend(state.seen[b] + i for i in idx[:n])
            state.seen[b] += seen
            self.counts.seen += seen
            self.counts.kept += n
        return FrameSkipState(inner, state.kept, state.seen)

    def hypotheses(self, state: FrameSkipState) -> list[Hypothesis]:
        """The inner search's hypotheses (and n-best) with token frames and durations in original
        frames (`_map_hypothesis`)."""
        out = []
        for h, kept in zip(self.inner.hypotheses(state.inner), state.kept):
            out.append(replace(_map_hypothesis(h, kept), nbest=[_map_hypothesis(n, kept) for n in h.nbest]))
        return out

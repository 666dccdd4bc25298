"""Attention-decoder searches (batched), and attention rescoring of a first pass's n-best.

The decoder reads all encoder frames of an utterance, so these searches are not
frame-synchronous: their Search state collects each utterance's frames, and an utterance
is decoded when its frames end (`final`). Offline that is the one `advance`; streaming, the
first pass of rescoring runs chunk by chunk and the rescoring runs once the stream ends.

- greedy: the most probable next token until `<eos>`, at most as many tokens as encoder
  frames (the transducer and CTC searches cannot emit more either at 4x subsampling).
- beam: `beam` prefixes per utterance; a prefix that emitted `<eos>` is finished and keeps
  its score while the others grow; the search stops when every prefix is finished or at the
  maximum length. Hypotheses are ranked by score / (tokens + 1) (the `+1` counts `<eos>`),
  so long sentences are not penalized for their length. beam=1 makes greedy's choices.
- rescoring (WeNet's second pass): the first pass's n-best (CTC prefix beam search or
  transducer beam search), each rescored by the attention head;
  score = (1 - w) * attention + w * first pass, so w=1 keeps the first pass's best.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .search import Hypothesis, Search


def _pad(frames: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance frames [T_i, D] -> (enc[B, max T_i, D] zero padded, lengths[B])."""
    lens = torch.tensor([len(f) for f in frames], dtype=torch.long, device=frames[0].device)
    enc = frames[0].new_zeros(len(frames), max(1, int(lens.max())), frames[0].shape[1])
    for i, f in enumerate(frames):
        enc[i, : len(f)] = f
    return enc, lens


@torch.no_grad()
def attention_greedy_search(head, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[Hypothesis]:
    """Batched greedy decoding with an AttentionHead. enc[B, T, D], enc_lens[B] -> hypotheses
    (score: log-probability of the tokens and, when emitted, `<eos>`)."""
    b, device = enc.shape[0], enc.device
    cache = head.start(enc, enc_lens)
    max_len = enc_lens.to(device).clamp(min=1)
    ys = torch.full((b, 1), head.sos, dtype=torch.long, device=device)
    score = torch.zeros(b, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    for step in range(int(max_len.max())):
        lp, cache = head.step(cache, ys[:, -1])
        best, tok = lp.max(-1)
        tok = tok.masked_fill(done, head.eos)
        score = score + best.masked_fill(done, 0.0)
        ys = torch.cat([ys, tok[:, None]], dim=1)
        done |= (tok == head.eos) | (step + 1 >= max_len)
        if bool(done.all()):
            break
    return [Hypothesis(_strip(row, head.eos), s) for row, s in zip(ys[:, 1:].tolist(), score.tolist())]


def _strip(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos)] if eos in row else row


@torch.no_grad()
def attention_beam_search(head, enc: torch.Tensor, enc_lens: torch.Tensor, beam: int = 4) -> list[Hypothesis]:
    """Batched beam search with an AttentionHead: `beam` prefixes per utterance, n-best ranked by
    length-normalized score (Hypothesis.score is that normalized score)."""
    b, k, device = enc.shape[0], beam, enc.device
    cache = head.start(enc.repeat_interleave(k, 0), enc_lens.repeat_interleave(k, 0))
    max_len = enc_lens.to(device).clamp(min=1)[:, None]  # [B, 1]
    n_out = head.vocab_size + 1
    neg = float("-inf")
    # a finished prefix has one continuation, itself (<eos> again at no cost), so it neither
    # multiplies in the beam nor changes its score
    stay = torch.full((n_out,), neg, device=device)
    stay[head.eos] = 0.0
    ys = torch.full((b * k, 1), head.sos, dtype=torch.long, device=device)
    score = torch.full((b, k), neg, device=device)
    score[:, 0] = 0.0
    done = torch.zeros(b, k, dtype=torch.bool, device=device)
    length = torch.zeros(b, k, dtype=torch.long, device=device)  # tokens, counting <eos>
    rows = torch.arange(b, device=device)[:, None] * k
    for step in range(int(max_len.max())):
        lp, cache = head.step(cache, ys[:, -1])
        lp = lp.view(b, k, n_out)
        lp = torch.where(done[..., None], stay, lp)
        top, idx = (score[..., None] + lp).view(b, k * n_out).topk(k, dim=1)
        parent, tok = idx // n_out, idx % n_out
        flat = (rows + parent).view(-1)
        was_done = done.gather(1, parent)
        ys = torch.cat([ys[flat], tok.view(-1, 1)], dim=1)
        cache = cache.select(flat)
        length = length.gather(1, parent) + (~was_done).long()
        done = was_done | (tok == head.eos) | (step + 1 >= max_len)
        score = top
        if bool((done | (score == neg)).all()):
            break
    ranked = score / length.clamp(min=1)
    out = []
    for i in range(b):
        order = sorted((j for j in range(k) if score[i, j] > neg), key=lambda j: -float(ranked[i, j]))
        nbest = [Hypothesis(_strip(ys[i * k + j, 1:].tolist(), head.eos), float(ranked[i, j])) for j in order]
        out.append(replace(nbest[0], nbest=nbest))
    return out


@dataclass
class FramesState:
    """Each utterance's encoder frames so far, and its hypothesis once its frames have ended."""

    frames: list[list[torch.Tensor]]
    results: list[Hypothesis | None]
    first: Any = None  # the first pass's state (rescoring)
    final: list[bool] = field(default_factory=list)


def collect_frames(state: FramesState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor) -> list[int]:
    """Append the new frames; the utterances that end here and have no result yet."""
    ending = []
    for i, n in enumerate(enc_lens.tolist()):
        state.frames[i].append(enc[i, :n])
        if bool(final[i]) and state.results[i] is None:
            ending.append(i)
    return ending


def frames_of(state: FramesState, utts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return _pad([torch.cat(state.frames[i]) for i in utts])


class WholeUtteranceSearch:
    """The Search interface for searches that need all of an utterance's frames: frames are
    collected chunk by chunk and `decode(enc, enc_lens)` runs on the utterances that end."""

    def decode(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[Hypothesis]:
        raise NotImplementedError

    def init(self, batch_size: int, device: torch.device | str) -> FramesState:
        return FramesState([[] for _ in range(batch_size)], [None] * batch_size)

    def advance(
        self, state: FramesState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor
    ) -> FramesState:
        ending = collect_frames(state, enc, enc_lens, final)
        if ending:
            for i, h in zip(ending, self.decode(*frames_of(state, ending))):
                state.results[i] = h
        return state

    def hypotheses(self, state: FramesState) -> list[Hypothesis]:
        """Decoded utterances; an utterance whose frames have not ended has no hypothesis yet."""
        return [h if h is not None else Hypothesis([], 0.0) for h in state.results]


class AttentionSearch(WholeUtteranceSearch):
    """An AttentionHead's greedy (beam=None) or beam search."""

    def __init__(self, head, beam: int | None = None):
        self.head, self.beam = head, beam

    def decode(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[Hypothesis]:
        if self.beam is None:
            return attention_greedy_search(self.head, enc, enc_lens)
        return attention_beam_search(self.head, enc, enc_lens, self.beam)


class AttentionRescoringSearch:
    """A first-pass beam search whose n-best the attention head rescores once an utterance ends.

    Args:
        first: the first pass (a Search returning n-best lists: CTC prefix or transducer beam).
        head: the AttentionHead. weight: w in (1 - w) * attention + w * first pass.
        reverse_weight: weight of the right-to-left decoder in the attention score (if trained).
    """

    def __init__(self, first: Search, head, weight: float, reverse_weight: float = 0.0):
        self.first, self.head, self.weight, self.reverse_weight = first, head, weight, reverse_weight

    def init(self, batch_size: int, device: torch.device | str) -> FramesState:
        return FramesState([[] for _ in range(batch_size)], [None] * batch_size, self.first.init(batch_size, device))

    def advance(
        self, state: FramesState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor
    ) -> FramesState:
        state.first = self.first.advance(state.first, enc, enc_lens, final)
        ending = collect_frames(state, enc, enc_lens, final)
        if ending:
            first = self.first.hypotheses(state.first)
            e, n = frames_of(state, ending)
            nbests = [first[i].nbest or [first[i]] for i in ending]
            att = self.head.score(e, n, [[h.tokens for h in nb] for nb in nbests], self.reverse_weight)
            for i, nb, a in zip(ending, nbests, att):
                # the first pass's hypotheses keep their token times and confidences
                combined = [h.with_score((1 - self.weight) * sa + self.weight * h.score) for h, sa in zip(nb, a)]
                ranked = sorted(combined, key=lambda h: -h.score)
                state.results[i] = replace(ranked[0], nbest=ranked)
        return state

    def hypotheses(self, state: FramesState) -> list[Hypothesis]:
        """Rescored results of ended utterances; the first pass's current best for the others."""
        first = self.first.hypotheses(state.first)
        return [h if h is not None else f for h, f in zip(state.results, first)]

"""CTC decoding: batched greedy, and prefix beam search (resumable across chunks for streaming)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch


def ctc_greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: [B, T, V]; lengths: [B]. Frames at or beyond a length are ignored.
    Returns:
        token ids per utterance.
    """
    best = log_probs.argmax(dim=-1)  # [B, T]
    t = best.shape[1]
    valid = torch.arange(t, device=best.device)[None, :] < lengths[:, None].to(best.device)
    prev = torch.cat([torch.full_like(best[:, :1], -1), best[:, :-1]], dim=1)
    keep = valid & (best != blank) & (best != prev)
    best, keep = best.cpu(), keep.cpu()
    return [best[b][keep[b]].tolist() for b in range(best.shape[0])]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


Prefixes = dict[tuple[int, ...], tuple[float, float]]  # prefix -> (log p ending in blank, ... in its last token)


@dataclass
class PrefixBeamState:
    """Where a CTC prefix beam search stands between chunks of frames (streaming): per utterance,
    the surviving prefixes with their two scores."""

    beams: list[Prefixes]

    def best(self) -> list[list[int]]:
        """The most probable prefix per utterance (the partial result while streaming)."""
        return [list(max(b.items(), key=lambda kv: _logaddexp(*kv[1]))[0]) for b in self.beams]


def ctc_prefix_beam_init(batch_size: int) -> PrefixBeamState:
    """Before any frame: the empty prefix, ending in blank with probability 1."""
    return PrefixBeamState([{(): (0.0, -math.inf)} for _ in range(batch_size)])


def ctc_prefix_beam_search(log_probs: torch.Tensor, lengths: torch.Tensor, beam: int = 4,
                           blank: int = 0, token_prune: int | None = None) -> list[list[int]]:
    """CTC prefix beam search (Hannun et al. 2014) without a language model.

    Each prefix keeps two scores: ending in blank and ending in its last token, so
    paths that collapse to the same prefix are summed. Per frame only the
    `token_prune` (default: beam) most likely tokens are expanded.

    Args:
        log_probs: [B, T, V]; lengths: [B].
    Returns:
        the best prefix's token ids per utterance.
    """
    state = ctc_prefix_beam_init(log_probs.shape[0])
    return ctc_prefix_beam_continue(log_probs, lengths, state, beam, blank, token_prune).best()


def ctc_prefix_beam_continue(log_probs: torch.Tensor, lengths: torch.Tensor, state: PrefixBeamState,
                             beam: int = 4, blank: int = 0, token_prune: int | None = None) -> PrefixBeamState:
    """Run the prefix beam search over the next frames log_probs[B, T, V] (lengths[B] valid).

    The search is frame-synchronous and its state is the beam, so frames fed in chunks give
    exactly the prefixes of one call over all of them.
    """
    k = token_prune or beam
    topv, topi = log_probs.float().topk(min(k, log_probs.shape[-1]), dim=-1)
    topv, topi = topv.cpu().tolist(), topi.cpu().tolist()
    blank_lp = log_probs[..., blank].float().cpu().tolist()
    out = []
    for b in range(log_probs.shape[0]):
        beams = state.beams[b]
        for t in range(int(lengths[b])):
            nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
            pb_t = blank_lp[b][t]
            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                e = nxt[prefix]
                e[0] = _logaddexp(e[0], total + pb_t)  # blank keeps the prefix
                for lp, tok in zip(topv[b][t], topi[b][t]):
                    if tok == blank:
                        continue
                    if prefix and prefix[-1] == tok:
                        e[1] = _logaddexp(e[1], pnb + lp)  # repeat merges into the same prefix
                        ext = nxt[prefix + (tok,)]
                        ext[1] = _logaddexp(ext[1], pb + lp)  # a blank separated the repeat
                    else:
                        ext = nxt[prefix + (tok,)]
                        ext[1] = _logaddexp(ext[1], total + lp)
            beams = {p: (s[0], s[1]) for p, s in sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam]}
        out.append(beams)
    return PrefixBeamState(out)

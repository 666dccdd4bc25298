"""Joint CTC/attention one-pass beam search (Watanabe et al. 2017, as in ESPnet), batched.

A label-synchronous beam search over the attention decoder's prefixes, where every prefix h
is scored by

    score(h) = w * log p_ctc(h...) + (1 - w) * log p_att(h)

with p_ctc(h...) the CTC prefix probability (all frame alignments of h followed by anything)
and, for a finished hypothesis (h + `<eos>`), p_ctc(h) itself and p_att(h, eos). w is
DecodeOptions.ctc_weight. The CTC prefix probabilities come from the prefix recursion over
frames (r^n_t: paths ending in h's last label at frame t, r^b_t: ending in blank), computed
for every candidate token at once, so no pre-beam can prune the token CTC prefers.
Finished hypotheses keep their score while the others grow; the search stops when all are
finished; at most one token per encoder frame, after which only `<eos>` may follow. The best
full-sequence score wins (no length normalization, so that the result is the argmax of the
stated score over all label sequences, which a test checks by enumeration).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .attention import WholeUtteranceSearch
from .search import Hypothesis

NEG = float("-inf")


def _ctc_init(ctc_lp: torch.Tensor, blank: int) -> torch.Tensor:
    """The empty prefix's (r^n, r^b) per frame: [N, T, 2] (r^b = blank on every frame so far)."""
    r = torch.full((*ctc_lp.shape[:2], 2), NEG, device=ctc_lp.device)
    r[:, :, 1] = ctc_lp[:, :, blank].cumsum(dim=1)
    return r


def _ctc_extend(
    r: torch.Tensor, last: torch.Tensor, ctc_lp: torch.Tensor, valid: torch.Tensor, blank: int, first: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend every prefix by every token.

    Args:
        r: [N, T, 2] the prefixes' (r^n, r^b); last: [N] their last token (-1 for the empty prefix).
        ctc_lp: [N, T, V] CTC log-probs; valid: [N, T] real frames.
        first: the earliest frame >= 1 on which the new token can start: a prefix of L tokens
            fills frames 0..L-1 at least, so the recursion starts at frame L (before it every
            term is -inf).
    Returns:
        psi[N, V]: log CTC prefix probability of prefix + token; r_new[N, T, 2, V].
    """
    n, t_max, v = ctc_lp.shape
    prev = torch.logaddexp(r[..., 0], r[..., 1])  # [N, T]: all paths of the prefix up to t
    # a repeated token needs a blank between: only paths ending in blank may continue into it
    phi = prev[..., None].expand(n, t_max, v).clone()
    same = torch.arange(v, device=r.device)[None, :] == last[:, None]  # [N, V]
    phi = torch.where(same[:, None, :], r[..., 1:2].expand(n, t_max, v), phi)
    r_new = torch.full((n, t_max, 2, v), NEG, device=r.device)
    empty = last < 0
    start = torch.where(empty[:, None], ctc_lp[:, 0], torch.full_like(ctc_lp[:, 0], NEG))
    r_new[:, 0, 0] = start
    psi = start.clone()
    for t in range(max(1, first), t_max):
        rn = torch.logaddexp(r_new[:, t - 1, 0], phi[:, t - 1]) + ctc_lp[:, t]
        rb = torch.logaddexp(r_new[:, t - 1, 0], r_new[:, t - 1, 1]) + ctc_lp[:, t, blank : blank + 1]
        r_new[:, t, 0], r_new[:, t, 1] = rn, rb
        # the token's first frame is t: add those paths (frames past the end add nothing)
        psi = torch.where(valid[:, t, None], torch.logaddexp(psi, phi[:, t - 1] + ctc_lp[:, t]), psi)
    return psi, r_new


def _ctc_final(r: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """log p_ctc(prefix) over the whole utterance: r^n + r^b at its last frame. r[N, T, 2] -> [N]."""
    at = r[torch.arange(r.shape[0], device=r.device), (lens - 1).clamp(min=0)]
    return torch.logaddexp(at[:, 0], at[:, 1])


@torch.no_grad()
def joint_beam_search(
    ctc_head, att_head, enc: torch.Tensor, enc_lens: torch.Tensor, beam: int = 4, ctc_weight: float = 0.3
) -> list[Hypothesis]:
    """Batched joint CTC/attention beam search. enc[B, T, D], enc_lens[B] -> hypotheses whose score
    is the combined score and whose n-best lists the finished prefixes, best first."""
    b, k, device = enc.shape[0], beam, enc.device
    w = ctc_weight
    ctc_lp = ctc_head(enc).float().repeat_interleave(k, 0)  # [B*K, T, V]
    v = ctc_lp.shape[2]
    lens = enc_lens.to(device)
    lens_k = lens.repeat_interleave(k)
    valid = torch.arange(ctc_lp.shape[1], device=device)[None, :] < lens_k[:, None]
    cache = att_head.start(enc.repeat_interleave(k, 0), enc_lens.repeat_interleave(k, 0))
    eos = att_head.eos  # == v: candidates 0..v-1 are tokens (blank excluded below), v is <eos>
    ys = torch.full((b * k, 1), att_head.sos, dtype=torch.long, device=device)
    r = _ctc_init(ctc_lp, ctc_head.blank)
    last = torch.full((b * k,), -1, dtype=torch.long, device=device)
    att = torch.zeros(b, k, device=device)
    score = torch.full((b, k), NEG, device=device)
    score[:, 0] = 0.0
    done = torch.zeros(b, k, dtype=torch.bool, device=device)
    max_len = lens.clamp(min=1)[:, None]
    rows = torch.arange(b, device=device)[:, None] * k
    for step in range(int(max_len.max()) + 1):
        att_lp, cache = att_head.step(cache, ys[:, -1])  # [B*K, V+1]
        psi, r_new = _ctc_extend(r, last, ctc_lp, valid, ctc_head.blank, first=step)
        ctc_c = torch.cat([psi, _ctc_final(r, lens_k)[:, None]], dim=1).view(b, k, v + 1)
        att_c = (att.view(-1, 1) + att_lp).view(b, k, v + 1)
        # (0 * -inf would be nan: with w = 0 an alignment CTC cannot make is no obstacle)
        cand = (w * ctc_c if w > 0 else 0.0) + (1 - w) * att_c
        cand[..., ctc_head.blank] = NEG  # blank is no token
        cand[..., :v] = cand[..., :v].masked_fill((step >= max_len)[..., None], NEG)  # full: only <eos>
        cand = cand.masked_fill(~(score > NEG)[..., None], NEG)
        # a finished hypothesis has one continuation, itself, with its score unchanged
        stay = torch.full_like(cand, NEG)
        stay[..., eos] = score
        cand = torch.where(done[..., None], stay, cand)
        top, idx = cand.view(b, -1).topk(k, dim=1)
        parent, tok = idx // (v + 1), idx % (v + 1)
        flat = (rows + parent).view(-1)
        was_done = done.gather(1, parent)
        new_tok = tok.view(-1)
        ys = torch.cat([ys[flat], new_tok[:, None]], dim=1)
        cache = cache.select(flat)
        is_tok = (new_tok != eos) & ~was_done.view(-1)
        r_keep = r[flat]
        r_ext = r_new[flat, :, :, new_tok.clamp(max=v - 1)]  # [B*K, T, 2]
        r = torch.where(is_tok[:, None, None], r_ext, r_keep)
        last = torch.where(is_tok, new_tok, last[flat])
        att = torch.where(was_done, att.gather(1, parent), att_c.view(b, -1).gather(1, idx))
        score = top
        done = was_done | (tok == eos)
        if bool((done | (score == NEG)).all()):
            break
    out = []
    for i in range(b):
        order = sorted((j for j in range(k) if score[i, j] > NEG), key=lambda j: -float(score[i, j]))
        rows_i = ys.view(b, k, -1)[i, :, 1:].tolist()
        nbest = [Hypothesis(rows_i[j][: rows_i[j].index(eos)], float(score[i, j])) for j in order]
        out.append(replace(nbest[0], nbest=nbest))
    return out


class JointSearch(WholeUtteranceSearch):
    """The Search interface for joint CTC/attention beam search."""

    def __init__(self, ctc_head, att_head, beam: int, ctc_weight: float):
        self.ctc, self.att, self.beam, self.weight = ctc_head, att_head, beam, ctc_weight

    def decode(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[Hypothesis]:
        return joint_beam_search(self.ctc, self.att, enc, enc_lens, self.beam, self.weight)

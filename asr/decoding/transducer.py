"""Batched greedy and beam search for RNN-T and TDT heads.

All functions take a `TransducerHead` and encoder output enc[B, T, D] with lengths[B],
and return token ids per utterance. Every utterance of the batch is searched at once:
the Python loops run over search steps, never over utterances, and no result depends
on padding (tests decode each utterance alone and in a batch).

- `transducer_greedy_search`: label-looping greedy search (the loop order of NeMo's
  fast decoders). The outer loop emits one label per utterance; the inner loop moves
  every utterance that predicts blank to its next frame, calling only the joint. The
  predictor runs once per emitted label. RNN-T advances one frame on blank, and is
  capped at `max_symbols` labels on one frame. TDT advances by the predicted duration
  (a label with duration 0 stays on its frame, up to `max_symbols`). It takes the most
  probable (token, duration) pair, where blank may only take durations > 0, as in the loss.
- `transducer_beam_search`: beam search, batched, `beam` hypotheses per utterance, one
  label per decision. A label stays on its frame (RNN-T, or TDT duration 0) up to
  `max_symbols` labels on a frame; blank and TDT durations > 0 move on. Hypotheses sit
  on different frames: each step expands those on the earliest frame while the others
  wait in the beam, so every path into the same (labels, frame) meets the others there
  and they are merged (probabilities added). max_symbols=1 is icefall's "modified beam
  search". With beam=1 it makes the same choices as greedy search with the same
  max_symbols; with a beam too wide to prune it returns the most probable label sequence
  under these rules (tests check both). Hypotheses that a TDT jump left past the end of
  the utterance are merged when the search ends.

Both searches resume (streaming): `transducer_greedy_init` / `_continue` and
`transducer_beam_init` / `_continue` (+ `BeamState.best()`) take the encoder frames
chunk by chunk and end with exactly the result of one call over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch

from .confidence import entropy_confidence
from .fusion import Fusion
from .search import Hypothesis

_HASH_MOD = 2_147_483_647  # label-sequence hashes for merging (mod a prime < 2^31: no int64 overflow)
_HASH_MUL = 1_000_003


def _frames(enc_p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """enc_p[B, T, J] at frames t[B] (clamped into range) -> [B, J]."""
    idx = t.clamp(0, enc_p.shape[1] - 1)
    return enc_p[torch.arange(enc_p.shape[0], device=enc_p.device), idx]


def _split(
    head,
    logits: torch.Tensor,
    durations: torch.Tensor | None,
    not_blank_dur: torch.Tensor | None = None,
    tok_blank: torch.Tensor | None = None,
):
    """Joint logits [..., V(+D)] -> (best label [...], frames it advances [...], the decision's
    log-prob [...], its confidence [...] (TDT: of the token's distribution)) for greedy search.

    For TDT, not_blank_dur = (durations == 0) and tok_blank = one-hot of blank over V, made
    once per search rather than at every step.
    """
    v = head.vocab_size
    tok = logits[..., :v].float()
    if durations is None:  # RNN-T: blank moves one frame, a label stays
        best, label = tok.max(-1)
        return label, (label == head.blank).long(), best - tok.logsumexp(-1), entropy_confidence(tok.log_softmax(-1))
    # TDT: the most probable (token, duration) decision; blank only with durations > 0,
    # the only ones its loss trains (so beam=1 makes the same decision). Token and duration
    # are normalized separately, so both sides of the comparison carry the same two
    # log-normalizers: comparing raw logits makes the same decision without a log_softmax.
    dur = logits[..., v:].float()
    best_dur, dur_idx = dur.max(-1)
    blank_dur, blank_idx = dur.masked_fill(not_blank_dur, float("-inf")).max(-1)
    best_lab, lab = tok.masked_fill(tok_blank, float("-inf")).max(-1)
    blank_total = tok[..., head.blank] + blank_dur
    is_blank = blank_total >= best_lab + best_dur
    # the score needs the normalizers the decision could skip
    tok_norm = tok.logsumexp(-1)
    lp = torch.where(is_blank, blank_total, best_lab + best_dur) - tok_norm - dur.logsumexp(-1)
    label = torch.where(is_blank, head.blank, lab)
    conf = entropy_confidence(tok - tok_norm[..., None])  # of the token's distribution, not its duration's
    return label, torch.where(is_blank, durations[blank_idx], durations[dur_idx]), lp, conf


def _attend(
    head, pred_state: Any, pred_p: torch.Tensor, enc: torch.Tensor, enc_lens: torch.Tensor
) -> tuple[Any, torch.Tensor]:
    """The predictor state and projected outputs [N, J] once the predictor has seen this call's
    encoder frames: unchanged unless its outputs depend on them (TAED: every hypothesis's
    decoder state is recomputed against the frames up to the end of this chunk)."""
    pred_state, out = head.predictor.attend(pred_state, enc, enc_lens)
    return pred_state, (pred_p if out is None else head.joint.project_pred(out))


@dataclass
class GreedyState:
    """Where a greedy search stands between chunks of encoder frames (streaming)."""

    pred_state: Any  # the predictor's state after the last label
    pred_p: torch.Tensor  # [B, J] projected predictor output for the last label
    t: torch.Tensor  # [B] next frame to read, counted from the start of the next chunk
    on_frame: torch.Tensor  # [B] labels emitted on that frame so far
    tokens: list[list[int]]  # labels emitted so far per utterance
    score: torch.Tensor  # [B] log-probability of the decisions taken so far (blanks and labels)
    frames: list[list[int]]  # per label: the frame it was emitted on (from the utterance's start)
    durations: list[list[int]]  # per label: TDT its duration, RNN-T 1
    confidence: list[list[float]]  # per label: its probability
    offset: torch.Tensor  # [B] frames before the next chunk

    def hypotheses(self) -> list[Hypothesis]:
        return [
            Hypothesis(list(t), float(s), [], list(f), list(d), list(c))
            for t, s, f, d, c in zip(self.tokens, self.score.tolist(), self.frames, self.durations, self.confidence)
        ]


@torch.no_grad()
def transducer_greedy_init(head, batch_size: int, device: torch.device | str = "cpu") -> GreedyState:
    """The state before any frame: the predictor has seen only the start (blank) symbol."""
    pred = head.predictor
    state = pred.init_state(batch_size, device)
    out, state = pred(torch.full((batch_size, 1), head.blank, dtype=torch.long, device=device), state)
    zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
    return GreedyState(
        state,
        head.joint.project_pred(out[:, 0]),
        zeros,
        zeros.clone(),
        [[] for _ in range(batch_size)],
        torch.zeros(batch_size, device=device),
        [[] for _ in range(batch_size)],
        [[] for _ in range(batch_size)],
        [[] for _ in range(batch_size)],
        zeros.clone(),
    )


@torch.no_grad()
def transducer_greedy_search(
    head, enc: torch.Tensor, enc_lens: torch.Tensor, max_symbols: int | None = None
) -> list[list[int]]:
    """Label-looping greedy search for an RNN-T or TDT head (TDT: the joint predicts head.durations).

    Args:
        head: TransducerHead. enc: [B, T, D_enc]. enc_lens: [B].
        max_symbols: most labels on one frame (default head.max_symbols; capped by head.symbols_per_frame).
    Returns: token ids per utterance.
    """
    state = transducer_greedy_init(head, enc.shape[0], enc.device)
    return transducer_greedy_continue(head, enc, enc_lens, state, max_symbols).tokens


@torch.no_grad()
def transducer_greedy_continue(
    head, enc: torch.Tensor, enc_lens: torch.Tensor, state: GreedyState, max_symbols: int | None = None
) -> GreedyState:
    """Run the greedy search over the next encoder frames enc[B, T, D] (enc_lens[B] valid).

    The search stops when every utterance has read past its frames; a TDT jump past the
    end carries into the next chunk (state.t). Feeding an utterance's frames in chunks
    gives exactly the labels of one call over all of them.
    """
    max_symbols = head.symbols_per_frame(max_symbols)
    device = enc.device
    durations = torch.tensor(head.durations, device=device) if head.durations else None
    masks = (
        (durations == 0, torch.arange(head.vocab_size, device=device) == head.blank)
        if durations is not None
        else (None, None)
    )
    enc_p = head.joint.project_enc(enc)
    pred = head.predictor
    pred_state, pred_p = _attend(head, state.pred_state, state.pred_p, enc, enc_lens)  # [B, J]
    lens = enc_lens.to(device)
    t, on_frame = state.t.clone(), state.on_frame.clone()  # on_frame: labels emitted on the current frame
    active = t < lens
    score = state.score.clone()
    steps: list[tuple[torch.Tensor, ...]] = []  # per emission step: (label or -1, frame, duration, confidence)
    while bool(active.any()):
        label, adv, lp, conf = _split(head, head.joint.combine(_frames(enc_p, t), pred_p), durations, *masks)
        # inner loop: utterances on blank move on (joint only) until each has a label or ends
        need = active & (label == head.blank)
        while bool(need.any()):
            score = score + lp.masked_fill(~need, 0.0)
            t = t + need * adv
            on_frame = on_frame.masked_fill(need, 0)
            active = t < lens
            need = need & active
            idx = need.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            l_i, a_i, lp_i, c_i = _split(head, head.joint.combine(enc_p[idx, t[idx]], pred_p[idx]), durations, *masks)
            label[idx], adv[idx], lp[idx], conf[idx] = l_i, a_i, lp_i, c_i
            need[idx] = l_i == head.blank
        emit = active  # each active utterance now holds a label at frame t
        if not bool(emit.any()):
            break
        span = adv if durations is not None else torch.ones_like(adv)
        steps.append((torch.where(emit, label, -1), state.offset + t, span, conf))
        score = score + lp.masked_fill(~emit, 0.0)
        on_frame = torch.where(emit & (adv == 0), on_frame + 1, on_frame.masked_fill(emit & (adv > 0), 0))
        force = emit & (on_frame >= max_symbols)  # cap reached: move to the next frame
        t = t + emit * adv + force
        on_frame = on_frame.masked_fill(force, 0)
        new_out, new_state = pred(label.masked_fill(~emit, head.blank)[:, None], pred_state)
        pred_state = pred.merge_state(emit, new_state, pred_state)
        pred_p = torch.where(emit[:, None], head.joint.project_pred(new_out[:, 0]), pred_p)
        active = t < lens
    # the lists grow in place (a long stream must not copy them at every chunk): the state
    # passed in is consumed
    if steps:
        lab, frm, dur, lpl = (torch.stack(x, dim=1).tolist() for x in zip(*steps))  # each [B, steps]
        for i in range(len(lab)):
            for tok, f, d, c in zip(lab[i], frm[i], dur[i], lpl[i]):
                if tok >= 0:
                    state.tokens[i].append(tok)
                    state.frames[i].append(f)
                    state.durations[i].append(d)
                    state.confidence[i].append(c)
    return GreedyState(
        pred_state,
        pred_p,
        (t - lens).clamp(min=0),
        on_frame,
        state.tokens,
        score,
        state.frames,
        state.durations,
        state.confidence,
        state.offset + lens,
    )


@dataclass
class BeamState:
    """Where a beam search stands between chunks of encoder frames (streaming).

    K = beam slots per utterance; an empty slot has score -inf.
    """

    score: torch.Tensor  # [B, K] log probability of each hypothesis (-inf: empty slot)
    t: torch.Tensor  # [B, K] next frame to read, counted from the start of the next chunk
    on_frame: torch.Tensor  # [B, K] labels emitted on that frame so far
    hsh: torch.Tensor  # [B, K] hash of the label sequence (merging)
    pred_state: Any  # the predictor's state per slot (batch B*K)
    pred_p: torch.Tensor  # [B*K, J] projected predictor output for each slot's last label
    hyps: list[list[Trace]]  # [B][K] labels of each slot, with their frames, durations, confidences
    offset: torch.Tensor  # [B] frames before the next chunk
    fstate: torch.Tensor | None = None  # [B, K, P] each slot's fusion state (LM, hotwords), if fused

    def best(self) -> list[list[int]]:
        """The most probable hypothesis per utterance (the partial result while streaming)."""
        top = self.score.argmax(dim=1).tolist()
        return [list(self.hyps[i][k].tokens) for i, k in enumerate(top)]

    def hypotheses(self) -> list[Hypothesis]:
        """Per utterance the best hypothesis with its log-probability, and the n-best (live slots)."""
        out = []
        for i, row in enumerate(self.score.tolist()):
            ranked = sorted(
                (self.hyps[i][k].hypothesis(s) for k, s in enumerate(row) if s > float("-inf")), key=lambda h: -h.score
            )
            out.append(replace(ranked[0], nbest=ranked))
        return out


class Trace(NamedTuple):
    """A beam slot's labels and, per label, its frame, duration and confidence (Hypothesis fields)."""

    tokens: list[int]
    frames: list[int]
    durations: list[int]
    confidence: list[float]

    def hypothesis(self, score: float) -> Hypothesis:
        return Hypothesis(list(self.tokens), score, [], list(self.frames), list(self.durations), list(self.confidence))


@torch.no_grad()
def transducer_beam_init(
    head, batch_size: int, beam: int = 4, device: torch.device | str = "cpu", fusion: Fusion | None = None
) -> BeamState:
    """The state before any frame: one live hypothesis per utterance (slot 0), no labels; with
    `fusion` (an LM and/or hotwords), each slot's fusion state before any token."""
    if beam < 1:
        raise ValueError("beam must be >= 1")
    b, k = batch_size, beam
    score = torch.full((b, k), float("-inf"), device=device)
    score[:, 0] = 0.0
    zeros = torch.zeros(b, k, dtype=torch.long, device=device)
    pred = head.predictor
    state = pred.init_state(b * k, device)
    out, state = pred(torch.full((b * k, 1), head.blank, dtype=torch.long, device=device), state)
    return BeamState(
        score,
        zeros,
        zeros.clone(),
        zeros.clone(),
        state,
        head.joint.project_pred(out[:, 0]),
        [[Trace([], [], [], []) for _ in range(k)] for _ in range(b)],
        torch.zeros(b, dtype=torch.long, device=device),
        None if fusion is None else fusion.initial_states(b * k, device).view(b, k, -1),
    )


@torch.no_grad()
def transducer_beam_search(
    head, enc: torch.Tensor, enc_lens: torch.Tensor, beam: int = 4, max_symbols: int | None = None
) -> list[list[int]]:
    """Batched beam search for an RNN-T or TDT head: one label per decision.

    Args:
        head: TransducerHead. enc: [B, T, D_enc]. enc_lens: [B]. beam: hypotheses per utterance.
        max_symbols: most labels on one frame (default head.max_symbols; capped by
            head.symbols_per_frame); 1 is icefall's
            modified beam search, which cannot emit two labels on one frame.
    Returns: the best token ids per utterance.
    """
    state = transducer_beam_init(head, enc.shape[0], beam, enc.device)
    final = torch.ones(enc.shape[0], dtype=torch.bool, device=enc.device)
    return transducer_beam_continue(head, enc, enc_lens, state, max_symbols, final).best()


@torch.no_grad()
def transducer_beam_continue(
    head,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    state: BeamState,
    max_symbols: int | None = None,
    final: torch.Tensor | None = None,
    fusion: Fusion | None = None,
    ilm_weight: float = 0.0,
) -> BeamState:
    """Run the beam search over the next encoder frames enc[B, T, D] (enc_lens[B] valid).

    The search stops when every hypothesis has read past its utterance's frames; TDT jumps
    past the end carry into the next chunk (state.t). For utterances whose frames end with
    this chunk (final[B], default none), hypotheses that differ only in where they jumped past
    the end are merged last. Feeding frames in chunks makes exactly the decisions of one call
    over all of them: each step depends only on the state, and hypotheses beyond the chunk
    are never on an utterance's earliest frame while others are inside it.

    fusion (the state must come from transducer_beam_init with the same fusion): every label
    candidate's score gains the fused score of its token (lm_weight * ln p_LM, hotword
    bonuses) and, with ilm_weight > 0, loses ilm_weight * ln p_ILM(token): the internal LM,
    the joint's token distribution with the encoder's contribution removed (ILME) and blank
    excluded. A hypothesis that ends (final) gains the fusion's end score (ln p_LM(</s>), the
    credit of an unfinished hotword taken back) before the last merge.
    """
    max_symbols = head.symbols_per_frame(max_symbols)
    b, device = enc.shape[0], enc.device
    k, v = state.score.shape[1], head.vocab_size
    neg = float("-inf")
    tdt = bool(head.durations)
    # raw[v, j]: frames decision (label v, duration j) moves; 0 = stay on the frame (capped below)
    if tdt:
        durations = torch.tensor(head.durations, device=device)
        raw = durations[None, :].expand(v, -1).clone()
    else:
        raw = torch.zeros(v, 1, dtype=torch.long, device=device)
        raw[head.blank] = 1
    d = raw.shape[1]
    enc_p = head.joint.project_enc(enc)
    pred = head.predictor
    lens = enc_lens.to(device)[:, None]
    score, t, on_frame, hsh = state.score, state.t, state.on_frame, state.hsh
    pred_state, pred_p = _attend(head, state.pred_state, state.pred_p, enc, enc_lens)
    fstate = state.fstate
    if (fusion is None) != (fstate is None):
        raise ValueError("fuse with the fusion the beam state was made with (transducer_beam_init(..., fusion))")
    parents: list[torch.Tensor] = []
    steps: list[tuple[torch.Tensor, ...]] = []  # per step: (label or -1, frame, duration, confidence)
    arange_b = torch.arange(b, device=device)[:, None]
    slots = torch.arange(k, device=device)
    while True:
        alive = score > neg
        running = alive & (t < lens)
        if not bool(running.any()):
            break
        # expand only the hypotheses on each utterance's earliest frame; later ones wait, so
        # every path into a (labels, frame) state meets the others there and is merged
        t_min = t.masked_fill(~running, torch.iinfo(t.dtype).max).min(dim=1, keepdim=True).values
        running &= t == t_min
        frames = enc_p[arange_b, t.clamp(max=enc_p.shape[1] - 1)]  # [B, K, J]
        logits = head.joint.combine(frames, pred_p.view(b, k, -1))
        lp_tok = logits[..., :v].log_softmax(-1)  # [B, K, V]
        if tdt:
            lp_dur = logits[..., v:].log_softmax(-1)  # [B, K, D]
            cand = lp_tok[..., None] + lp_dur[:, :, None, :]  # [B, K, V, D]
            cand[:, :, head.blank, :] = cand[:, :, head.blank, :].masked_fill(durations == 0, neg)  # as in the loss
        else:
            cand = lp_tok[..., None]
        if fusion is not None:
            f_delta, f_next = fusion.score_all(fstate.view(b * k, -1))  # [B*K, V], [B*K, V, P]
            bonus = f_delta.view(b, k, v)  # blank: 0
            if ilm_weight > 0:
                bonus = bonus - ilm_weight * _internal_lm(head, pred_p).view(b, k, v)
            cand = cand + bonus[..., None]
        cand = (score[..., None, None] + cand).masked_fill(~running[..., None, None], neg)
        carry = score.masked_fill(running, neg)  # waiting and finished hypotheses compete unchanged
        pool = torch.cat([cand.reshape(b, k * v * d), carry], dim=1)
        top, idx = pool.topk(k, dim=1)  # [B, K]
        is_carry = idx >= k * v * d
        parent = torch.where(is_carry, idx - k * v * d, idx // (v * d))
        label = torch.where(is_carry, head.blank, (idx // d) % v)
        moves = raw[label, idx % d]
        on_par = torch.gather(on_frame, 1, parent)
        t_par = torch.gather(t, 1, parent)
        conf = torch.gather(entropy_confidence(lp_tok), 1, parent)
        span = moves if tdt else torch.ones_like(moves)
        adv = torch.where(moves > 0, moves, (on_par + 1 >= max_symbols).long())  # the cap forces a move
        adv = adv.masked_fill(is_carry, 0)
        emit = (label != head.blank) & ~is_carry
        on_frame = torch.where(is_carry, on_par, torch.where(adv == 0, on_par + 1, 0))
        # no clamp at the end: a TDT jump past this chunk lands in the next one
        t = t_par + adv
        hsh = torch.gather(hsh, 1, parent)
        hsh = torch.where(emit, (hsh * _HASH_MUL + label + 1) % _HASH_MOD, hsh)
        # merge hypotheses with equal labels on equal frames (and equal counts of labels on that
        # frame, so their futures are equal too): the first keeps the summed probability
        alive = top > neg
        same = (hsh[:, :, None] == hsh[:, None, :]) & (t[:, :, None] == t[:, None, :])
        same &= on_frame[:, :, None] == on_frame[:, None, :]
        score = _merge(top, same & alive[:, :, None] & alive[:, None, :], slots)
        parents.append(parent)
        steps.append((torch.where(emit, label, -1), state.offset[:, None] + t_par, span, conf))
        # predictor: the parent's state, advanced by the new label where one was emitted
        flat = (arange_b * k + parent).reshape(-1)
        pred_state = pred.select_state(pred_state, flat)
        pred_p = pred_p[flat]
        emit_f = emit.reshape(-1)
        if fusion is not None:
            fstate = torch.where(emit_f[:, None], f_next[flat, label.reshape(-1)], fstate.view(b * k, -1)[flat])
            fstate = fstate.view(b, k, -1)
        if bool(emit_f.any()):
            new_out, new_state = pred(label.reshape(-1, 1), pred_state)
            pred_state = pred.merge_state(emit_f, new_state, pred_state)
            pred_p = torch.where(emit_f[:, None], head.joint.project_pred(new_out[:, 0]), pred_p)
    if final is not None and bool(final.any()):
        # utterances that end here: every hypothesis is finished, wherever a jump left it
        fin = final.to(device)[:, None] & (score > neg)
        if fusion is not None:
            ends = [fusion.final_score(tuple(s)) for s in fstate.view(b * k, -1).tolist()]
            score = torch.where(fin, score + torch.tensor(ends, device=device).view(b, k), score)
        same = (hsh[:, :, None] == hsh[:, None, :]) & fin[:, :, None] & fin[:, None, :]
        score = torch.where(fin, _merge(score, same, slots), score)
        t, on_frame = torch.where(fin, lens, t), on_frame.masked_fill(fin, 0)
    hyps = _extend(state.hyps, parents, steps)
    return BeamState(score, t - lens, on_frame, hsh, pred_state, pred_p, hyps, state.offset + lens[:, 0], fstate)


def _internal_lm(head, pred_p: torch.Tensor) -> torch.Tensor:
    """ln p_ILM(token | labels so far) [N, V] from each hypothesis's projected predictor output
    pred_p[N, J]: the joint's token distribution with no encoder contribution, blank excluded
    (its column is 0: blank is no token of the LM)."""
    logits = head.joint.combine(torch.zeros_like(pred_p), pred_p)[..., : head.vocab_size].float()
    logits[..., head.blank] = float("-inf")
    lp = logits.log_softmax(-1)
    lp[..., head.blank] = 0.0
    return lp


def _merge(score: torch.Tensor, same: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """score[B, K] with same[B, K, K] (hypotheses that are one state): the first slot of each
    group keeps the group's summed probability, the others become empty (-inf)."""
    first = same.int().argmax(dim=1)  # [B, K]: first slot equal to slot j (itself if none before)
    owner = first[:, None, :] == slots[None, :, None]  # [B, i, j]: j merges into i
    merged = torch.logsumexp(score[:, None, :].masked_fill(~owner, float("-inf")), dim=-1)
    keep = (score > float("-inf")) & (first == slots[None, :])
    return merged.masked_fill(~keep, float("-inf"))


def _extend(hyps: list[list[Trace]], parents: list[torch.Tensor], steps: list[tuple[torch.Tensor, ...]]):
    """Each slot's trace after the steps of one call: its ancestor slot's trace at the start of
    the call plus the labels emitted on the way, with their frames, durations and confidences
    (backtracking the parent pointers, batched). steps[i] = (label or -1, frame, duration,
    confidence), each [B, K]."""
    if not parents:
        return hyps
    b, k = parents[0].shape
    slot = torch.arange(k, device=parents[0].device).expand(b, k)
    picked = []
    for par, step in zip(reversed(parents), reversed(steps)):
        picked.append(torch.stack([x.gather(1, slot).to(torch.float64) for x in step], dim=-1))  # [B, K, 4]
        slot = torch.gather(par, 1, slot)
    origin = slot.tolist()
    seq = torch.stack(picked[::-1], dim=2).tolist()  # [B, K, steps, 4]
    out = []
    for i in range(b):
        row = []
        for j in range(k):
            old = hyps[i][origin[i][j]]
            new = [x for x in seq[i][j] if x[0] >= 0]
            row.append(
                Trace(
                    old.tokens + [int(x[0]) for x in new],
                    old.frames + [int(x[1]) for x in new],
                    old.durations + [int(x[2]) for x in new],
                    old.confidence + [x[3] for x in new],
                )
            )
        out.append(row)
    return out


class TransducerGreedySearch:
    """The Search interface (asr.decoding.search) for a transducer head: label-looping greedy search.

    max_symbols: most labels on one frame (None: the head's)."""

    def __init__(self, head, max_symbols: int | None = None):
        self.head, self.max_symbols = head, max_symbols

    def init(self, batch_size: int, device: torch.device | str) -> GreedyState:
        return transducer_greedy_init(self.head, batch_size, device)

    def advance(
        self, state: GreedyState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor
    ) -> GreedyState:
        return transducer_greedy_continue(self.head, enc, enc_lens, state, self.max_symbols)

    def hypotheses(self, state: GreedyState) -> list[Hypothesis]:
        return state.hypotheses()


class TransducerBeamSearch:
    """The Search interface for a transducer head: batched beam search with `beam` hypotheses,
    with an LM / hotwords fused and the internal LM subtracted (ilm_weight) if given."""

    def __init__(
        self, head, beam: int, max_symbols: int | None = None, fusion: Fusion | None = None, ilm_weight: float = 0.0
    ):
        self.head, self.beam, self.max_symbols = head, beam, max_symbols
        self.fusion, self.ilm_weight = fusion, ilm_weight

    def init(self, batch_size: int, device: torch.device | str) -> BeamState:
        return transducer_beam_init(self.head, batch_size, self.beam, device, self.fusion)

    def advance(self, state: BeamState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor) -> BeamState:
        return transducer_beam_continue(
            self.head, enc, enc_lens, state, self.max_symbols, final, self.fusion, self.ilm_weight
        )

    def hypotheses(self, state: BeamState) -> list[Hypothesis]:
        return state.hypotheses()

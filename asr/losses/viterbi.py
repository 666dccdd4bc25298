"""Viterbi (max-approximation) training of RNN-T and TDT: the loss of one path through the lattice.

Full-sum training maximizes log P(y | x), the log-sum over every alignment. Viterbi training
(Zeyer et al., "A New Training Pipeline for an Improved Neural Transducer") maximizes the
log-prob of one alignment instead: the model's own best path, found by the loss lattice's
recursion in the max semiring (the compiled ops `rnnt_viterbi` / `tdt_viterbi`, which also
backtrack it), or a fixed external alignment (e.g. `forced_align` of a CTC head). The loss is
-(sum of the log-probs of the path's arcs). It reads only the rows the path leaves, so its
gradient is the path's one-hot arc indicator through those rows' log-softmax (softmax minus
one-hot on each such row, zero on every other row).

Memory: the search needs every row's log-softmax normalizer (computed chunk by chunk: no
N*V temporary) and keeps nothing per row; the loss gathers the P <= B*(T+U) path rows [P, C]
and lets autograd do the rest, so the only N*V tensor is the logits' gradient that autograd
hands back anyway. A caller that owns the joint does better still: search on logits computed
without grad (on the whole lattice, freed after the search), then run the joint with grad on
the path's nodes only (`path_log_probs`; the transducer head does this), so the joint's
activations on the whole lattice are never kept for backward and its gradient there never exists.

External alignments give the frame where each target token is emitted, [B, U] int
(non-decreasing, in [0, T_b)), checked by `alignment_frames`; from `forced_align`'s `Alignment`,
`Alignment.token_frames` gives them (each token at its first frame). They map onto a
transducer path as follows:
- RNN-T: at frame t the tokens aligned to t are emitted (in order), then blank moves to t + 1.
  Every RNN-T path is one such frame sequence, so the map is one to one.
- TDT: every token takes the largest allowed duration that does not pass the next token's
  frame (for the last token: the last frame, T - 1, since a token lands on a real frame) and
  leaves a rest of the gap that blank durations (> 0) sum to exactly; blanks then fill what
  remains of each gap (before the first token, between tokens, and up to T at the end), each
  the largest allowed blank duration that leaves a rest the others can still fill. Tokens on
  one frame need duration 0; with duration 1 every gap can be filled. Only frame sequences
  that no TDT path has (no choice of durations represents them) are a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .._ext import ops
from .lattice import check_inputs, finish_loss, row_layout, row_logsumexp
from .precision import float32_loss
from .tdt import check_durations, check_tdt_options, tdt_num_tokens


@dataclass(frozen=True)
class TransducerPath:
    """One path through each utterance's transducer lattice, as a flat list of its P arcs.

    Arcs are grouped by utterance, each utterance's in path order. An arc leaves node (t, u)
    (frame t, u tokens emitted so far) and emits `token`: blank (RNN-T: to frame t + 1; TDT: to
    t + duration) or the target y_{u+1} (to label position u + 1).
    """

    utt: torch.Tensor  # [P] int64: the utterance of each arc
    t: torch.Tensor  # [P] int64: the frame of its source node
    u: torch.Tensor  # [P] int64: the label position of its source node
    token: torch.Tensor  # [P] int64: the token it emits, blank or y_{u+1}
    duration: torch.Tensor | None  # [P] int64: TDT only, the index in `durations` of its frame advance
    exists: torch.Tensor  # [B] bool: the utterance has a path (False: its loss is +inf)
    score: torch.Tensor | None  # [B] float64: the search's best log-prob (-inf: none); None for external paths
    blank: int  # the blank id
    durations: tuple[int, ...] = ()  # TDT's durations (the joint's duration outputs); () for RNN-T

    def token_frames(self, max_u: int) -> torch.Tensor:
        """[B, max_u] int64: the frame at which each target token is emitted, -1 past the target."""
        frames = torch.full((self.exists.shape[0], max_u), -1, dtype=torch.int64, device=self.t.device)
        label = self.token != self.blank
        frames[self.utt[label], self.u[label]] = self.t[label]
        return frames


def _as_int64(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [x.to(torch.int64).contiguous() for x in tensors]


def _max_u(target_lengths: torch.Tensor) -> int:
    return int(target_lengths.max()) if target_lengths.numel() else 0


def _from_arcs(score: torch.Tensor, arcs: torch.Tensor, blank: int, durations: tuple[int, ...]) -> TransducerPath:
    """A TransducerPath from the Viterbi ops' padded arcs [B, L, 3 or 4] (-1 past each path)."""
    utt, k = (arcs[..., 0] >= 0).nonzero(as_tuple=True)  # row-major: by utterance, then path order
    sel = arcs[utt, k]
    return TransducerPath(
        utt=utt,
        t=sel[:, 0],
        u=sel[:, 1],
        token=sel[:, 2],
        duration=sel[:, 3] if durations else None,
        exists=torch.isfinite(score),
        score=score,
        blank=blank,
        durations=durations,
    )


@float32_loss
@torch.no_grad()
def rnnt_best_path(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> TransducerPath:
    """The most probable RNN-T alignment of each transcript (the compiled max-semiring recursion).

    Args:
        logits: raw joint outputs, padded [B, T, U+1, V] or packed [sum_b T_b*(U_b+1), V].
        targets: [B, U] int; logit_lengths, target_lengths: [B] int. blank: the blank id.
    Returns: the best path of each utterance (T_b blanks and U_b labels), with its log-prob as
    `score`; utterances with T_b = 0 have none. Ties go to the blank while backtracking from the
    end: among equally good paths, the last token is emitted as early as possible, then the
    one before it, and so on.
    """
    targets, logit_lengths, target_lengths = check_inputs(
        logits, targets, logit_lengths, target_lengths, blank, logits.shape[-1]
    )
    max_u = _max_u(target_lengths)
    rows, offsets, strides, max_t = row_layout(logits.detach(), logit_lengths, target_lengths, max_u)
    rows = rows.contiguous()
    score, arcs = ops().rnnt_viterbi(
        rows,
        row_logsumexp(rows),
        targets,
        logit_lengths,
        target_lengths,
        offsets,
        strides,
        max_t=max_t,
        max_u=max_u,
        blank=blank,
    )
    return _from_arcs(score, arcs, blank, ())


@float32_loss
@torch.no_grad()
def tdt_best_path(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
    sigma: float = 0.0,
) -> TransducerPath:
    """The most probable TDT alignment of each transcript (tokens with durations).

    Args:
        logits: [B, T, U+1, V+D] or packed [sum_b T_b*(U_b+1), V+D]: V token logits, then
            D = len(durations) duration logits (as `tdt_loss`).
        targets: [B, U]; logit_lengths, target_lengths: [B]. sigma: as `tdt_loss`.
    Returns: the best path (its arcs carry the index of their duration), its log-prob (with
    sigma) as `score`; none where the frames are too few. Ties: backtracking from the end,
    the first best arc into a node wins, blank arcs before label arcs, each in the order of
    `durations`.
    """
    durs, sigma, _ = check_tdt_options(durations, sigma)
    v = tdt_num_tokens(logits.shape[-1], len(durs))
    targets, logit_lengths, target_lengths = check_inputs(logits, targets, logit_lengths, target_lengths, blank, v)
    max_u = _max_u(target_lengths)
    rows, offsets, strides, max_t = row_layout(logits.detach(), logit_lengths, target_lengths, max_u)
    rows = rows.contiguous()
    score, arcs = ops().tdt_viterbi(
        rows,
        row_logsumexp(rows[:, :v]),
        row_logsumexp(rows[:, v:]),
        targets,
        logit_lengths,
        target_lengths,
        offsets,
        strides,
        torch.tensor(durs, dtype=torch.int64, device=rows.device),
        num_tokens=v,
        max_t=max_t,
        max_u=max_u,
        blank=blank,
        sigma=sigma,
    )
    return _from_arcs(score, arcs, blank, durs)


def alignment_frames(
    alignment: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """The emission frame of each target token, [B, U] int64 (-1 past target_lengths), checked.

    Args:
        alignment: token frames [B, >= U] int (non-decreasing, in [0, T_b), read up to
            target_lengths); from `forced_align` over the same frames:
            `Alignment.token_frames` (each token at its first frame, checked).
        targets: [B, U]; logit_lengths, target_lengths: [B].
    Raises: ValueError naming the utterance: a wrong shape, frames outside the utterance, or
    frames that go back.
    """
    targets, logit_lengths, target_lengths = _as_int64(targets, logit_lengths, target_lengths)
    b, max_u = targets.shape[0], _max_u(target_lengths)
    valid = torch.arange(max_u, device=targets.device)[None, :] < target_lengths[:, None]
    if alignment.dim() != 2 or alignment.shape[0] != b:
        raise ValueError(f"alignment must be token frames [B={b}, U], got shape {tuple(alignment.shape)}")
    if alignment.shape[1] < max_u:
        raise ValueError(
            f"alignment has {alignment.shape[1]} token frames per utterance, but target_lengths needs {max_u}"
        )
    frames = alignment[:, :max_u].to(torch.int64).masked_fill(~valid, -1)
    bad = valid & ((frames < 0) | (frames >= logit_lengths[:, None]))
    if bool(bad.any()):
        i, u = (int(x) for x in bad.nonzero()[0])
        raise ValueError(
            f"alignment of utterance {i}: token {u} at frame {int(frames[i, u])}, "
            f"outside its {int(logit_lengths[i])} frames"
        )
    back = valid[:, 1:] & (frames[:, 1:] < frames[:, :-1])
    if bool(back.any()):
        i, u = (int(x) for x in back.nonzero()[0])
        raise ValueError(
            f"alignment of utterance {i} is not monotonic: token {u + 1} at frame {int(frames[i, u + 1])} "
            f"after token {u} at frame {int(frames[i, u])}"
        )
    return frames


def rnnt_alignment_path(
    alignment: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> TransducerPath:
    """The RNN-T path of an external alignment: the tokens aligned to frame t are emitted at t,
    then blank (see the module docstring). Arguments as `alignment_frames`."""
    targets, logit_lengths, target_lengths = _as_int64(targets, logit_lengths, target_lengths)
    frames = alignment_frames(alignment, targets, logit_lengths, target_lengths)
    b, max_u = frames.shape
    dev = frames.device
    max_t = int(logit_lengths.max()) if b else 0
    valid = frames >= 0
    lab_utt, lab_u = valid.nonzero(as_tuple=True)
    # blank at frame t leaves (t, number of tokens aligned to frames <= t)
    grid = torch.arange(max_t, device=dev).expand(b, max_t).contiguous()
    if max_u:
        count = torch.searchsorted(frames.masked_fill(~valid, max_t).contiguous(), grid, right=True)
    else:
        count = torch.zeros_like(grid)
    blank_utt, blank_t = (grid < logit_lengths[:, None]).nonzero(as_tuple=True)
    utt = torch.cat([lab_utt, blank_utt])
    t = torch.cat([frames[lab_utt, lab_u], blank_t])
    u = torch.cat([lab_u, count[blank_utt, blank_t]])
    token = torch.cat([targets[lab_utt, lab_u], torch.full_like(blank_t, blank)])
    # a path visits each node once and moves forward in t and u: (utterance, t, u) order is path order
    order = torch.argsort((utt * (max_t + 1) + t) * (max_u + 1) + u)
    return TransducerPath(
        utt=utt[order],
        t=t[order],
        u=u[order],
        token=token[order],
        duration=None,
        exists=logit_lengths > 0,
        score=None,
        blank=blank,
    )


def tdt_alignment_path(
    alignment: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
) -> TransducerPath:
    """The TDT path of an external alignment: each token takes the largest duration that does not
    pass the next token's frame and leaves a rest that blanks fill, blanks fill the rest of each
    gap (the module docstring has the rule). Arguments as `alignment_frames`; ValueError where
    no choice of durations represents it."""
    durs = check_durations(durations)
    targets, logit_lengths, target_lengths = _as_int64(targets, logit_lengths, target_lengths)
    frames = alignment_frames(alignment, targets, logit_lengths, target_lengths)
    arcs: list[tuple[int, int, int, int, int]] = []  # (utterance, t, u, token, duration index)
    for b, (fr, y, n_frames) in enumerate(zip(frames.tolist(), targets.tolist(), logit_lengths.tolist())):
        if n_frames > 0:
            arcs += [(b, *arc) for arc in _tdt_arcs([f for f in fr if f >= 0], y, n_frames, durs, blank, b)]
    a = torch.tensor(arcs, dtype=torch.int64, device=frames.device).reshape(-1, 5)
    return TransducerPath(
        utt=a[:, 0],
        t=a[:, 1],
        u=a[:, 2],
        token=a[:, 3],
        duration=a[:, 4],
        exists=logit_lengths > 0,
        score=None,
        blank=blank,
        durations=durs,
    )


def _tdt_arcs(
    frames: list[int], targets: list[int], n_frames: int, durs: tuple[int, ...], blank: int, utt: int
) -> list[tuple[int, int, int, int]]:
    """The TDT arcs (t, u, token, duration index) of one utterance's token frames (the module
    docstring's rule); ValueError naming utterance `utt` where the durations cannot represent them.

    fills[r]: some blank durations sum to r frames (a DP over r = 0..T). Each choice takes the
    largest duration whose remaining frames the blanks can still fill, so a path is found
    whenever one exists, and where the largest duration always fits it is the greedy choice.
    """
    index = {d: i for i, d in enumerate(durs)}
    by_size = sorted(durs, reverse=True)
    blank_durs = [d for d in by_size if d > 0]
    fills = [True] + [False] * n_frames
    for r in range(1, n_frames + 1):
        fills[r] = any(d <= r and fills[r - d] for d in blank_durs)

    def fail(what: str) -> ValueError:
        return ValueError(f"alignment of utterance {utt}: {what} (durations {list(durs)})")

    arcs: list[tuple[int, int, int, int]] = []

    def fill_blanks(t: int, end: int, u: int) -> None:
        if not fills[end - t]:
            raise fail(f"no blank durations sum to the {end - t} frames from frame {t} to {end}")
        while t < end:
            d = next(d for d in blank_durs if d <= end - t and fills[end - t - d])
            arcs.append((t, u, blank, index[d]))
            t += d

    t = 0
    for u, f in enumerate(frames):
        fill_blanks(t, f, u)
        last = u + 1 == len(frames)
        end = n_frames if last else frames[u + 1]  # the blanks after it fill up to `end`
        limit = n_frames - 1 - f if last else end - f  # a token lands on a real frame
        d = next((d for d in by_size if d <= limit and fills[end - f - d]), None)
        if d is None:
            if min(durs) > limit:
                raise fail(f"token {u} at frame {f} has no duration <= {limit}")
            raise fail(f"token {u} at frame {f}: no duration <= {limit} leaves frames to {end} that blanks fill")
        arcs.append((f, u, targets[u], index[d]))
        t = f + d
    fill_blanks(t, n_frames, len(frames))  # the last blank lands on T
    return arcs


@float32_loss
def path_log_probs(
    path_logits: torch.Tensor, path: TransducerPath, sigma: float = 0.0, num_tokens: int | None = None
) -> torch.Tensor:
    """The log-prob of each utterance's path, [B], differentiable: -inf where it has none.

    Args:
        path_logits: [P, C] raw joint outputs at the source nodes of the path's arcs (utterance
            utt, frame t, position u of each arc, in the path's order): V token logits, then
            for a TDT path D = len(path.durations) duration logits (C = V + D).
        sigma: TDT's under-normalization, subtracted from every token log-prob.
        num_tokens: V, when it is not C - D: an RNN-T path scored on TDT joint outputs (the
            token logits only, as `tdt_loss`'s omega term does).
    Only these rows enter the loss, so autograd's gradient is softmax - one-hot on them.
    The per-utterance sums accumulate in float64; the result has the logits' dtype (float32 for
    bfloat16/float16 logits, asr.losses.precision).
    """
    d = len(path.durations)
    v = path_logits.shape[-1] - d if num_tokens is None else num_tokens
    if d and v + d != path_logits.shape[-1]:
        raise ValueError(f"a TDT path needs rows of V + {d} logits, got {path_logits.shape[-1]} with V = {v}")
    tok = path_logits[:, :v].log_softmax(-1).gather(1, path.token[:, None])[:, 0]
    if d:
        dur = path_logits[:, v:].log_softmax(-1).gather(1, path.duration[:, None])[:, 0]
        tok = tok - sigma + dur
    total = torch.zeros(path.exists.shape[0], dtype=torch.float64, device=path_logits.device)
    total = total.index_add(0, path.utt, tok.to(torch.float64))
    return total.masked_fill(~path.exists, float("-inf")).to(path_logits.dtype)


def _path_rows(
    logits: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor
) -> Callable[[TransducerPath], torch.Tensor]:
    """A function giving a path's rows [P, C] of padded or packed logits (its arcs' source nodes)."""
    rows, offsets, strides, _ = row_layout(logits, logit_lengths, target_lengths, _max_u(target_lengths))
    return lambda path: rows[offsets[path.utt] + path.t * strides[path.utt] + path.u]


@torch.no_grad()
def tdt_viterbi_paths(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: tuple[int, ...],
    blank: int,
    sigma: float,
    omega: float,
    alignment: torch.Tensor | None = None,
) -> tuple[TransducerPath, TransducerPath | None]:
    """The paths of tdt_viterbi_loss (no grad): the TDT path (the best, or `alignment`'s) and,
    for omega > 0, the RNN-T path of the token logits (the best, or `alignment`'s); else None.
    Arguments as tdt_viterbi_loss, the options already checked (check_tdt_options)."""
    lengths = (logit_lengths, target_lengths)
    if alignment is None:
        path = tdt_best_path(logits, targets, *lengths, durations, blank, sigma)
    else:
        path = tdt_alignment_path(alignment, targets, *lengths, durations, blank)
    if omega == 0:
        return path, None
    if alignment is None:
        v = tdt_num_tokens(logits.shape[-1], len(durations))
        return path, rnnt_best_path(logits[..., :v], targets, *lengths, blank)
    return path, rnnt_alignment_path(alignment, targets, *lengths, blank)


def tdt_viterbi_path_loss(
    path_rows: Callable[[TransducerPath], torch.Tensor],
    path: TransducerPath,
    rnnt_path: TransducerPath | None,
    sigma: float,
    omega: float,
) -> torch.Tensor:
    """Per utterance [B]: -((1 - omega) * log P(path) + omega * log P_RNN-T(rnnt_path)), the
    mixing of tdt_loss; just -log P(path) without an rnnt_path.

    Args:
        path_rows: gives a path's joint outputs [P, V + D] (its arcs' source nodes), differentiable.
        path, rnnt_path: from tdt_viterbi_paths; rnnt_path is scored on the V token logits only.
        sigma, omega: as tdt_loss.
    """
    rows = path_rows(path)
    loss = -path_log_probs(rows, path, sigma)
    if rnnt_path is None:
        return loss
    # the token columns of the RNN-T path's rows only: no copy of the logits' token part
    rnnt = -path_log_probs(path_rows(rnnt_path), rnnt_path, num_tokens=rows.shape[-1] - len(path.durations))
    return (1 - omega) * loss + omega * rnnt


@float32_loss
def rnnt_viterbi_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    alignment: torch.Tensor | None = None,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """RNN-T loss of one alignment: the best path (Viterbi training), or a given one.

    Args:
        logits: raw joint outputs, padded [B, T, U+1, V] or packed [sum_b T_b*(U_b+1), V].
        targets: [B, U] int; logit_lengths, target_lengths: [B] int. blank: the blank id.
        alignment: None (the model's best path, `rnnt_best_path`), or the frame of each target
            token: [B, U] int, e.g. `forced_align(...).token_frames(...)` (see `alignment_frames`).
        reduction: none ([B]) | mean (over the batch) | sum.
        zero_infinity: utterances without a path (T_b = 0) give loss and gradient 0 instead
            of +inf, with a warning that counts them.
    Returns: -(sum of the path's arc log-probs); >= rnnt_loss, with equality when one path
    holds all the probability. Its gradient is the path's one-hot arcs through the log-softmax.
    """
    targets, logit_lengths, target_lengths = check_inputs(
        logits, targets, logit_lengths, target_lengths, blank, logits.shape[-1]
    )
    if alignment is None:
        path = rnnt_best_path(logits, targets, logit_lengths, target_lengths, blank)
    else:
        path = rnnt_alignment_path(alignment, targets, logit_lengths, target_lengths, blank)
    loss = -path_log_probs(_path_rows(logits, logit_lengths, target_lengths)(path), path)
    return finish_loss(loss, reduction, zero_infinity, "rnnt_viterbi_loss")


@float32_loss
def tdt_viterbi_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
    sigma: float = 0.0,
    omega: float = 0.0,
    alignment: torch.Tensor | None = None,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """TDT loss of one alignment: the best path (Viterbi training), or a given one.

    Args:
        logits, targets, logit_lengths, target_lengths, durations, blank, sigma: as `tdt_loss`.
        omega: weight of the RNN-T Viterbi loss of the token logits (its own best path, or the
            RNN-T path of `alignment`): (1 - omega) * TDT + omega * RNN-T, as `tdt_loss` mixes.
        alignment: None (the best path, `tdt_best_path`), or token frames [B, U] (as
            `rnnt_viterbi_loss`), mapped onto a TDT path by the module docstring's rule.
        reduction, zero_infinity: as `rnnt_viterbi_loss` (no path: too few frames).
    """
    durs, sigma, omega = check_tdt_options(durations, sigma, omega)
    v = tdt_num_tokens(logits.shape[-1], len(durs))
    targets, logit_lengths, target_lengths = check_inputs(logits, targets, logit_lengths, target_lengths, blank, v)
    lengths = (logit_lengths, target_lengths)
    path, rnnt_path = tdt_viterbi_paths(logits, targets, *lengths, durs, blank, sigma, omega, alignment)
    loss = tdt_viterbi_path_loss(_path_rows(logits, *lengths), path, rnnt_path, sigma, omega)
    return finish_loss(loss, reduction, zero_infinity, "tdt_viterbi_loss")

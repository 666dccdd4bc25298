"""Slow, obviously-correct pure-torch references of the compiled losses (tests only).

Plain Python loops over the lattice with torch.logsumexp on scalars, so autograd
gives the reference gradient. The lattice references take a semiring: "log" (the loss,
a log-sum over paths) or "max" (Viterbi: the best path; autograd through the max gives
the one-hot gradient of that path). The path enumerators score every alignment of tiny
lattices one by one, for brute-force checks of both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch


def _plus(terms: list[torch.Tensor], semiring: str) -> torch.Tensor:
    """The semiring sum of scalar log-scores: log-sum-exp ("log") or max ("max")."""
    if semiring == "log":
        return torch.logsumexp(torch.stack(terms), 0)
    if semiring == "max":
        return torch.stack(terms).max()
    raise ValueError(f"semiring must be log or max, not {semiring!r}")


def rnnt_loss_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    fused_log_softmax: bool = True,
    semiring: str = "log",
) -> torch.Tensor:
    """Per-utterance RNN-T loss [B] from padded logits [B, T, U+1, V]; with semiring="max", the
    Viterbi loss (of the best path)."""
    out = []
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype)
    for b in range(logits.shape[0]):
        T, U = int(logit_lengths[b]), int(target_lengths[b])
        if T == 0:
            out.append(-neg_inf)
            continue
        x = logits[b, :T, : U + 1]
        lp = x.log_softmax(-1) if fused_log_softmax else x
        y = [int(v) for v in targets[b, :U]]
        alpha = [[neg_inf] * (U + 1) for _ in range(T)]
        for t in range(T):
            for u in range(U + 1):
                if t == 0 and u == 0:
                    alpha[t][u] = torch.zeros((), dtype=logits.dtype)
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1][u] + lp[t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t][u - 1] + lp[t, u - 1, y[u - 1]])
                alpha[t][u] = _plus(terms, semiring)
        out.append(-(alpha[T - 1][U] + lp[T - 1, U, blank]))
    return torch.stack(out)


def transducer_paths_reference(lp: torch.Tensor, target: list[int], rnnt_type: str, blank: int = 0) -> torch.Tensor:
    """-log sum over every alignment, enumerated one by one from the topology's definition.

    lp: [T, U+1, V] log-probs of one utterance; target: its U symbols.
    - regular: T blanks and U symbols in any order, the last output a blank; a blank at (t, u)
      moves to t+1, a symbol to u+1 on the same frame (`rnnt_paths`).
    - modified / rna: T outputs, one per frame, U of them the symbols in order (`frame_paths`).
    - constrained: as modified, and a symbol at (t, u) also scores blank at (t, u+1).
    """
    T, U = lp.shape[0], len(target)
    paths = rnnt_paths(T, U) if rnnt_type == "regular" else frame_paths(T, U)
    scores = []
    for arcs in paths:
        score = torch.zeros((), dtype=lp.dtype)
        for t, u, label in arcs:
            score = score + lp[t, u, target[u] if label else blank]
            if label and rnnt_type == "constrained":
                score = score + lp[t, u + 1, blank]
        scores.append(score)
    if not scores:
        return torch.tensor(float("inf"), dtype=lp.dtype)
    return -torch.logsumexp(torch.stack(scores), 0)


def mutual_information_reference(px: torch.Tensor, py: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """ans[B] of the MI recursion by explicit loops (regular if px has T+1 columns, else modified)."""
    modified = px.shape[2] == py.shape[2]
    out = []
    for b in range(px.shape[0]):
        s0, t0, s1, t1 = (int(v) for v in boundary[b])
        p: dict[tuple[int, int], torch.Tensor] = {}
        for s in range(s0, s1 + 1):
            for t in range(t0, t1 + 1):
                if (s, t) == (s0, t0):
                    p[s, t] = torch.zeros((), dtype=px.dtype)
                    continue
                terms = []
                if t > t0:
                    terms.append(p[s, t - 1] + py[b, s, t - 1])
                if s > s0 and not modified and t < t1:  # no symbol after the last frame
                    terms.append(p[s - 1, t] + px[b, s - 1, t])
                if s > s0 and modified and t > t0:
                    terms.append(p[s - 1, t - 1] + px[b, s - 1, t - 1])
                terms = [x for x in terms if torch.isfinite(x)]  # all -inf: unreachable, no gradient (not NaN)
                p[s, t] = (
                    torch.logsumexp(torch.stack(terms), 0) if terms else torch.tensor(float("-inf"), dtype=px.dtype)
                )
        out.append(p[s1, t1])
    return torch.stack(out)


def tdt_arcs_from(t: int, u: int, T: int, U: int, durations: list[int]) -> Iterator[tuple[int, int, bool, int]]:
    """The TDT arcs leaving node (t, u) of a T x (U+1) lattice: (next t, next u, emits a label,
    duration index). Blank takes durations > 0 and may land on T; a label takes any duration
    and lands on a real frame (< T)."""
    for i, d in enumerate(durations):
        if d > 0 and t + d <= T:
            yield t + d, u, False, i
        if u < U and t + d <= T - 1:
            yield t + d, u + 1, True, i


def _tdt_lattice_loss(arcs: torch.Tensor, U: int, durations: list[int], semiring: str) -> torch.Tensor:
    """-(the semiring sum over the TDT paths from (0, 0) to (T, U)) of one utterance's arc
    log-probs arcs [T, U+1, 2 + D] (blank, next symbol, durations: each arc weighs its token's
    entry plus its duration's), by pushing alpha along every arc of tdt_arcs_from; +inf without
    a path. Terms at -inf (removed arcs) are dropped, so unreachable nodes give no NaN gradient."""
    T = arcs.shape[0]
    alpha: dict[tuple[int, int], list[torch.Tensor]] = {(0, 0): [torch.zeros((), dtype=arcs.dtype)]}
    for t in range(T):
        for u in range(U + 1):
            terms = [x for x in alpha.get((t, u), []) if torch.isfinite(x)]
            if not terms:
                continue
            a = _plus(terms, semiring)
            for t2, u2, label, i in tdt_arcs_from(t, u, T, U, durations):
                alpha.setdefault((t2, u2), []).append(a + arcs[t, u, int(label)] + arcs[t, u, 2 + i])
    final = [x for x in alpha.get((T, U), []) if torch.isfinite(x)] if T > 0 else []
    return -_plus(final, semiring) if final else torch.tensor(float("inf"), dtype=arcs.dtype)


def tdt_loss_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: list[int],
    blank: int = 0,
    sigma: float = 0.0,
    semiring: str = "log",
) -> torch.Tensor:
    """Per-utterance TDT loss [B] by pushing probability along every arc of the lattice; with
    semiring="max", the Viterbi loss (of the best path)."""
    d = len(durations)
    out = []
    for b in range(logits.shape[0]):
        T, U = int(logit_lengths[b]), int(target_lengths[b])
        x = logits[b, :T, : U + 1]
        tok = x[..., :-d].log_softmax(-1) - sigma
        dur = x[..., -d:].log_softmax(-1)
        # the arc rows: blank, the next symbol y_{u+1} (none at u = U: a blank stands in, unread)
        nxt = [int(v) for v in targets[b, :U]] + [blank]
        sym = torch.stack([tok[:, u, nxt[u]] for u in range(U + 1)], 1)
        arcs = torch.cat([tok[..., blank, None], sym[..., None], dur], -1)
        out.append(_tdt_lattice_loss(arcs, U, durations, semiring))
    return torch.stack(out)


def tdt_arc_loss_reference(
    arcs: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: list[int],
) -> torch.Tensor:
    """Per-utterance loss [B] of tdt_arc_loss: the TDT lattice weighted by given arc log-probs.

    arcs[b, t, u] = [blank, next symbol, D durations]; -inf entries remove arcs.
    """
    out = []
    for b in range(arcs.shape[0]):
        T, U = int(logit_lengths[b]), int(target_lengths[b])
        out.append(_tdt_lattice_loss(arcs[b, :T, : U + 1], U, durations, "log"))
    return torch.stack(out)


def rnnt_paths(T: int, U: int) -> list[list[tuple[int, int, bool]]]:
    """Every RNN-T path of a T x (U+1) lattice, each a list of its arcs (t, u, emits a label),
    in order: one per way to put U labels on T frames (C(T+U-1, U)), none when T = 0."""
    paths = []
    if T == 0:
        return paths
    for frames in itertools.combinations_with_replacement(range(T), U):
        arcs, u = [], 0
        for t in range(T):
            while u < U and frames[u] == t:
                arcs.append((t, u, True))
                u += 1
            arcs.append((t, u, False))
        paths.append(arcs)
    return paths


def frame_paths(T: int, U: int) -> list[list[tuple[int, int, bool]]]:
    """Every path of the one-output-per-frame lattices (modified / rna / constrained), each a list
    of its T arcs (t, u, emits a label): one per way to put U labels on distinct frames (C(T, U))."""
    paths = []
    for frames in itertools.combinations(range(T), U):
        u = 0
        arcs = []
        for t in range(T):
            label = t in frames
            arcs.append((t, u, label))
            u += label
        paths.append(arcs)
    return paths


def tdt_paths(T: int, U: int, durations: list[int]) -> list[list[tuple[int, int, bool, int]]]:
    """Every TDT path from (0, 0) to (T, U), each a list of its arcs (t, u, emits a label, duration
    index), in order, by depth-first search over the arcs of tdt_arcs_from."""
    paths: list[list[tuple[int, int, bool, int]]] = []

    def walk(t: int, u: int, arcs: list[tuple[int, int, bool, int]]) -> None:
        if (t, u) == (T, U):
            paths.append(list(arcs))
            return
        for t2, u2, label, i in tdt_arcs_from(t, u, T, U, durations):
            walk(t2, u2, [*arcs, (t, u, label, i)])

    if T > 0:
        walk(0, 0, [])
    return paths


def _ctc_path_repeats(frames: tuple[int, ...], target: list[int], modified: bool) -> dict[int, int]:
    """The CTC paths through the frame labels `frames` (0 = blank) that emit `target`, counted by
    how many of their frames repeat a token without emitting it: {repeat frames: paths}.

    Standard CTC: a run of r frames of one token emits it once (r - 1 repeats). Modified: it
    emits it k times (1 <= k <= r) in C(r-1, k-1) ways, with r - k repeats, so repeats need no blank.
    """
    runs: list[tuple[int, int]] = []
    prev = 0
    for x in frames:
        if x != 0 and x == prev:
            runs[-1] = (x, runs[-1][1] + 1)
        elif x != 0:
            runs.append((x, 1))
        prev = x
    ways = {(0, 0): 1}  # (position in target, repeat frames so far) -> number of paths
    for tok, r in runs:
        nxt: dict[tuple[int, int], int] = {}
        for (pos, rep), w in ways.items():
            for k in range(1, (r if modified else 1) + 1):
                if target[pos : pos + k] == [tok] * k:
                    key = (pos + k, rep + r - k)
                    nxt[key] = nxt.get(key, 0) + w * math.comb(r - 1, k - 1)
        ways = nxt
    return {rep: w for (pos, rep), w in ways.items() if pos == len(target)}


def _ctc_emission_counts(frames: tuple[int, ...], target: list[int], modified: bool) -> int:
    """Number of CTC paths through the frame labels `frames` (0 = blank) that emit `target`."""
    return sum(_ctc_path_repeats(frames, target, modified).values())


def ctc_paths_reference(
    log_probs: torch.Tensor,
    target: list[int],
    modified: bool = False,
    viterbi: bool = False,
    repeat_penalty: float = 0.0,
) -> torch.Tensor:
    """log P(target) of one utterance (log_probs [T, V]) by enumerating all V^T frame labelings.

    Each labeling scores the sum of its frame log-probs plus, per topology path that reads it and
    emits `target`, -repeat_penalty per frame that repeats a token (summed over those paths in
    the log semiring). viterbi=True gives the best single path's score instead. Tiny sizes only.
    """
    T, V = log_probs.shape
    scores = []
    for frames in itertools.product(range(V), repeat=T):
        paths = _ctc_path_repeats(frames, list(target), modified)
        if not paths:
            continue
        s = log_probs[torch.arange(T), torch.tensor(frames)].sum()
        per_path = [math.log(n) - repeat_penalty * rep for rep, n in paths.items()]
        if viterbi:
            scores.append(s - repeat_penalty * min(paths))
        else:
            scores.append(s + torch.logsumexp(torch.tensor(per_path, dtype=log_probs.dtype), 0))
    if not scores:
        return torch.tensor(float("-inf"), dtype=log_probs.dtype)
    stacked = torch.stack(scores)
    return stacked.max() if viterbi else torch.logsumexp(stacked, 0)

"""Finite-state acceptors/transducers on the compiled FSA core (csrc/fsa).

An `Fsa` holds one graph or a batch of them as four tensors (see csrc/fsa/fsa.h):

- arcs int32 [A, 4]: (src, dst, label, aux_label), sorted by src, states numbered per
  graph; state 0 starts, the last state is final, and only arcs into it carry label -1.
- scores float32 [A]: arc log-weights.
- arc_offsets int64 [N+1] and num_states int64 [N].

`label` is what an arc reads from the network's per-frame log-probs (0 = blank), and
`aux_label` what it emits (0 = nothing): a topology is a transducer from network tokens
to transcript tokens, and a training graph `topology o transcript` keeps both, so
aux_label > 0 marks the frame where a token is first emitted.

Graphs are epsilon-free on the input side: every arc but the final ones reads one
frame, which is what CTC topologies give and what keeps dense intersection a plain
frame-synchronous recursion.

    topo = ctc_topo(vocab_size=500)                # standard; modified=True: repeats need no blank
    graphs = compose(topo, linear_fsa(targets, target_lengths))
    total = intersect_dense(graphs, log_probs, lengths)   # log P(targets | x), differentiable
    best, arcs = viterbi(graphs, log_probs, lengths)      # best path: one arc per frame

`to_openfst_text` / `from_openfst_text` read and write the OpenFst text format, so a
graph can be inspected with, or exchanged with, OpenFst tools (fstcompile etc.).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ._ext import ops


@dataclass(frozen=True, eq=False)
class Fsa:
    """One FSA or a batch of N (see the module docstring for the layout)."""

    arcs: torch.Tensor  # int32 [A, 4]: src, dst, label, aux_label
    scores: torch.Tensor  # float32 [A]: log-weights
    arc_offsets: torch.Tensor  # int64 [N+1]: arcs of FSA n are arc_offsets[n]:arc_offsets[n+1]
    num_states: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.num_states.shape[0])

    def __getitem__(self, n: int) -> Fsa:
        """The n-th FSA of the batch, alone."""
        a0, a1 = int(self.arc_offsets[n]), int(self.arc_offsets[n + 1])
        return Fsa(self.arcs[a0:a1], self.scores[a0:a1], torch.tensor([0, a1 - a0]), self.num_states[n : n + 1].clone())

    @property
    def labels(self) -> torch.Tensor:
        return self.arcs[:, 2]

    @property
    def aux_labels(self) -> torch.Tensor:
        return self.arcs[:, 3]

    @staticmethod
    def from_tensors(tensors: list[torch.Tensor]) -> Fsa:
        return Fsa(*tensors)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Fsa)
            and torch.equal(self.arcs, other.arcs)
            and torch.equal(self.scores, other.scores)
            and torch.equal(self.arc_offsets, other.arc_offsets)
            and torch.equal(self.num_states, other.num_states)
        )


@functools.lru_cache(maxsize=8)
def ctc_topo(vocab_size: int, modified: bool = False) -> Fsa:
    """The CTC topology over tokens 0..vocab_size-1 (0 = blank), as one transducer.

    Standard: a token repeated on consecutive frames is emitted once, and two equal
    tokens in a row need a blank between them. Modified: a token state may also emit
    its own token again on the next frame, so repeats need no blank (the paths of
    "a a" frames then read both "a" and "a a"). Both have O(V^2) arcs; the topology is
    cached, and only composition (which visits O(U) of its states) runs per batch.
    """
    return Fsa.from_tensors(ops().fsa_ctc_topo(vocab_size=int(vocab_size), modified=bool(modified)))


def linear_fsa(targets: torch.Tensor, target_lengths: torch.Tensor) -> Fsa:
    """Linear acceptors of padded targets[N, U] (labels > 0) with lengths[N]."""
    return Fsa.from_tensors(
        ops().fsa_linear(targets=targets.detach().cpu().long(), target_lengths=target_lengths.detach().cpu().long())
    )


def compose(topo: Fsa, fsas: Fsa) -> Fsa:
    """topo (one transducer, matched on aux_label) o each acceptor of `fsas`, trimmed.

    The result keeps the topology's labels (what is read per frame) and aux labels (what is
    emitted); the scores add.
    """
    if len(topo) != 1:
        raise ValueError("compose takes one topology FSA")
    return Fsa.from_tensors(
        ops().fsa_compose(
            topo_arcs=topo.arcs,
            topo_scores=topo.scores,
            topo_num_states=int(topo.num_states[0]),
            arcs=fsas.arcs,
            scores=fsas.scores,
            arc_offsets=fsas.arc_offsets,
            num_states=fsas.num_states,
        )
    )


def ctc_graphs(targets: torch.Tensor, target_lengths: torch.Tensor, vocab_size: int, topology: str = "standard") -> Fsa:
    """The CTC training graphs `topology o transcript` of a batch of padded targets."""
    if topology not in ("standard", "modified"):
        raise ValueError(f"topology must be standard|modified, not {topology!r}")
    return compose(ctc_topo(vocab_size, topology == "modified"), linear_fsa(targets, target_lengths))


def _prepare(
    graphs: Fsa,
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    graph_index: torch.Tensor | None,
    arc_extra: torch.Tensor | None,
    frame_extra: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The keyword arguments of asr._C.dense_intersect_forward/backward that describe the graphs and
    lengths: all but log_probs (and the forward's viterbi, the backward's forward results), on
    log_probs' device (graphs are built on the CPU; on a GPU they are copied there, a few KB a
    graph, and the op runs its CUDA kernels)."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, T, V], got {tuple(log_probs.shape)}")
    b = log_probs.shape[0]
    if graph_index is None:
        if len(graphs) not in (1, b):
            raise ValueError(f"{len(graphs)} graphs for a batch of {b}: give one, one per utterance, or graph_index")
        graph_index = torch.zeros(b, dtype=torch.long) if len(graphs) == 1 else torch.arange(b)
    if (arc_extra is None) != (frame_extra is None):
        raise ValueError("arc_extra and frame_extra go together")
    dev = log_probs.device
    empty = torch.empty(0, device=dev)
    return dict(
        arcs=graphs.arcs.to(dev),
        scores=graphs.scores.to(dev),
        arc_offsets=graphs.arc_offsets.to(dev),
        num_states=graphs.num_states.to(dev),
        graph_index=graph_index.to(dev, torch.long).contiguous(),
        lengths=lengths.detach().to(dev, torch.long).contiguous(),
        arc_extra=empty if arc_extra is None else arc_extra.to(dev, torch.float32).contiguous(),
        frame_extra=(
            empty.to(log_probs.dtype) if frame_extra is None else frame_extra.to(dev, log_probs.dtype).contiguous()
        ),
    )


class _IntersectDense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_probs, graphs, lengths, graph_index, arc_extra, frame_extra):
        args = _prepare(graphs, log_probs, lengths, graph_index, arc_extra, frame_extra)
        lp = log_probs.detach().contiguous()
        total, alpha, alpha_offsets = ops().dense_intersect_forward(**args, log_probs=lp, viterbi=False)
        ctx.args = args
        ctx.save_for_backward(lp, total, alpha, alpha_offsets)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        lp, total, alpha, alpha_offsets = ctx.saved_tensors
        grad = ops().dense_intersect_backward(
            **ctx.args,
            log_probs=lp,
            total=total,
            alpha=alpha,
            alpha_offsets=alpha_offsets,
            grad_total=grad_total.to(lp.dtype).contiguous(),
        )
        return grad, None, None, None, None, None


def intersect_dense(
    graphs: Fsa,
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    arc_extra: torch.Tensor | None = None,
    frame_extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Total log-score of all paths of graph b through log_probs[b, :lengths[b]] (log semiring).

    Args:
        graphs: one graph, one per utterance, or any batch selected by graph_index[B].
        log_probs: [B, T, V] per-frame scores (float32 or float64); differentiable.
        lengths: [B] frames per utterance.
        arc_extra, frame_extra: optional [A] and [B, T]: an arc taken at frame t also scores
            arc_extra[a] * frame_extra[b, t] (the delay penalty uses this).
    Returns: total[B] on log_probs' device, -inf where no path fits in lengths[b] frames. The
    kernels run on that device (CPU, or CUDA where asr._C has CUDA kernels: a CUDA tensor in a
    build without them is an error naming the fix, never a silent copy to the CPU).
    """
    return _IntersectDense.apply(log_probs, graphs, lengths, graph_index, arc_extra, frame_extra)


@torch.no_grad()
def viterbi(
    graphs: Fsa,
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    arc_extra: torch.Tensor | None = None,
    frame_extra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best path of each utterance (tropical semiring).

    Returns: (best score [B], -inf where no path exists; best_arcs [B, T]: the graph arc (global
    index into graphs.arcs) taken at each frame, -1 past lengths[b] or without a path), both on
    log_probs' device (where the kernels run, as for intersect_dense).
    """
    lp = log_probs.detach().contiguous()
    args = _prepare(graphs, lp, lengths, graph_index, arc_extra, frame_extra)
    total, _, _, best = ops().dense_intersect_forward(**args, log_probs=lp, viterbi=True)
    return total, best


def to_openfst_text(fsa: Fsa, acceptor: bool = False) -> str:
    """One FSA in OpenFst text format: `src dst ilabel olabel cost` per arc (`src dst label
    cost` for an acceptor), then `state cost` per final state; cost = -score.

    Arcs into our final state become OpenFst final weights (OpenFst has no super-final state).
    Label 0 is blank here but epsilon for OpenFst tools.
    """
    if len(fsa) != 1:
        raise ValueError("to_openfst_text writes one FSA; index the batch first")
    lines, finals = [], {}
    for (src, dst, label, aux), score in zip(fsa.arcs.tolist(), fsa.scores.tolist()):
        if label == -1:
            finals[src] = (
                score if src not in finals else float(torch.logaddexp(torch.tensor(finals[src]), torch.tensor(score)))
            )
            continue
        cost = _fmt(-score)
        lines.append(f"{src} {dst} {label} {cost}" if acceptor else f"{src} {dst} {label} {aux} {cost}")
    lines += [f"{s} {_fmt(-w)}" for s, w in sorted(finals.items())]
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return "0" if x == 0 else repr(float(x))


def from_openfst_text(text: str, acceptor: bool = False) -> Fsa:
    """Read one FSA written in OpenFst text format (see to_openfst_text).

    The start state is the source of the first arc line (OpenFst's rule); states are renumbered
    so it is 0, and a final state is added last, reached by a -1 arc from every OpenFst final
    state with its weight.
    """
    arcs, finals, order = [], {}, {}

    def sid(s: str) -> int:
        return order.setdefault(int(s), len(order))

    n_arc_fields = 4 if acceptor else 5
    for ln, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) in (n_arc_fields - 1, n_arc_fields):  # an arc, with or without a cost
            cost = float(f[n_arc_fields - 1]) if len(f) == n_arc_fields else 0.0
            label = int(f[2])
            aux = label if acceptor else int(f[3])
            arcs.append((sid(f[0]), sid(f[1]), label, aux, -cost))
        elif len(f) in (1, 2):
            finals[sid(f[0])] = -float(f[1]) if len(f) == 2 else 0.0
        else:
            raise ValueError(
                f"OpenFst text line {ln}: {line!r} is neither an arc nor a final state "
                f"({'acceptor' if acceptor else 'transducer'} format)"
            )
    if not arcs and not finals:
        raise ValueError("empty OpenFst text")
    final = len(order)
    arcs += [(s, final, -1, -1, w) for s, w in finals.items() if not math.isinf(w)]
    arcs.sort(key=lambda a: a[0])  # stable: arcs of a state keep their order
    t = torch.tensor([a[:4] for a in arcs], dtype=torch.int32).reshape(-1, 4)
    return Fsa(
        t,
        torch.tensor([a[4] for a in arcs], dtype=torch.float32),
        torch.tensor([0, len(arcs)]),
        torch.tensor([final + 1]),
    )

"""CTC over FSA graphs (csrc/fsa): other topologies, a delay penalty, Viterbi training, forced alignment.

The training graph of each utterance is `topology o transcript`, built in C++ per batch,
and intersected with the network's log-probs. With the standard topology and no
penalty the loss equals torch's CTC (tests check loss and gradients to 1e-6).

Delay penalty (Yao et al., "Delay-penalized CTC implemented based on Finite State
Transducer"): an arc that first emits a token (aux_label > 0 in the graph, i.e. not a
blank and not a repeat frame) at frame t of an utterance of T frames also scores
delay_penalty * ((T - 1) / 2 - t). Early emissions gain, late ones lose, and the
offsets sum to zero over the frames, so the loss stays on the scale of the NLL.

Repeat penalty (Yang et al., "Blank-regularized CTC for Frame Skipping in Neural Transducer",
the soft restriction): every arc that reads a token again on the frame after it (a token
state's self-loop: label > 0, aux_label 0) also scores -repeat_penalty. A token then costs
less on one frame with blanks around it than spread over a run of frames, so the CTC head
learns to put blank on more frames, which a transducer decoded with frame skipping
(asr.decoding.frame_skip) drops. In the modified topology a token read again may also be a
new emission of the same token (an arc with aux_label > 0): that arc is not penalized.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import torch

from ..fsa import Fsa, ctc_graphs, intersect_dense
from ..fsa import viterbi as fsa_viterbi
from .precision import float32_loss

log = logging.getLogger(__name__)


def _delay_extra(graphs: Fsa, input_lengths: torch.Tensor, t_max: int, delay_penalty: float, dtype: torch.dtype):
    if delay_penalty == 0.0:
        return None, None
    arc_extra = (graphs.aux_labels > 0).float()
    lens = input_lengths.detach().cpu().to(dtype)[:, None]
    t = torch.arange(t_max, dtype=dtype)[None, :]
    frame_extra = (delay_penalty * ((lens - 1) / 2 - t)).masked_fill(t >= lens, 0.0)
    return arc_extra, frame_extra


def check_repeat_penalty(repeat_penalty: float) -> float:
    """repeat_penalty as a float; ValueError unless it is a finite number >= 0."""
    if not (isinstance(repeat_penalty, (int, float)) and math.isfinite(repeat_penalty) and repeat_penalty >= 0):
        raise ValueError(f"repeat_penalty must be a finite number >= 0, not {repeat_penalty!r}")
    return float(repeat_penalty)


def _with_repeat_penalty(graphs: Fsa, repeat_penalty: float) -> Fsa:
    """The graphs with -repeat_penalty added to the score of every arc that repeats a token on the
    next frame (label > 0 and nothing emitted: the self-loops of token states).

    It goes into the arc scores rather than arc_extra/frame_extra, which the delay penalty uses,
    because it is the same on every frame: the forward-backward, Viterbi and gradients then see
    it as part of the graph and both penalties combine."""
    if repeat_penalty == 0.0:
        return graphs
    repeat = (graphs.labels > 0) & (graphs.aux_labels == 0)
    return replace(graphs, scores=graphs.scores - repeat_penalty * repeat.to(graphs.scores.dtype))


_no_alignment = {"utterances": 0, "next_log": 1}


def _warn_no_alignment(n_bad: int, batch: int, zeroed: bool) -> None:
    """Warn about utterances without an alignment; in training this repeats every few batches, so
    the log is thinned out: the first time, then each time the running count doubles."""
    _no_alignment["utterances"] += n_bad
    total = _no_alignment["utterances"]
    if total >= _no_alignment["next_log"]:
        _no_alignment["next_log"] = 2 * total
        log.warning(
            "ctc_fst_loss: %d of %d utterances have no alignment (fewer frames than the transcript "
            "needs)%s; %d so far in this process",
            n_bad,
            batch,
            "; their loss and gradient are zeroed" if zeroed else "",
            total,
        )


class _ViterbiScore(torch.autograd.Function):
    """Best-path score per utterance; its gradient is 1 on the (frame, label) of the best path."""

    @staticmethod
    def forward(ctx, log_probs, graphs, lengths, arc_extra, frame_extra):
        score, best = fsa_viterbi(graphs, log_probs, lengths, arc_extra=arc_extra, frame_extra=frame_extra)
        labels = torch.where(best >= 0, graphs.labels.to(best.device).long()[best.clamp(min=0)], -1)
        ctx.save_for_backward(labels)
        ctx.shape = log_probs.shape
        return score

    @staticmethod
    def backward(ctx, grad_score):
        (labels,) = ctx.saved_tensors
        grad = torch.zeros(ctx.shape, dtype=grad_score.dtype, device=grad_score.device)
        labels = labels.to(grad.device)
        on_path = (labels >= 0).to(grad.dtype) * grad_score[:, None].to(grad.dtype)
        grad.scatter_add_(2, labels.clamp(min=0)[..., None], on_path[..., None])
        return grad, None, None, None, None


@float32_loss
def ctc_fst_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    topology: str = "standard",
    delay_penalty: float = 0.0,
    viterbi: bool = False,
    reduction: str = "mean",
    zero_infinity: bool = False,
    repeat_penalty: float = 0.0,
) -> torch.Tensor:
    """CTC loss over FSA training graphs (blank = 0).

    Args:
        log_probs: [B, T, V] log-softmax outputs (float32 or float64; bfloat16/float16 are computed
            on in float32, asr.losses.precision).
        targets: [B, U] padded token ids > 0 (padding ignored via target_lengths); U may be 0.
        input_lengths, target_lengths: [B] int.
        topology: "standard" (torch's CTC) or "modified" (repeated tokens need no blank).
        delay_penalty: > 0 rewards emitting tokens early (see the module docstring).
        viterbi: train on the best path only (the max approximation) instead of all paths.
        reduction: "none" ([B]), "sum", or "mean" (torch's: each loss divided by its target
            length, then averaged over the batch).
        zero_infinity: utterances with no path (too few frames) get loss 0 and gradient 0
            instead of +inf; a warning counts them either way.
        repeat_penalty: >= 0, the log-space cost of each frame that repeats a token (see the
            module docstring); 0 is the plain loss.
    Returns: the loss, -log P(targets | x) (+ the delay and repeat penalty terms) per the reduction.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, T, V], got {tuple(log_probs.shape)}")
    b, t_max, v = log_probs.shape
    if targets.dim() != 2 or targets.shape[0] != b:
        raise ValueError(f"targets must be [B={b}, U], got {tuple(targets.shape)}")
    graphs = _with_repeat_penalty(
        ctc_graphs(targets, target_lengths, v, topology), check_repeat_penalty(repeat_penalty)
    )
    arc_extra, frame_extra = _delay_extra(graphs, input_lengths, t_max, float(delay_penalty), log_probs.dtype)
    if viterbi:
        total = _ViterbiScore.apply(log_probs, graphs, input_lengths, arc_extra, frame_extra)
    else:
        total = intersect_dense(graphs, log_probs, input_lengths, arc_extra=arc_extra, frame_extra=frame_extra)
    loss = -total
    bad = ~torch.isfinite(loss)
    if bool(bad.any()):
        _warn_no_alignment(int(bad.sum()), b, zero_infinity)
        if zero_infinity:
            loss = torch.where(bad, torch.zeros_like(loss), loss)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return (loss / target_lengths.to(loss.device).clamp(min=1).to(loss.dtype)).mean()
    raise ValueError(f"reduction must be none|mean|sum, not {reduction!r}")


@dataclass
class Alignment:
    """Best CTC path per frame (the output of `forced_align`)."""

    labels: torch.Tensor  # [B, T] int64: token read at each frame (0 = blank), -1 past the length
    starts: torch.Tensor  # [B, T] bool: the frame where a transcript token is first emitted
    scores: torch.Tensor  # [B]: log-score of the best path, -inf where none fits

    def token_spans(self, b: int) -> list[tuple[int, int, int]]:
        """(token, first frame, last frame) of each transcript token of utterance b, in order.

        A token spans its first frame and the frames that repeat it after (blanks excluded).
        """
        lab, st = self.labels[b].tolist(), self.starts[b].tolist()
        spans: list[tuple[int, int, int]] = []
        for t, (x, s) in enumerate(zip(lab, st)):
            if s:
                spans.append((x, t, t))
            elif x > 0 and spans and spans[-1][2] == t - 1 and spans[-1][0] == x:
                spans[-1] = (x, spans[-1][1], t)
        return spans

    def token_frames(
        self, targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """The first frame of each transcript token, [B, max U] int64 (-1 past target_lengths): the
        token frames a transducer's external alignment takes (asr.losses.viterbi).

        Args:
            targets: [B, U] the transcripts aligned; logit_lengths: [B] the frames of the
                transducer's utterances; target_lengths: [B].
        Raises: ValueError naming the utterance where the alignment has no path (score -inf), or
        covers other frames, emits another number of tokens or other tokens than those given.
        """
        targets, logit_lengths, target_lengths = (x.to(torch.int64) for x in (targets, logit_lengths, target_lengths))
        labels, starts = self.labels.to(targets.device), self.starts.to(targets.device)
        b = targets.shape[0]
        if labels.dim() != 2 or labels.shape[0] != b or starts.shape != labels.shape:
            raise ValueError(f"alignment must cover B={b} utterances, got labels {tuple(labels.shape)}")
        n_frames, n_tokens = (labels >= 0).sum(1), starts.sum(1)
        for i in range(b):
            if not torch.isfinite(self.scores[i]):
                raise ValueError(f"alignment of utterance {i}: none (score -inf: the transcript did not fit)")
            if int(n_frames[i]) != int(logit_lengths[i]):
                raise ValueError(
                    f"alignment of utterance {i} covers {int(n_frames[i])} frames, but logit_lengths says "
                    f"{int(logit_lengths[i])}"
                )
            if int(n_tokens[i]) != int(target_lengths[i]):
                raise ValueError(
                    f"alignment of utterance {i} emits {int(n_tokens[i])} tokens, but target_lengths says "
                    f"{int(target_lengths[i])}"
                )
        utt, t = starts.nonzero(as_tuple=True)  # row-major: by utterance, then frame
        rank = torch.arange(len(utt), device=utt.device) - (torch.cumsum(n_tokens, 0) - n_tokens)[utt]
        max_u = int(target_lengths.max()) if b else 0
        frames = torch.full((b, max_u), -1, dtype=torch.int64, device=targets.device)
        frames[utt, rank] = t
        wrong = labels[utt, t] != targets[utt, rank]
        if bool(wrong.any()):
            j = int(wrong.nonzero()[0])
            raise ValueError(
                f"alignment of utterance {int(utt[j])} emits token {int(labels[utt[j], t[j]])} at frame {int(t[j])}, "
                f"but target {int(rank[j])} is {int(targets[utt[j], rank[j]])}"
            )
        return frames


@float32_loss
@torch.no_grad()
def forced_align(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor | None = None,
    topology: str = "standard",
) -> Alignment:
    """The most probable CTC alignment of each transcript (Viterbi over its training graph).

    Args:
        log_probs: [B, T, V]. targets: [B, U] padded (or a list of token-id lists).
        input_lengths: [B]. target_lengths: [B]; default: the lengths of the lists, or U.
    Returns: Alignment with frame labels, token start flags and path scores, on log_probs' device
    (the Viterbi search runs there). An utterance whose transcript cannot fit in its frames gets
    score -inf and labels -1 (and a warning).
    """
    if isinstance(targets, (list, tuple)):
        target_lengths = torch.tensor([len(y) for y in targets], dtype=torch.long)
        padded = torch.zeros(len(targets), max([len(y) for y in targets] + [0]), dtype=torch.long)
        for i, y in enumerate(targets):
            padded[i, : len(y)] = torch.as_tensor(y, dtype=torch.long)
        targets = padded
    if target_lengths is None:
        target_lengths = torch.full((targets.shape[0],), targets.shape[1], dtype=torch.long)
    graphs = ctc_graphs(targets, target_lengths, log_probs.shape[-1], topology)
    score, best = fsa_viterbi(graphs, log_probs, input_lengths)  # on log_probs' device
    ok = best >= 0
    arcs = graphs.arcs.to(best.device).long()[best.clamp(min=0)]  # [B, T, 4]
    labels = torch.where(ok, arcs[..., 2], -1)
    starts = ok & (arcs[..., 3] > 0)
    n_bad = int((~torch.isfinite(score)).sum())
    if n_bad:
        log.warning(
            "forced_align: %d of %d utterances cannot be aligned (fewer frames than the transcript needs)",
            n_bad,
            len(score),
        )
    return Alignment(labels, starts, score)

"""The transducer head's training criteria as strategy objects: full RNN-T, pruned RNN-T, TDT and
pruned TDT.

Each strategy holds its own options (and parameters: the "simple" joiner of pruned RNN-T and
pruned TDT), so the head itself takes only a predictor, a joint and one loss spec:

    loss: rnnt                                     # or
    loss: {kind: rnnt, topology: modified}         # regular | modified | constrained | rna
    loss: {kind: pruned_rnnt, prune_range: 5, simple_loss_scale: 0.5, warmup_steps: 300}
    loss: {kind: tdt, durations: [0, 1, 2, 3, 4], sigma: 0.05, omega: 0.1}
    loss: {kind: rnnt, viterbi: true}              # or viterbi: {full_sum_steps: 2000}; tdt alike
    loss: {kind: pruned_tdt, durations: [0, 1, 2, 3, 4], sigma: 0.05, omega: 0.1, prune_range: 5}

A strategy returns loss sums over the batch (the head divides by the number of target
tokens). Decoding reads two things from it: `durations`, the frame advances the joint
predicts besides the tokens (TDT; () for RNN-T-style joints), and `symbols_per_frame`, the
most labels its lattice allows on one frame (1 for the one-output-per-frame topologies).

Viterbi training (rnnt and tdt, `ViterbiOptions`): the loss of the model's best path only.
The search needs the joint's outputs on the whole lattice, computed without grad and freed
after it; then the joint runs again, with grad, on the path's nodes only (B*(T+U) of the
B*T*(U+1) nodes). So the whole lattice's joint activations are never kept for backward and
its gradient never exists (BENCHMARKS.md: 3.15 GiB peak against 6.10 GiB for the full sum).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...losses import (
    TransducerPath,
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    get_tdt_prune_ranges,
    path_log_probs,
    rnnt_best_path,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_smoothed,
    tdt_loss,
    tdt_loss_pruned,
    tdt_loss_simple,
)
from ...losses.mutual_information import lattice_boundary
from ...losses.pruned_tdt import check_prune_durations
from ...losses.tdt import check_tdt_options
from ...losses.topology import check_topology, one_output_per_frame
from ...losses.viterbi import tdt_viterbi_path_loss, tdt_viterbi_paths

if TYPE_CHECKING:
    from .transducer import Joint


@dataclass(frozen=True)
class ViterbiOptions:
    """Viterbi (max-approximation) training of a full-lattice loss: `viterbi: true | false |
    {full_sum_steps: N}` in its spec."""

    enabled: bool = False  # train on the best path only, instead of the sum over all paths
    # full-sum training before this training step: the best path of an untrained model is
    # arbitrary, and Viterbi training from scratch needs a warm start (Zeyer et al.)
    full_sum_steps: int = 0

    def __post_init__(self):
        # bool is an int subclass: full_sum_steps: true is a config mistake, not step 1
        if isinstance(self.full_sum_steps, bool) or not isinstance(self.full_sum_steps, int) or self.full_sum_steps < 0:
            raise ValueError(f"viterbi full_sum_steps must be an int >= 0, not {self.full_sum_steps!r}")

    @classmethod
    def parse(cls, spec: bool | dict | None) -> ViterbiOptions:
        """From a spec's `viterbi` value: a bool, or a dict of options (which enables it)."""
        if spec is None or isinstance(spec, bool):
            return cls(enabled=bool(spec))
        if isinstance(spec, dict):
            unknown = set(spec) - {"full_sum_steps"}
            if unknown:
                raise ValueError(f"viterbi options are full_sum_steps, not {sorted(unknown)}")
            return cls(enabled=True, **spec)
        raise ValueError(f"viterbi must be true, false or {{full_sum_steps: N}}, not {spec!r}")

    def active(self, step: int) -> bool:
        """Whether a training step trains on the best path (else on the full sum)."""
        return self.enabled and step >= self.full_sum_steps


def path_joint(joint: Joint, enc: torch.Tensor, pred: torch.Tensor, path: TransducerPath) -> torch.Tensor:
    """The joint's outputs [P, C] at the source nodes of a path's arcs: enc[utt, t] with pred[utt, u], or
    pred[utt, t, u] for per-frame predictor outputs [B, T, U+1, D] (TAED)."""
    pred_p = joint.project_pred(pred)
    at = pred_p[path.utt, path.t, path.u] if pred.dim() == 4 else pred_p[path.utt, path.u]
    return joint.combine(joint.project_enc(enc)[path.utt, path.t], at).float()


class TransducerLoss(nn.Module, ABC):
    """forward(joint, enc[B, T, D_enc], pred[B, U+1, D_pred], targets[B, U], enc_lens[B], target_lens[B],
    blank, step) -> {"loss": sum over the batch, **parts (sums, detached)}."""

    kind: str
    durations: tuple[int, ...] = ()  # frame advances the joint predicts besides tokens (TDT)
    symbols_per_frame: int | None = None  # most labels the lattice allows on one frame (None: any)

    @abstractmethod
    def forward(
        self,
        joint: Joint,
        enc: torch.Tensor,
        pred: torch.Tensor,
        targets: torch.Tensor,
        enc_lens: torch.Tensor,
        target_lens: torch.Tensor,
        blank: int,
        step: int,
    ) -> dict[str, torch.Tensor]: ...


def _topology(topology: str) -> tuple[str, int | None]:
    """The `topology` option of the RNN-T criteria (asr.losses.topology), validated once:
    (topology, symbols_per_frame)."""
    return check_topology(topology), (1 if one_output_per_frame(topology) else None)


class RNNTLoss(TransducerLoss):
    """The full-lattice RNN-T loss (Graves 2012) of the joint's logits [B, T, U+1, V].

    Args:
        topology: regular (any number of labels per frame) | modified | rna | constrained (one
            output per frame: decoding then emits at most one label per frame).
        viterbi: the loss of the best path only (`ViterbiOptions`; after `full_sum_steps`); regular
            topology only.
    """

    kind = "rnnt"

    def __init__(self, topology: str = "regular", viterbi: bool | dict | None = False):
        super().__init__()
        self.topology, self.symbols_per_frame = _topology(topology)
        self.viterbi = ViterbiOptions.parse(viterbi)
        if self.viterbi.enabled and self.topology != "regular":
            raise ValueError(f"viterbi training runs on the regular lattice only, not topology {self.topology!r}")

    def forward(self, joint, enc, pred, targets, enc_lens, target_lens, blank, step):
        if self.viterbi.active(step):
            with torch.no_grad():
                path = rnnt_best_path(joint(enc, pred).float(), targets, enc_lens, target_lens, blank)
            return {"loss": -path_log_probs(path_joint(joint, enc, pred, path), path).sum()}
        logits = joint(enc, pred).float()
        return {
            "loss": rnnt_loss(
                logits, targets, enc_lens, target_lens, blank=blank, reduction="sum", rnnt_type=self.topology
            )
        }


class TDTLoss(TransducerLoss):
    """Token-and-Duration Transducer loss (Xu et al. 2023): the joint also predicts how many frames
    to advance, one of `durations`.

    Args:
        durations: frame advances (0 lets a label stay on its frame; blank never takes 0).
        sigma: logit under-normalization of the token log-probs (the paper's 0.05).
        omega: weight of the plain RNN-T loss of the token logits mixed in.
        viterbi: the loss of the best path only (`ViterbiOptions`): the TDT best path, and for
            omega the RNN-T best path of the token logits (`tdt_viterbi_loss`).
    """

    kind = "tdt"

    def __init__(
        self,
        durations: list[int] | tuple[int, ...] = (0, 1, 2, 3, 4),
        sigma: float = 0.0,
        omega: float = 0.0,
        viterbi: bool | dict | None = False,
    ):
        super().__init__()
        self.durations, self.sigma, self.omega = check_tdt_options(durations, sigma, omega)
        self.viterbi = ViterbiOptions.parse(viterbi)

    def forward(self, joint, enc, pred, targets, enc_lens, target_lens, blank, step):
        if self.viterbi.active(step):
            # tdt_viterbi_loss, with the paths found on the joint's outputs on the whole lattice
            # (no grad, freed here) and the joint run with grad on the paths' nodes only
            with torch.no_grad():
                logits = joint(enc, pred).float()  # [B, T, U+1, V+D]
                paths = tdt_viterbi_paths(
                    logits, targets, enc_lens, target_lens, self.durations, blank, self.sigma, self.omega
                )
                del logits
            rows = partial(path_joint, joint, enc, pred)
            return {"loss": tdt_viterbi_path_loss(rows, *paths, self.sigma, self.omega).sum()}
        logits = joint(enc, pred).float()
        return {
            "loss": tdt_loss(
                logits,
                targets,
                enc_lens,
                target_lens,
                durations=self.durations,
                blank=blank,
                sigma=self.sigma,
                omega=self.omega,
                reduction="sum",
            )
        }


class PrunedLoss(TransducerLoss):
    """What pruned RNN-T and pruned TDT share: the "simple" joiner (two linear projections whose sum
    is the simple joint's logits), the warm-up of the two losses' scales, and the real joint on
    the pruned grid. Subclasses compute the simple loss, the ranges and the pruned loss.

    Args:
        enc_dim, pred_dim: encoder and predictor widths; simple_dim: the simple joiner's outputs.
        prune_range: symbols per frame kept in the pruned lattice (>= 2).
        simple_loss_scale: final weight of the simple loss.
        lm_only_scale, am_only_scale: smoothing of the simple loss (icefall's defaults 0.25, 0).
        warmup_steps: over these steps the simple loss scale falls linearly from 1 to
            simple_loss_scale and the pruned loss scale rises from 0.1 to 1, because the
            pruning bounds come from the simple loss and are poor before it has learnt.
    """

    def __init__(
        self,
        enc_dim: int,
        pred_dim: int,
        simple_dim: int,
        prune_range: int,
        simple_loss_scale: float,
        lm_only_scale: float,
        am_only_scale: float,
        warmup_steps: int,
    ):
        super().__init__()
        if prune_range < 2:
            raise ValueError(f"prune_range must be >= 2 symbols per frame, not {prune_range}")
        if warmup_steps < 0 or not 0 <= simple_loss_scale <= 1:
            raise ValueError(f"{self.kind} needs warmup_steps >= 0 and 0 <= simple_loss_scale <= 1")
        self.prune_range = int(prune_range)
        self.simple_loss_scale = float(simple_loss_scale)
        self.lm_only_scale, self.am_only_scale = float(lm_only_scale), float(am_only_scale)
        self.warmup_steps = int(warmup_steps)
        self.simple_am = nn.Linear(enc_dim, simple_dim)
        self.simple_lm = nn.Linear(pred_dim, simple_dim)

    def loss_scales(self, step: int) -> tuple[float, float]:
        """(simple, pruned) loss scales at a training step (the warm-up)."""
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return self.simple_loss_scale, 1.0
        r = step / self.warmup_steps
        return 1.0 - r * (1.0 - self.simple_loss_scale), 0.1 + 0.9 * r

    def simple_inputs(
        self, enc: torch.Tensor, pred: torch.Tensor, enc_lens: torch.Tensor, target_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(am [B, T, simple_dim], lm [B, U+1, simple_dim], boundary [B, 4] of (0, 0, U_b, T_b))."""
        boundary = lattice_boundary(target_lens, enc_lens)
        return self.simple_am(enc).float(), self.simple_lm(pred).float(), boundary

    @staticmethod
    def pruned_logits(joint: Joint, enc: torch.Tensor, pred: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
        """The real joint at the kept nodes only: [B, T, s_range, num_outputs] (s_range as the ranges:
        prune_range, capped or widened)."""
        am_p, lm_p = do_rnnt_pruning(joint.project_enc(enc), joint.project_pred(pred), ranges)
        return joint.combine(am_p, lm_p).float()

    def combine(self, simple: torch.Tensor, pruned: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """The warmed-up sum of the two losses, and both for logging."""
        s_scale, p_scale = self.loss_scales(step)
        return {"loss": s_scale * simple + p_scale * pruned, "simple": simple.detach(), "pruned": pruned.detach()}


class PrunedRNNTLoss(PrunedLoss):
    """Pruned RNN-T (Kuang et al. 2022): a "simple" joiner (lm + am, linear in the log domain)
    gives a cheap full-lattice loss whose gradients pick a window of `prune_range` symbols per
    frame; the real joint runs on that window only.

    Args:
        enc_dim, pred_dim, vocab_size: widths of the simple joiner's two projections.
        prune_range, simple_loss_scale, lm_only_scale, am_only_scale, warmup_steps: PrunedLoss.
        delay_penalty: reward for early emission (0: off).
        topology: the lattice of both losses, as for RNNTLoss.
    """

    kind = "pruned_rnnt"

    def __init__(
        self,
        enc_dim: int,
        pred_dim: int,
        vocab_size: int,
        prune_range: int = 5,
        simple_loss_scale: float = 0.5,
        lm_only_scale: float = 0.25,
        am_only_scale: float = 0.0,
        warmup_steps: int = 0,
        delay_penalty: float = 0.0,
        topology: str = "regular",
    ):
        super().__init__(
            enc_dim, pred_dim, vocab_size, prune_range, simple_loss_scale, lm_only_scale, am_only_scale, warmup_steps
        )
        self.topology, self.symbols_per_frame = _topology(topology)
        self.delay_penalty = float(delay_penalty)

    def forward(self, joint, enc, pred, targets, enc_lens, target_lens, blank, step):
        am, lm, boundary = self.simple_inputs(enc, pred, enc_lens, target_lens)
        simple, (px_grad, py_grad) = rnnt_loss_smoothed(
            lm,
            am,
            targets,
            blank,
            lm_only_scale=self.lm_only_scale,
            am_only_scale=self.am_only_scale,
            boundary=boundary,
            rnnt_type=self.topology,
            delay_penalty=self.delay_penalty,
            reduction="sum",
            return_grad=True,
        )
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, self.prune_range, rnnt_type=self.topology)
        pruned = rnnt_loss_pruned(
            self.pruned_logits(joint, enc, pred, ranges),
            targets,
            ranges,
            blank,
            boundary=boundary,
            rnnt_type=self.topology,
            delay_penalty=self.delay_penalty,
            reduction="sum",
        )
        return self.combine(simple, pruned, step)


class PrunedTDTLoss(PrunedLoss):
    """Pruned TDT: pruned RNN-T's recipe for the TDT loss. The simple joiner's V + D outputs (tokens
    and durations, lm + am) give tdt_loss_simple, whose occupancy picks `prune_range` symbols
    per frame (get_tdt_prune_ranges); the real joint, with its duration outputs, runs there only.

    Args:
        enc_dim, pred_dim, vocab_size: widths of the simple joiner (vocab_size + len(durations) outputs).
        prune_range, simple_loss_scale, lm_only_scale, am_only_scale, warmup_steps: PrunedLoss.
        durations, sigma, omega: as TDTLoss (durations must contain 1; omega mixes in the pruned RNN-T
            loss of the token logits on the same windows).
    """

    kind = "pruned_tdt"

    def __init__(
        self,
        enc_dim: int,
        pred_dim: int,
        vocab_size: int,
        durations: list[int] | tuple[int, ...] = (0, 1, 2, 3, 4),
        sigma: float = 0.0,
        omega: float = 0.0,
        prune_range: int = 5,
        simple_loss_scale: float = 0.5,
        lm_only_scale: float = 0.25,
        am_only_scale: float = 0.0,
        warmup_steps: int = 0,
    ):
        durs = check_prune_durations(durations)
        _, sigma, omega = check_tdt_options(durs, sigma, omega)
        super().__init__(
            enc_dim,
            pred_dim,
            vocab_size + len(durs),
            prune_range,
            simple_loss_scale,
            lm_only_scale,
            am_only_scale,
            warmup_steps,
        )
        self.durations, self.sigma, self.omega = durs, sigma, omega

    def forward(self, joint, enc, pred, targets, enc_lens, target_lens, blank, step):
        am, lm, boundary = self.simple_inputs(enc, pred, enc_lens, target_lens)
        tdt = {"durations": self.durations, "blank": blank, "boundary": boundary, "sigma": self.sigma}
        simple, occupancy = tdt_loss_simple(
            lm,
            am,
            targets,
            lm_only_scale=self.lm_only_scale,
            am_only_scale=self.am_only_scale,
            reduction="sum",
            return_grad=True,
            **tdt,
        )
        ranges = get_tdt_prune_ranges(occupancy, boundary, self.prune_range, self.durations)
        logits = self.pruned_logits(joint, enc, pred, ranges)  # [B, T, s_range, V + D]
        pruned = tdt_loss_pruned(logits, targets, ranges, omega=self.omega, reduction="sum", **tdt)
        return self.combine(simple, pruned, step)


STRATEGIES: dict[str, type[TransducerLoss]] = {
    "rnnt": RNNTLoss,
    "pruned_rnnt": PrunedRNNTLoss,
    "tdt": TDTLoss,
    "pruned_tdt": PrunedTDTLoss,
}
_SIZES = ("self", "enc_dim", "pred_dim", "vocab_size")  # given by the head, not by the spec


def build_transducer_loss(spec: str | dict, enc_dim: int, pred_dim: int, vocab_size: int) -> TransducerLoss:
    """The strategy for a loss spec: a kind ("rnnt" | "pruned_rnnt" | "tdt" | "pruned_tdt") or
    {"kind": ..., **options}."""
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("kind", "rnnt")
    if kind not in STRATEGIES:
        raise ValueError(f"transducer loss must be one of {', '.join(STRATEGIES)}, not {kind!r}")
    cls = STRATEGIES[kind]
    options = [p for p in inspect.signature(cls.__init__).parameters if p not in _SIZES]
    unknown = sorted(set(spec) - set(options))
    if unknown:
        raise ValueError(f"the {kind} loss has no option {', '.join(unknown)}; its options: {', '.join(options)}")
    if "enc_dim" in inspect.signature(cls.__init__).parameters:  # the pruned losses' simple joiner
        return cls(enc_dim, pred_dim, vocab_size, **spec)
    return cls(**spec)

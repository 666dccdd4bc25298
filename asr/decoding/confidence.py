"""Token confidence: how sure the model's distribution was where a token was emitted.

The measure is one minus the normalized Gibbs entropy of that distribution over the V
tokens (blank included), 1 - H(p) / log V, in [0, 1]: 1 for a one-hot distribution, 0 for a
uniform one. It looks at the whole distribution rather than only the chosen token's
probability, which separates right from wrong words better on our models (README, "Word
timestamps and confidence": word AUROC of entropy vs max-probability confidence, with NeMo's
Tsallis and Renyi entropies also measured).
"""

from __future__ import annotations

import math

import torch


def entropy_confidence(log_probs: torch.Tensor) -> torch.Tensor:
    """log_probs[..., V] (log-softmax normalized) -> [...] confidence in [0, 1]."""
    lp = log_probs.float()
    h = -(lp.exp() * lp).nan_to_num(0.0).sum(-1)  # 0 * log 0 = 0
    return (1.0 - h / math.log(lp.shape[-1])).clamp(0.0, 1.0)

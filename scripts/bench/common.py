"""Shared pieces of the loss benchmarks: the size flags and the random lengths they use."""

from __future__ import annotations

import argparse

import torch


def add_size_args(p: argparse.ArgumentParser, threads: int = 2) -> None:
    """--B --T --U --V (the issue's standard sizes) and --threads."""
    p.add_argument("--B", type=int, default=32, help="batch size")
    p.add_argument("--T", type=int, default=500, help="frames (after subsampling)")
    p.add_argument("--U", type=int, default=100, help="target tokens")
    p.add_argument("--V", type=int, default=500, help="vocabulary")
    p.add_argument("--threads", type=int, default=threads)


def random_lengths(B: int, T: int, U: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame and target lengths [B], random in 70-100% of T and U; the first utterance is the longest."""
    tl = (T * (0.7 + 0.3 * torch.rand(B, generator=g))).long().clamp(1, T)
    tl[0] = T
    ul = (U * (0.7 + 0.3 * torch.rand(B, generator=g))).long().clamp(1, U)
    ul[0] = U
    return tl, ul

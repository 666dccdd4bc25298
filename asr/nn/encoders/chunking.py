"""Chunked attention for streaming: the one mask function that training and inference share.

Frames are grouped into chunks of `chunk_size` encoder frames. A query sees every key of
its own chunk and of earlier chunks, back to `left_context` frames before its chunk's
start (-1: no limit). chunk_size = -1 is full context (offline). Training builds the
mask over all frames at once; streaming inference builds it over the current chunk's
queries and the cached keys, by their absolute positions, with the same function, so
the two agree by construction (tests check the outputs too).
"""

from __future__ import annotations

import random

import torch

FULL = -1  # chunk size / left context meaning "no limit"


def chunk_attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, chunk_size: int, left_context: int = FULL
) -> torch.Tensor:
    """visible[Tq, Tk]: may the query at position q_pos[i] attend to the key at k_pos[j]?

    Args:
        q_pos: [Tq] absolute frame positions of the queries. k_pos: [Tk] of the keys.
        chunk_size: frames per chunk, or -1 for full context (everything visible).
        left_context: frames before the query's chunk start that stay visible, -1 for all.
    """
    if chunk_size == FULL:
        return torch.ones(q_pos.shape[0], k_pos.shape[0], dtype=torch.bool, device=q_pos.device)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0 or -1 (full context), not {chunk_size}")
    q_chunk = torch.div(q_pos, chunk_size, rounding_mode="floor")[:, None]
    k_chunk = torch.div(k_pos, chunk_size, rounding_mode="floor")[None, :]
    visible = k_chunk <= q_chunk
    if left_context != FULL:
        visible &= k_pos[None, :] >= q_chunk * chunk_size - left_context
    return visible


def sample_chunking(
    chunk_sizes: tuple[int, ...], left_contexts: tuple[int, ...], rng: random.Random | None = None
) -> tuple[int, int]:
    """Dynamic chunk training: one (chunk_size, left_context) for this batch.

    chunk_sizes should include -1 (full context) so one model also serves offline use.
    """
    rng = rng or random
    chunk = rng.choice(list(chunk_sizes))
    left = rng.choice(list(left_contexts)) if left_contexts else FULL
    return chunk, (FULL if chunk == FULL else left)

"""Recurrent encoders: an LSTM stack, and minGRU / minLSTM stacks.

minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?") drop the hidden
state from the gates, so h_t = a_t * h_{t-1} + b_t with a_t, b_t computed from x_t
alone. Training evaluates that linear recurrence for all t at once with a log-space
parallel scan (Heinsen 2023):

    log h_t = logaddexp(A_t + log h_0, A_t + logcumsumexp_s<=t(log b_s - A_s)),  A_t = sum_{r<=t} log a_r

Streaming runs the same recurrence one frame at a time (`step`). Both read a_t, b_t
from the same log-space gates, so they agree to float rounding (tests check it).
The scan runs over blocks of `scan_chunk` frames, carrying h between blocks, which
keeps A_t small and float32 exact enough for utterances of any length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .base import Unchunked, check_streaming_args
from .conformer import padding_mask
from .export import NoStreamingExport
from .subsampling import Conv2dSubsampling4

_NEG = -1.0e30  # log of "nothing added": finite, so gradients through padded frames stay finite


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log of g(x) = x + 0.5 (x >= 0) or sigmoid(x) (x < 0): a positive activation, so h stays > 0."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def log_space_scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t for all t, from log a, log b [B, T, H] and h0 [B, H] (h0 >= 0).

    Returns h [B, T, H].
    """
    a_star = torch.cumsum(log_a, dim=1)
    log_h0 = torch.log(h0.clamp(min=0))[:, None, :]  # log 0 = -inf: no initial state
    inner = torch.logcumsumexp(log_b - a_star, dim=1)
    return torch.exp(a_star + torch.logaddexp(inner, log_h0.expand_as(inner)))


class MinRNN(nn.Module):
    """minGRU (cell="gru") or minLSTM (cell="lstm") layer: x[B, T, D] -> h[B, T, hidden].

    minGRU:  z = sigmoid(k_z),  a = 1 - z,  b = z * g(k_h)
    minLSTM: f, i = sigmoid(k_f), sigmoid(k_i) normalized to f / (f + i), i / (f + i),
             a = f', b = i' * g(k_h)
    """

    def __init__(self, d_in: int, hidden: int, cell: str = "gru", scan_chunk: int = 64):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be gru or lstm, not {cell!r}")
        self.cell = cell
        self.hidden = hidden
        self.scan_chunk = scan_chunk
        self.gates = nn.Linear(d_in, (2 if cell == "gru" else 3) * hidden)

    def log_coeffs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x[..., D] -> (log a, log b), each [..., hidden]."""
        if self.cell == "gru":
            k_z, k_h = self.gates(x).chunk(2, dim=-1)
            return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)
        k_f, k_i, k_h = self.gates(x).chunk(3, dim=-1)
        diff = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
        return -F.softplus(diff), -F.softplus(-diff) + log_g(k_h)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel scan. x[B, T, D], valid[B, T] (padded frames keep h), h0[B, hidden].

        Returns (h[B, T, hidden], h at each utterance's last real frame [B, hidden]).
        """
        # the scan in float32 also under autocast: its cumulative sums of log-gates lose the state in
        # bfloat16 (8 bits), and _NEG overflows float16; the gates' matmul may stay in low precision
        log_a, log_b = (c.float() for c in self.log_coeffs(x))
        pad = ~valid[..., None]
        log_a = log_a.masked_fill(pad, 0.0)  # a = 1, b = 0: the state passes through padding unchanged
        log_b = log_b.masked_fill(pad, _NEG)
        outs = []
        h = h0
        for s in range(0, x.shape[1], self.scan_chunk):
            hs = log_space_scan(log_a[:, s : s + self.scan_chunk], log_b[:, s : s + self.scan_chunk], h)
            outs.append(hs)
            h = hs[:, -1]
        if not outs:
            return x.new_zeros(x.shape[0], 0, self.hidden), h0
        return torch.cat(outs, dim=1), h

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One frame: x_t[B, D], h[B, hidden] -> new h[B, hidden]."""
        log_a, log_b = self.log_coeffs(x_t)
        return torch.exp(log_a) * h + torch.exp(log_b)


class MinRNNBlock(nn.Module):
    """Pre-norm residual block: x + W_o minRNN(LN(x)), then x + FF(LN(x))."""

    def __init__(self, d_model: int, hidden: int, cell: str, ff_mult: int, dropout: float, scan_chunk: int):
        super().__init__()
        self.norm_rnn = nn.LayerNorm(d_model)
        self.rnn = MinRNN(d_model, hidden, cell, scan_chunk)
        self.out = nn.Linear(hidden, d_model)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ff_mult * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, h_last = self.rnn(self.norm_rnn(x), valid, h0)
        x = x + self.drop(self.out(h))
        return x + self.drop(self.ff(self.norm_ff(x))), h_last

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t[B, d_model], h[B, hidden] -> (y_t[B, d_model], new h)."""
        h = self.rnn.step(self.norm_rnn(x_t), h)
        x_t = x_t + self.drop(self.out(h))
        return x_t + self.drop(self.ff(self.norm_ff(x_t))), h


@dataclass
class RecurrentState:
    """Streaming state of a recurrent encoder (plain tensors)."""

    sub_cache: torch.Tensor  # [B, S, F] feature frames carried to the next subsampling call
    h: torch.Tensor  # [L, B, H] hidden state per layer
    c: torch.Tensor  # [L, B, H] LSTM cell state (unused by minGRU/minLSTM)
    chunk_size: torch.Tensor  # [] int64: encoder frames per call (any chunking gives the same output)


def recurrent_chunk_input_frames(subsampling: Conv2dSubsampling4, state: RecurrentState) -> int:
    """Feature frames for one chunk of state.chunk_size encoder frames (any chunking streams
    exactly here; the first call has no frames carried over)."""
    return subsampling.chunk_input_frames(int(state.chunk_size), first=state.sub_cache.shape[1] == 0)


@dataclass(frozen=True)
class MinRNNConfig:
    in_features: int = 80  # fbank bins
    d_model: int = 256  # block width
    num_layers: int = 6  # minRNN blocks
    expansion: float = 1.5  # recurrent state width = expansion * d_model
    cell: str = "gru"  # gru (minGRU) | lstm (minLSTM)
    ff_mult: int = 2  # feed-forward hidden = ff_mult * d_model
    dropout: float = 0.1
    subsampling_channels: int = 64
    scan_chunk: int = 64  # frames per parallel-scan block


class MinRNNEncoder(Unchunked, NoStreamingExport, nn.Module):
    """Conv2d subsampling (4x) + minGRU/minLSTM blocks; causal after the subsampling.

    forward(x[B, T, F], x_lens[B]) -> (y[B, T', d_model], y_lens[B]).
    State for frame-by-frame use: h [num_layers, B, hidden].
    """

    def __init__(self, **kwargs):
        super().__init__()
        self.config = c = MinRNNConfig(**kwargs)
        self.hidden = int(round(c.expansion * c.d_model))
        self.subsampling = Conv2dSubsampling4(c.in_features, c.d_model, c.subsampling_channels)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            MinRNNBlock(c.d_model, self.hidden, c.cell, c.ff_mult, c.dropout, c.scan_chunk) for _ in range(c.num_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.output_dim = c.d_model
        self.subsampling_factor = 4

    def zero_hidden(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(len(self.layers), batch_size, self.hidden, device=device)

    @property
    def streams(self) -> bool:
        """Causal after the subsampling: chunked inference equals forward()."""
        return True

    def init_state(
        self, batch_size: int, chunk_size: int, left_context: int = -1, device: torch.device | str = "cpu"
    ) -> RecurrentState:
        """Streaming state: no carried feature frames, zero hidden states. The recurrence sees all
        the past, so left_context is ignored."""
        check_streaming_args(chunk_size, left_context)
        h = self.zero_hidden(batch_size, device)
        return RecurrentState(
            torch.zeros(batch_size, 0, self.config.in_features, device=device), h, h.clone(), torch.tensor(chunk_size)
        )

    def chunk_input_frames(self, state: RecurrentState) -> int:
        return recurrent_chunk_input_frames(self.subsampling, state)

    def forward_chunk(
        self, x: torch.Tensor, x_lens: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, torch.Tensor, RecurrentState]:
        """The next feature frames of each stream -> (y[B, T', D], y_lens[B], next state).

        Runs the frames one at a time (the streaming path); the outputs equal forward()'s.
        """
        y, lens, sub_cache = self.subsampling.forward_chunk(x, x_lens, state.sub_cache)
        y, h = self.recurrent(y, lens, state.h, step_by_step=True)
        return y, lens, RecurrentState(sub_cache, h, state.c, state.chunk_size)

    def recurrent(
        self, y: torch.Tensor, lens: torch.Tensor, state: torch.Tensor | None = None, step_by_step: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks over subsampled frames y[B, T', d_model] -> (out[B, T', d_model], state).

        step_by_step=False uses the parallel scan; True runs one frame at a time as
        streaming does. Padded frames leave the state unchanged and give zeros.
        """
        if state is None:
            state = self.zero_hidden(y.shape[0], y.device)
        valid = padding_mask(lens, y.shape[1])
        new_state = []
        for i, layer in enumerate(self.layers):
            if not step_by_step:
                y, h = layer(y, valid, state[i])
            else:
                h, outs = state[i], []
                for t in range(y.shape[1]):
                    y_t, h_new = layer.step(y[:, t], h)
                    h = torch.where(valid[:, t, None], h_new, h)
                    outs.append(y_t)
                y = torch.stack(outs, dim=1) if outs else y
            new_state.append(h)
        y = self.norm(y).masked_fill(~valid[..., None], 0.0)
        return y, torch.stack(new_state) if new_state else state

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, chunk_size: int | None = None, left_context: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """chunk_size / left_context: ignored (the Encoder signature; causal by construction)."""
        y, lens = self.subsampling(x, x_lens)
        y, _ = self.recurrent(self.drop(y), lens)
        return y, lens


@dataclass(frozen=True)
class LSTMConfig:
    in_features: int = 80  # fbank bins
    d_model: int = 256  # subsampling output and encoder output width
    hidden: int = 320  # LSTM cells per direction
    num_layers: int = 3
    bidirectional: bool = False  # False: causal after the subsampling (streamable)
    dropout: float = 0.1  # between LSTM layers and on the output
    subsampling_channels: int = 64


class LSTMEncoder(Unchunked, NoStreamingExport, nn.Module):
    """Conv2d subsampling (4x) + an (optionally bidirectional) LSTM stack + projection.

    forward(x[B, T, F], x_lens[B]) -> (y[B, T', d_model], y_lens[B]). Sequences are
    packed, so padding never reaches the recurrence (in either direction).
    """

    def __init__(self, **kwargs):
        super().__init__()
        self.config = c = LSTMConfig(**kwargs)
        self.subsampling = Conv2dSubsampling4(c.in_features, c.d_model, c.subsampling_channels)
        self.lstm = nn.LSTM(
            c.d_model,
            c.hidden,
            c.num_layers,
            batch_first=True,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        self.proj = nn.Linear(c.hidden * (2 if c.bidirectional else 1), c.d_model)
        self.norm = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.output_dim = c.d_model
        self.subsampling_factor = 4

    @property
    def streams(self) -> bool:
        """A unidirectional LSTM streams; a bidirectional one reads the future."""
        return not self.config.bidirectional

    def init_state(
        self, batch_size: int, chunk_size: int, left_context: int = -1, device: torch.device | str = "cpu"
    ) -> RecurrentState:
        """Streaming state (unidirectional only): no carried feature frames, zero (h, c);
        left_context is ignored (the recurrence sees all the past)."""
        c = self.config
        if c.bidirectional:
            raise ValueError("a bidirectional LSTM encoder reads the future: it cannot stream")
        check_streaming_args(chunk_size, left_context)
        h = torch.zeros(c.num_layers, batch_size, c.hidden, device=device)
        return RecurrentState(
            torch.zeros(batch_size, 0, c.in_features, device=device), h, h.clone(), torch.tensor(chunk_size)
        )

    def chunk_input_frames(self, state: RecurrentState) -> int:
        return recurrent_chunk_input_frames(self.subsampling, state)

    def forward_chunk(
        self, x: torch.Tensor, x_lens: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, torch.Tensor, RecurrentState]:
        """The next feature frames of each stream -> (y[B, T', D], y_lens[B], next state).

        (h, c) carry over; a stream's padded frames leave its state unchanged.
        """
        y, lens, sub_cache = self.subsampling.forward_chunk(x, x_lens, state.sub_cache)
        t = y.shape[1]
        valid = padding_mask(lens, t)
        h, c = state.h, state.c
        outs = []
        for i in range(t):  # frame by frame so that finished streams keep their state
            o, (h_new, c_new) = self.lstm(y[:, i : i + 1], (h, c))
            keep = valid[None, :, i, None]
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            outs.append(o)
        out = torch.cat(outs, dim=1) if outs else y.new_zeros(y.shape[0], 0, self.lstm.hidden_size)
        y = self.norm(self.proj(out))
        return y.masked_fill(~valid[..., None], 0.0), lens, RecurrentState(sub_cache, h, c, state.chunk_size)

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, chunk_size: int | None = None, left_context: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """chunk_size / left_context: ignored (the Encoder signature; no chunk mask)."""
        y, lens = self.subsampling(x, x_lens)
        t = y.shape[1]
        packed = pack_padded_sequence(self.drop(y), lens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
        y = self.norm(self.proj(self.drop(out)))
        return y.masked_fill(~padding_mask(lens, t)[..., None], 0.0), lens

"""Streaming recognition: audio blocks in, growing hypotheses out, for a batch of streams.

`StreamingRecognizer` keeps everything a live stream needs between calls: the audio
samples not yet framed, the feature frames not yet encoded, the encoder's caches
(the StreamingEncoder interface: `init_state` / `chunk_input_frames` / `forward_chunk`) and the
state of the head's search (the Search interface of asr.decoding.search, built by
asr.decoding.registry for the head's kind and the decoding options, through `model.search`).
Each step is exact: fbank frames are cut on the 10 ms hop, the encoder runs whole chunks with the same chunk mask as
`encoder.forward(x, lens, chunk_size, left_context)`, and the searches continue across
chunks, so the final hypothesis equals offline decoding (greedy or beam) of the
chunk-masked encoder output (tests check it for several chunk sizes).

Streams start together and may end at different times (a batch of files); a stream's
last block may be short. Greedy partial hypotheses only grow; a beam search's partial
hypothesis is its current best, which later frames may revise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .options import DecodeOptions
from .search import Hypothesis


@dataclass
class StreamStats:
    """Timing of a streaming run (wall clock, seconds)."""

    chunk_times: list[float] = field(default_factory=list)  # compute per encoder chunk (all streams)
    audio_seconds: float = 0.0  # audio fed, summed over streams
    compute_seconds: float = 0.0  # all processing time

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time per second of audio (one stream's worth: batch counted once)."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0


def _append(
    pending: torch.Tensor, pending_lens: torch.Tensor, new: torch.Tensor, new_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per stream, the valid rows of `new` [B, N, ...] after the valid rows of `pending` [B, P, ...]
    (right-padded with zeros). Returns (rows, lengths[B])."""
    n = pending_lens + new_lens
    out = pending.new_zeros(pending.shape[0], int(n.max()) if len(n) else 0, *pending.shape[2:])
    for b in range(pending.shape[0]):
        k, m = int(pending_lens[b]), int(new_lens[b])
        out[b, :k] = pending[b, :k]
        out[b, k : k + m] = new[b, :m]
    return out, n


class StreamingRecognizer:
    """Decode a batch of audio streams chunk by chunk.

    Args:
        model: an ASRModel whose encoder streams (`encoder.streams`: causal Conformer,
            minGRU/minLSTM, unidirectional LSTM).
        chunk_size: encoder frames per chunk (the Conformer's attention chunk; 8 = 320 ms
            at 40 ms frames). left_context: encoder frames of attention left context (-1 = all).
        options: DecodeOptions (default: the model's); overrides: fields to change, e.g.
            method="beam", beam=4, head="ctc", max_symbols=1 (None keeps the option).
    """

    def __init__(
        self, model, chunk_size: int = 8, left_context: int = 64, options: DecodeOptions | None = None, **overrides
    ):
        enc = model.encoder
        if not enc.streams:
            raise ValueError(
                f"this {type(enc).__name__} reads future frames (a Conformer trained without a causal "
                "conv, encoder.causal: false, or a bidirectional LSTM), so chunked inference would not "
                "match it; train a streaming config, e.g. model=conformer_ctc_streaming"
            )
        self.model = model.eval()
        self.options = model.decode_options_with(options, **overrides)
        self.head_name = model.decode_head(self.options)
        self.head = model.heads[self.head_name]
        self.search = model.search(self.options)
        self.chunk_size, self.left_context = chunk_size, left_context
        self.method, self.beam = self.options.method, self.options.beam
        self.frame_seconds = model.frame_seconds
        self.batch_size = 0

    @property
    def algorithmic_latency(self) -> float:
        """Seconds from a sample's arrival to when the chunk holding it can be decoded, at worst:
        the chunk, plus the subsampling's look-ahead (3 feature frames) and the fbank window
        beyond its hop."""
        o = self.model.fbank.opts
        return (
            self.chunk_size * self.frame_seconds + (3 * o.frame_shift_ms + o.frame_length_ms - o.frame_shift_ms) / 1000
        )

    @torch.no_grad()
    def start(self, batch_size: int) -> None:
        """Begin `batch_size` new streams."""
        m, dev = self.model, next(self.model.parameters()).device
        self.batch_size, self.device = batch_size, dev
        self.samples = torch.zeros(batch_size, 0, device=dev)  # audio not yet framed
        self.sample_lens = torch.zeros(batch_size, dtype=torch.long)
        self.feats = torch.zeros(batch_size, 0, m.fbank.opts.num_mel_bins, device=dev)  # frames not yet encoded
        self.feat_lens = torch.zeros(batch_size, dtype=torch.long)
        self.enc_state = m.encoder.init_state(batch_size, self.chunk_size, self.left_context, dev)
        self.search_state = self.search.init(batch_size, dev)
        self.final_seen = torch.zeros(batch_size, dtype=torch.bool)  # the stream's audio has ended
        self.ended = torch.zeros(batch_size, dtype=torch.bool)  # ... and all its frames are decoded
        self.stats = StreamStats()

    @torch.no_grad()
    def accept(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, final: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Feed the next audio block of each stream and decode what it completes.

        Args:
            audio: [B, S] samples at 16 kHz (zero padded). audio_lens: [B] valid samples.
            final: [B] bool, True for streams whose audio ends with this block (their
                remaining frames are decoded now).
        Returns: the token ids so far per stream.
        """
        t0 = time.perf_counter()
        m = self.model
        final = torch.zeros(self.batch_size, dtype=torch.bool) if final is None else final.cpu()
        self.stats.audio_seconds += float(audio_lens.sum()) / m.fbank.opts.sample_rate
        self._add_samples(audio.to(self.device), audio_lens.cpu())
        self._frame()
        self.final_seen |= final
        self._encode()
        self.stats.compute_seconds += time.perf_counter() - t0
        return self.hypotheses()

    def results(self) -> list[Hypothesis]:
        """Hypotheses so far per stream, with scores (beam: the n-best; its best may still change)."""
        return self.search.hypotheses(self.search_state)

    def hypotheses(self) -> list[list[int]]:
        """Token ids so far per stream (for beam search: the current best hypothesis)."""
        return [h.tokens for h in self.results()]

    def texts(self) -> list[str]:
        return [self.model.tokenizer.decode(t) for t in self.hypotheses()]

    # -- steps ------------------------------------------------------------------------
    def _add_samples(self, audio: torch.Tensor, lens: torch.Tensor) -> None:
        """Append each stream's valid samples after its pending ones (right-padded)."""
        self.samples, self.sample_lens = _append(self.samples, self.sample_lens, audio, lens)

    def _frame(self) -> None:
        """Turn complete 25 ms windows into normalized fbank frames; keep the rest of the samples."""
        m, o = self.model, self.model.fbank.opts
        if self.samples.shape[1] < o.win_length:  # not one whole window yet
            return
        feats, flens = m.fbank(self.samples, self.sample_lens.to(self.device))
        feats = m.normalizer(feats, flens)
        flens = flens.cpu()
        used = flens * o.hop_length  # samples no later frame needs (frames start every hop)
        keep = (self.sample_lens - used).clamp(min=0)
        new_samples = torch.zeros(self.batch_size, int(keep.max()) if len(keep) else 0, device=self.device)
        for b in range(self.batch_size):
            new_samples[b, : int(keep[b])] = self.samples[b, int(used[b]) : int(self.sample_lens[b])]
        self.samples, self.sample_lens = new_samples, keep
        self.feats, self.feat_lens = _append(self.feats, self.feat_lens, feats, flens)

    def _encode(self) -> None:
        """Run the encoder on every whole chunk pending, and on the last partial chunk of ended audio.

        All streams go through one chunk index per call (the encoder state keeps one position for
        the batch), so a stream whose audio ended waits with its partial chunk until the streams
        still running have their next whole chunk, or have ended too.
        """
        enc = self.model.encoder
        while True:
            done = ~self.ended & self.final_seen & (self.feat_lens == 0)
            self.ended |= done
            running = ~self.ended
            need = enc.chunk_input_frames(self.enc_state)
            ready = running & (self.feat_lens >= need)
            flush = running & self.final_seen & ~ready
            waiting = running & ~ready & ~flush
            if not bool((ready | flush).any()) or bool(waiting.any()):
                return
            t0 = time.perf_counter()
            x = self.feats[:, :need]
            if x.shape[1] < need:
                x = torch.cat([x, x.new_zeros(self.batch_size, need - x.shape[1], x.shape[2])], dim=1)
            x_lens = torch.where(ready, torch.tensor(need), torch.where(flush, self.feat_lens, 0))
            y, y_lens, self.enc_state = enc.forward_chunk(x, x_lens.to(self.device), self.enc_state)
            last = (ready | flush) & self.final_seen & (self.feat_lens <= x_lens)  # no frames after this chunk
            self.search_state = self.search.advance(self.search_state, y, y_lens, last.to(y.device))
            self.feats = self.feats[:, need:]
            self.feat_lens = (self.feat_lens - x_lens).clamp(min=0)
            self.ended |= flush
            self.stats.chunk_times.append(time.perf_counter() - t0)


def stream_decode(
    recognizer: StreamingRecognizer, sources: list, block_samples: int | None = None, on_partial=None
) -> list[list[int]]:
    """Stream a batch of sources through the recognizer, one block of each per step.

    Args:
        sources: per stream, a waveform [S] (cut into blocks of block_samples) or an iterator of
            blocks (e.g. asr.data.audio.audio_blocks, as a live source delivers them).
        on_partial(step, token lists): called after every step.
    Returns: the final token ids per stream.
    """
    iters = [iter(s.split(block_samples)) if isinstance(s, torch.Tensor) else iter(s) for s in sources]
    b = len(iters)
    nxt = [next(it, None) for it in iters]  # one block of look-ahead tells which block is the last
    recognizer.start(b)
    step = 0
    while any(x is not None for x in nxt):
        cur = nxt
        nxt = [next(it, None) if x is not None else None for it, x in zip(iters, cur)]
        lens = torch.tensor([0 if x is None else len(x) for x in cur])
        block = torch.zeros(b, int(lens.max()))
        for i, x in enumerate(cur):
            if x is not None:
                block[i, : len(x)] = x
        final = torch.tensor([x is not None and n is None for x, n in zip(cur, nxt)])
        hyps = recognizer.accept(block, lens, final)
        if on_partial is not None:
            on_partial(step, hyps)
        step += 1
    return recognizer.hypotheses()

"""`asr stream`: stream-decode files or a split chunk by chunk, with partial hypotheses and timing.

Files are read block by block (one chunk of audio per block, as a live source delivers it)
and decoded by `StreamingRecognizer` (asr.decoding.streaming) in batches of streams. This
module holds the command's logic (checks, batching, partials, statistics); cli.py only
parses arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .data.audio import SAMPLE_RATE, AudioError, audio_blocks
from .decoding import DecodeOptions
from .decoding.streaming import StreamingRecognizer, stream_decode
from .decoding.timestamps import Transcript
from .model import ASRModel
from .problems import Problems


@dataclass(frozen=True)
class StreamTiming:
    """Streaming geometry in encoder frames, from durations in ms (validated once)."""

    chunk_ms: float  # audio per chunk (and per block read from a file)
    left_context_ms: float  # attention left context, -1 = unlimited
    chunk_frames: int
    left_frames: int  # -1 = unlimited

    @classmethod
    def from_ms(cls, model: ASRModel, chunk_ms: float, left_context_ms: float) -> StreamTiming:
        frame_ms = model.fbank.opts.frame_shift_ms * model.encoder.subsampling_factor
        if chunk_ms <= 0 or chunk_ms % frame_ms or (left_context_ms >= 0 and left_context_ms % frame_ms):
            raise ValueError(
                f"chunk and left context must be positive multiples of the {frame_ms:g} ms encoder "
                f"frame (left context -1: unlimited); got {chunk_ms:g} ms and {left_context_ms:g} ms"
            )
        left = -1 if left_context_ms < 0 else int(left_context_ms // frame_ms)
        return cls(chunk_ms, left_context_ms, int(chunk_ms // frame_ms), left)

    @property
    def block_samples(self) -> int:
        return int(SAMPLE_RATE * self.chunk_ms / 1000)


@dataclass
class StreamReport:
    """What a streaming run produced: final transcripts (text, words with times), skipped input
    and timing."""

    hyps: dict[str, Transcript] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)
    chunk_times: list[float] = field(default_factory=list)  # seconds per encoder chunk (all streams of a batch)
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0

    @property
    def rtf(self) -> float:
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def summary(self, rec: StreamingRecognizer, timing: StreamTiming, batch_size: int) -> str:
        ms = sorted(1000 * t for t in self.chunk_times) or [0.0]
        search = "greedy search" if rec.method == "greedy" else f"{rec.method} search (beam {rec.beam})"
        left = "unlimited" if timing.left_frames < 0 else f"{timing.left_context_ms:g} ms ({timing.left_frames} frames)"
        return (
            f"{search} with the {rec.head_name} head; chunk {timing.chunk_ms:g} ms ({timing.chunk_frames} frames), "
            f"left context {left}, batches of up to {batch_size} streams, {torch.get_num_threads()} threads\n"
            f"algorithmic latency {1000 * rec.algorithmic_latency:.0f} ms; compute per chunk "
            f"{sum(ms) / len(ms):.1f} ms mean, {ms[int(0.95 * (len(ms) - 1))]:.1f} ms p95 (all streams of a "
            f"batch); RTF {self.rtf:.4f} over {self.audio_seconds:.1f} s of audio"
        )


def guarded_blocks(
    uid: str, path: str, block_samples: int, problems: Problems, failed: set[str]
) -> Iterator[torch.Tensor]:
    """audio_blocks that end the stream, instead of the batch, when the file fails midway
    (truncated, NaN/Inf in a block): the failure is counted and `uid` added to `failed`."""
    try:
        yield from audio_blocks(path, block_samples)
    except AudioError as e:
        problems.add(e.category, f"{e}; stream {uid} stopped, its hypothesis dropped")
        failed.add(uid)


PartialCallback = Callable[[list[tuple[str, str]], float, list[str]], None]


def stream_items(
    model: ASRModel,
    items: list[tuple[str, str]],
    timing: StreamTiming,
    options: DecodeOptions | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    on_partial: PartialCallback | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[StreamReport, StreamingRecognizer]:
    """Stream (utt_id, path) items in batches of `batch_size` streams.

    on_partial(batch items, seconds streamed, texts so far) runs after every block;
    on_batch(utterances done) after every batch. A stream whose file fails midway is stopped,
    counted in the report's problems and left out of its hypotheses; the others go on.
    Returns the report and the recognizer (for its settings: head, method, latency).
    """
    model = model.to(device).eval()
    rec = StreamingRecognizer(model, timing.chunk_frames, timing.left_frames, options)
    report = StreamReport()
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]

        def partial(step: int, token_lists: list[list[int]], batch=batch) -> None:
            if on_partial is not None:
                on_partial(batch, (step + 1) * timing.chunk_ms / 1000, [model.tokenizer.decode(t) for t in token_lists])

        failed: set[str] = set()
        sources = [guarded_blocks(uid, path, timing.block_samples, report.problems, failed) for uid, path in batch]
        stream_decode(rec, sources, on_partial=partial)
        for (uid, _), hyp in zip(batch, rec.results()):
            if uid not in failed:
                report.hyps[uid] = model.transcript(hyp, fusion=model.fusion(rec.options))
        report.chunk_times += rec.stats.chunk_times
        report.audio_seconds += rec.stats.audio_seconds
        report.compute_seconds += rec.stats.compute_seconds
        if on_batch is not None:
            on_batch(len(report.hyps))
    return report, rec

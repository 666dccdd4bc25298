"""Long-form transcription: one file of any length decoded with bounded memory.

The whole waveform is never loaded (asr.data.audio.audio_blocks reads the file block by block).
The file is cut at pauses (asr.decoding.endpoint: `LongFormOptions.pause_ms` of frames
`pause_db` below the running speech level): each segment starts on the 10 ms frame where speech
resumes and decodes from a fresh start, the pause going with the segment before. A model
trained on isolated sentences loses the first words of a sentence that follows another in one
decoding pass, or that starts after a long silence; cut this way, each sentence decodes as
it would alone. Two ways, chosen by the encoder:

- streaming: a model whose encoder streams (`encoder.streams`) gets the file's blocks through
  `StreamingRecognizer` with a fixed attention left context (default 320 ms chunks and 2560 ms
  of left context: `asr stream`'s defaults, one of the pairs the shared streaming configs train
  with, conf/model/encoder/conformer_streaming.yaml); an endpoint finishes the stream and starts
  a new one. The encoder's caches and the search's state are all that grows: memory is that of
  one chunk plus the hypothesis's tokens.
- windows: other models (or `LongFormOptions.windowed`) decode one segment at a time with
  `model.decode`. Audio without a pause for a whole window (default 20 s) is decoded in
  overlapping windows (4 s shared by neighbours); such a boundary is cut at a word start that
  both windows emitted on (nearly) the same frame, close to the middle of their overlap, so
  that no word is dropped or doubled and each side keeps the words furthest from its edges.
  Without such a word (silence, or the windows disagree there) the cut falls on the middle
  frame of the overlap, token by token (counted in `LongFormStats.token_cuts`).

Either way the result is one hypothesis over the file, with token frames counted from the
file's start, and `model.transcript` makes its words: word times are from the file start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .data.audio import SAMPLE_RATE, audio_blocks, audio_seconds
from .decoding import DecodeOptions, Hypothesis
from .decoding.endpoint import FRAME_SAMPLES, Endpointer
from .decoding.streaming import StreamingRecognizer, stream_decode
from .decoding.timestamps import WORD_START, Transcript
from .model import ASRModel
from .stream import StreamTiming


@dataclass(frozen=True)
class LongFormOptions:
    """How long files are decoded (validated once, here)."""

    min_seconds: float = 60.0  # `transcribe_items`: files longer than this decode long-form
    window_seconds: float = 20.0  # windowed path: audio per window
    overlap_seconds: float = 4.0  # windowed path: audio two neighbouring windows share
    chunk_ms: float = 320.0  # streaming path: encoder chunk
    left_context_ms: float = 2560.0  # streaming path: attention left context (finite: bounded caches)
    windowed: bool = False  # decode windows even when the encoder streams
    match_frames: int = 2  # a word start both windows emit within this many frames is one word
    # pauses (asr.decoding.endpoint): segments end where the audio is quiet, each decoded from a
    # fresh start; 0 = fixed windows / one stream. 150 ms: the espeak test sentences end in
    # 160-310 ms of silence, their pauses between words last <= 80 ms
    pause_ms: float = 150.0
    pause_db: float = 30.0  # quiet = this far below the speech level
    lead_ms: float = 0.0  # a segment starts this much of its pause before the speech resumes

    def __post_init__(self) -> None:
        if self.min_seconds < 0:
            raise ValueError(f"long-form min_seconds must be >= 0, not {self.min_seconds}")
        if self.overlap_seconds < 0 or self.window_seconds < 2 * self.overlap_seconds or self.window_seconds <= 0:
            # overlap <= half a window: each window's own region is at least its overlap, and a
            # window is one hop-sized block plus the start of the next (two blocks in memory)
            raise ValueError(
                f"long-form windows need 0 <= overlap <= window / 2 and window > 0; got window "
                f"{self.window_seconds:g} s, overlap {self.overlap_seconds:g} s"
            )
        if self.left_context_ms < 0:
            raise ValueError("long-form streaming needs a finite left context (its caches grow otherwise)")
        if self.pause_ms < 0 or self.pause_db <= 0:
            raise ValueError(
                f"pauses need pause_ms >= 0 and pause_db > 0; got {self.pause_ms:g} ms, {self.pause_db:g} dB"
            )
        if not 0 <= self.lead_ms <= self.pause_ms:
            raise ValueError(f"lead_ms must be in [0, pause_ms = {self.pause_ms:g}], not {self.lead_ms:g}")
        if self.match_frames < 0:
            raise ValueError(f"match_frames must be >= 0, not {self.match_frames}")

    def endpointer(self) -> Endpointer | None:
        """The pause finder these options describe (None with pause_ms 0: no pauses)."""
        if not self.pause_ms:
            return None
        return Endpointer(round(self.pause_ms / 10), self.pause_db, round(self.lead_ms / 10))


@dataclass
class LongFormStats:
    """What decoding one file did."""

    path: str = "windowed"  # "streaming" or "windowed"
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    windows: int = 0  # windowed path: windows decoded
    word_cuts: int = 0  # boundaries cut at a word start both windows agree on
    token_cuts: int = 0  # boundaries cut at the overlap's middle frame (no agreed word start)
    pause_cuts: int = 0  # segment ends at a pause (windowed) or endpoints (streaming), no overlap

    @property
    def rtfx(self) -> float:
        """Seconds of audio per second of compute."""
        return self.audio_seconds / self.compute_seconds if self.compute_seconds else 0.0


@dataclass(frozen=True)
class Windows:
    """Window geometry in encoder frames. Window k starts at frame k * hop and spans `window`
    frames; the boundary between windows k - 1 and k is frame k * hop + overlap // 2, the middle
    of their overlap."""

    window: int
    overlap: int

    @classmethod
    def from_options(cls, options: LongFormOptions, frame_seconds: float) -> Windows:
        window = max(1, round(options.window_seconds / frame_seconds))
        return cls(window, min(round(options.overlap_seconds / frame_seconds), window // 2))

    @property
    def hop(self) -> int:
        return self.window - self.overlap

    def boundary(self, k: int) -> int:
        """Frame where window k's own region starts (k >= 1)."""
        return k * self.hop + self.overlap // 2


@dataclass
class _Tokens:
    """Tokens with their frames (counted from the file start) and, where the search gives them,
    durations and confidences: the pieces a merged hypothesis is made of."""

    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    durations: list[int] | None = field(default_factory=list)
    confidence: list[float] | None = field(default_factory=list)
    score: float = 0.0

    @classmethod
    def of(cls, hyp: Hypothesis, offset: int) -> _Tokens:
        if hyp.frames is None:
            raise ValueError("long-form decoding needs token times: use greedy, beam or attention_rescoring")
        return cls(
            list(hyp.tokens),
            [offset + f for f in hyp.frames],
            None if hyp.durations is None else list(hyp.durations),
            None if hyp.confidence is None else list(hyp.confidence),
            hyp.score,
        )

    def cut(self, start: int, end: int) -> _Tokens:
        s = slice(start, end)
        return _Tokens(
            self.tokens[s],
            self.frames[s],
            None if self.durations is None else self.durations[s],
            None if self.confidence is None else self.confidence[s],
            self.score,
        )

    def extend(self, other: _Tokens) -> None:
        self.tokens += other.tokens
        self.frames += other.frames
        self.durations = None if self.durations is None or other.durations is None else self.durations + other.durations
        self.confidence = (
            None if self.confidence is None or other.confidence is None else self.confidence + other.confidence
        )
        self.score += other.score

    def hypothesis(self) -> Hypothesis:
        return Hypothesis(self.tokens, self.score, [], self.frames, self.durations, self.confidence)


class WindowMerger:
    """Joins the hypotheses of consecutive overlapping windows into one (see the module doc).

    Args:
        windows: the geometry (frames).
        word_start: whether a token id starts a word (sentencepiece's "▁" pieces).
        match_frames: how far apart (frames) the two windows' emissions of one word start may be.
    """

    def __init__(self, windows: Windows, word_start: Callable[[int], bool], match_frames: int = 2):
        self.windows, self.word_start, self.match_frames = windows, word_start, match_frames
        self.done = _Tokens()
        self.pending: _Tokens | None = None  # the last window's tokens, its end not yet cut
        self.k = 0  # windows added
        self.word_cuts = self.token_cuts = 0

    def add(self, hyp: Hypothesis) -> None:
        """The next window's hypothesis (frames counted from the window's first frame)."""
        self.add_at(hyp, self.k * self.windows.hop, self.windows.boundary(self.k) if self.k else None)

    def add_at(self, hyp: Hypothesis, offset: int, boundary: int | None) -> None:
        """The next segment's hypothesis, its frames counted from frame `offset` of the file.
        boundary: the middle frame of its overlap with the previous segment, or None where the
        previous one ended at a pause and this one starts there (nothing shared: kept whole)."""
        new = _Tokens.of(hyp, offset)
        if self.pending is not None and boundary is not None:
            i, j = self._cut(self.pending, new, boundary)
            self.done.extend(self.pending.cut(0, i))
            new = new.cut(j, len(new.tokens))
        elif self.pending is not None:
            self.done.extend(self.pending)
        self.pending = new
        self.k += 1

    def result(self) -> Hypothesis:
        """The merged hypothesis, frames counted from the first window's first frame."""
        if self.pending is not None:
            self.done.extend(self.pending)
            self.pending = None
        return self.done.hypothesis()

    def _words(self, t: _Tokens, lo: int, hi: int) -> dict[int, tuple[int, tuple[int, ...]]]:
        """{index: (frame, the word's token ids)} of the word starts of `t` on frames [lo, hi)."""
        starts = [i for i, tok in enumerate(t.tokens) if self.word_start(tok)] + [len(t.tokens)]
        return {
            i: (t.frames[i], tuple(t.tokens[i:nxt])) for i, nxt in zip(starts, starts[1:]) if lo <= t.frames[i] < hi
        }

    def _cut(self, a: _Tokens, b: _Tokens, boundary: int) -> tuple[int, int]:
        """(i, j): keep a's tokens before i and b's from j on. The cut is at the word start
        nearest the boundary that both emit, the same word within match_frames of each other."""
        half = self.windows.overlap // 2
        lo, hi = boundary - half, boundary + half  # the overlap, where both windows have frames
        in_b = self._words(b, lo, hi)
        best: tuple[int, int, int] | None = None  # (distance to boundary, i, j)
        for i, (fa, word) in self._words(a, lo, hi).items():
            for j, (fb, word_b) in in_b.items():
                if word_b == word and abs(fa - fb) <= self.match_frames:
                    d = abs(fa - boundary)
                    if best is None or d < best[0]:
                        best = (d, i, j)
        if best is not None:
            self.word_cuts += 1
            return best[1], best[2]
        self.token_cuts += 1  # silence around the boundary, or the windows disagree: cut by frame
        return sum(f < boundary for f in a.frames), sum(f < boundary for f in b.frames)


def _blocks_with_progress(blocks: Iterator[torch.Tensor], bar: tqdm) -> Iterator[torch.Tensor]:
    for block in blocks:
        bar.update(len(block) / SAMPLE_RATE)
        yield block


def _segments(
    blocks: Iterator[torch.Tensor], windows: Windows, frame: int, lf: LongFormOptions, stats: LongFormStats
) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """The windowed path's segments: (start sample, samples, whether it overlaps the previous one).

    A segment ends where speech resumes after a pause (asr.decoding.endpoint), and the next one
    starts there, nothing shared; a stretch of a whole window without a pause (or any, with
    pause_ms 0) is one window, and the next starts `windows.overlap` frames before its end.
    Window starts are whole encoder frames (`frame` samples); a start at a pause is the 10 ms
    frame where speech resumes, not rounded to an encoder frame: 40 ms more leading silence
    costs this model the first word of some sentences (measured: 14.6% WER instead of 9.7% on
    the first minute of the test split), so the token frames of such a segment are offset by the
    nearest encoder frame (word times within half a frame, 20 ms)."""
    window, overlap = windows.window * frame, windows.overlap * frame
    endpointer = lf.endpointer()
    speech: list[int] = []  # segment starts found and not yet used (samples from the file start)
    buf, start, shared, ended = torch.zeros(0), 0, False, False
    while True:
        while len(buf) <= window and not ended:
            block = next(blocks, None)
            ended = block is None
            if block is not None:
                buf = torch.cat([buf, block])
                speech += endpointer.accept(block) if endpointer else []
        speech = [s for s in speech if s > start]
        if speech and speech[0] - start <= window:
            cut = speech.pop(0) - start
            stats.pause_cuts += 1
            yield start, buf[:cut], shared
            buf, start, shared = buf[cut:], start + cut, False
        elif len(buf) <= window:  # the last segment, unless the previous window held all of it
            if len(buf) and not (shared and len(buf) <= overlap):
                yield start, buf, shared
            return
        else:
            yield start, buf[:window], shared
            buf, start, shared = buf[window - overlap :], start + window - overlap, True


@torch.no_grad()
def transcribe_long(
    model: ASRModel,
    path: str,
    options: DecodeOptions | None = None,
    long_form: LongFormOptions | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[Transcript, LongFormStats]:
    """Decode one audio file of any length with bounded memory.

    Returns its transcript (text; words with start and end seconds from the file start, and
    confidences) and what decoding did. Raises AudioError naming the file when it cannot be read.

    options: decoding options (default: the checkpoint's). long_form: window and chunk geometry,
    pauses, and whether to force windows on a streaming model (default LongFormOptions()).
    """
    lf = long_form or LongFormOptions()
    model = model.to(device).eval()
    opts = model.decode_options_with(options)
    streaming = model.encoder.streams and not lf.windowed
    stats = LongFormStats("streaming" if streaming else "windowed", audio_seconds(path))
    bar = tqdm(total=round(stats.audio_seconds, 1), desc=f"{path} ({stats.path})", unit="s", disable=not progress)
    t0 = time.perf_counter()
    try:
        if streaming:
            hyp = _decode_stream(model, path, opts, lf, stats, bar)
        else:
            hyp = _decode_windows(model, path, opts, lf, stats, bar, device)
        bar.update(bar.total - bar.n)  # the last block or window may be counted short
    finally:
        bar.close()
    stats.compute_seconds = time.perf_counter() - t0
    return model.transcript(hyp), stats


def _decode_stream(
    model: ASRModel, path: str, opts: DecodeOptions, lf: LongFormOptions, stats: LongFormStats, bar: tqdm
) -> Hypothesis:
    """The streaming path: blocks through one StreamingRecognizer; with pauses (pause_ms > 0) an
    endpoint finishes the stream and the audio after it starts a new one (fresh encoder caches and
    search), each stream's token frames offset by its start."""
    timing = StreamTiming.from_ms(model, lf.chunk_ms, lf.left_context_ms)
    rec = StreamingRecognizer(model, timing.chunk_frames, timing.left_frames, opts)
    blocks = _blocks_with_progress(audio_blocks(path, timing.block_samples), bar)
    if not lf.pause_ms:
        stream_decode(rec, [blocks])
        return rec.results()[0]
    frame = round(model.frame_seconds * SAMPLE_RATE)
    endpointer = lf.endpointer()
    # audio held back from the recognizer: a segment start is never further than this behind
    # the newest sample (its lead, the frame being measured and a partial one), so it is never fed yet
    hold = (endpointer.lead_frames + 4) * FRAME_SAMPLES
    out, pending = _Tokens(), torch.zeros(0)
    fed = start = 0  # samples given to the recognizer; where the current stream starts
    active = False

    def feed(samples: torch.Tensor, final: bool) -> None:
        nonlocal active
        if not active:
            rec.start(1)
            active = True
        rec.accept(samples[None], torch.tensor([len(samples)]), torch.tensor([final]))

    def finish() -> None:
        nonlocal active
        out.extend(_Tokens.of(rec.results()[0], round(start / frame)))
        active = False

    for block in blocks:
        pending = torch.cat([pending, block])
        for cut in endpointer.accept(block):  # the 10 ms frame where speech resumes (see _segments)
            if cut <= start or cut < fed:
                continue
            feed(pending[: cut - fed], final=True)
            finish()
            pending, fed, start = pending[cut - fed :], cut, cut
            stats.pause_cuts += 1
        if len(pending) > hold:
            feed(pending[: len(pending) - hold], final=False)
            fed += len(pending) - hold
            pending = pending[len(pending) - hold :]
    if active or len(pending):
        feed(pending, final=True)
        finish()
    return out.hypothesis()


def _decode_windows(
    model: ASRModel,
    path: str,
    opts: DecodeOptions,
    lf: LongFormOptions,
    stats: LongFormStats,
    bar: tqdm,
    device: str | torch.device,
) -> Hypothesis:
    """The windowed path: one segment at a time through model.decode (see _segments), joined by
    WindowMerger (segments cut at a pause are kept whole; overlapping ones cut at a shared word)."""
    windows = Windows.from_options(lf, model.frame_seconds)
    frame = round(model.frame_seconds * SAMPLE_RATE)
    piece = model.tokenizer.sp.id_to_piece
    merger = WindowMerger(windows, lambda t: piece(t).startswith(WORD_START), lf.match_frames)
    blocks = audio_blocks(path, windows.hop * frame)
    for start, wave, shared in _segments(blocks, windows, frame, lf, stats):
        hyp = model.decode(wave[None].to(device), torch.tensor([len(wave)], device=device), opts)[0]
        boundary = round(start / frame) + windows.overlap // 2 if shared else None
        merger.add_at(hyp, round(start / frame), boundary)
        bar.update(min(len(wave) / SAMPLE_RATE, bar.total - bar.n))
        stats.windows += 1
    stats.word_cuts, stats.token_cuts = merger.word_cuts, merger.token_cuts
    return merger.result()

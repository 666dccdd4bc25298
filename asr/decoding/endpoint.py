"""Pauses in audio by frame energy: where long-form decoding cuts a file into segments.

A model trained on isolated sentences decodes the start of a sentence badly when the sentence
follows another in the same stream (its encoder caches and search state carry the previous
one), so long-form decoding cuts the file at pauses and decodes each piece from a fresh start,
as production long-form systems do with an energy or VAD endpointer.

Energies are per 10 ms frame of samples, in dB (10 log10 of the mean square). A frame is quiet
when it is `pause_db` below the speech level, a running peak that decays slowly (`DECAY_DB` per
frame), so that a quiet talker later in a file is still measured against their own level.

A segment starts where speech resumes after a pause, not in the pause's middle: a model trained
on isolated sentences (a few ms of silence before the speech) drops the first word after a long
leading silence (measured: half a second of it costs the first word of each of 4 test
sentences), while the silence after a sentence costs nothing and gives its last tokens time to
come out of a streaming search.
"""

from __future__ import annotations

import torch

FRAME_SAMPLES = 160  # 10 ms at 16 kHz
DECAY_DB = 0.02  # streaming speech level: dB per 10 ms frame it falls while nothing louder comes (2 dB/s)
_FLOOR = 1e-10  # -100 dB: digital silence


def frame_energy_db(wave: torch.Tensor) -> torch.Tensor:
    """Samples [S] -> energy in dB of each whole 10 ms frame [S // 160]."""
    n = len(wave) // FRAME_SAMPLES
    return wave[: n * FRAME_SAMPLES].view(n, FRAME_SAMPLES).double().pow(2).mean(1).add(_FLOOR).log10().mul(10)


class Endpointer:
    """Finds pauses in a stream fed block by block: speech after a run of at least `span_frames`
    quiet 10 ms frames (after some speech) is a new segment, reported `lead_frames` frames before
    its first speech frame (at most the pause's length: the lead is taken from the pause).

    Args:
        span_frames: quiet frames (10 ms) that make a pause. pause_db: how far below the running
            speech level a quiet frame is. lead_frames: quiet frames kept before the speech, so
            that an onset softer than pause_db (a fricative's first 10-50 ms) is not cut off.
    """

    def __init__(self, span_frames: int, pause_db: float, lead_frames: int = 0):
        self.span_frames, self.pause_db, self.lead_frames = span_frames, pause_db, lead_frames
        self.rest = torch.zeros(0)  # samples of a frame not yet whole
        self.frames = 0  # whole frames seen
        self.level = -100.0  # running speech level (dB)
        self.quiet = 0  # length of the current run of quiet frames
        self.speech = False  # speech seen: a pause before any is no segment boundary

    def accept(self, samples: torch.Tensor) -> list[int]:
        """The next samples [S]; returns where the segments they start begin (sample indices
        from the stream start: the first speech frame after a pause)."""
        wave = torch.cat([self.rest, samples.to(self.rest.dtype)])
        n = len(wave) // FRAME_SAMPLES
        self.rest = wave[n * FRAME_SAMPLES :]
        starts = []
        for e in frame_energy_db(wave[: n * FRAME_SAMPLES]).tolist():
            self.level = max(e, self.level - DECAY_DB)
            if e < self.level - self.pause_db:
                self.quiet += 1
            else:
                if self.quiet >= self.span_frames and self.speech:
                    starts.append((self.frames - min(self.lead_frames, self.quiet)) * FRAME_SAMPLES)
                self.quiet, self.speech = 0, True
            self.frames += 1
        return starts

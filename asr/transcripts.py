"""Writing transcription results: Kaldi text, JSON lines, CTM and SRT subtitles.

- text: `utt-id TEXT` lines (what `asr score` reads).
- json: one object a line, `{"id", "text", "words": [{"word", "start", "end", "confidence"}]}`
  (seconds, confidence in [0, 1]).
- ctm: `utt-id 1 start duration word confidence` lines (NIST CTM with its confidence column).
- srt: one `utt-id.srt` subtitle file per utterance in the output folder; a cue ends at a pause
  of PAUSE seconds or more, or before it would pass CUE_CHARS characters or CUE_SECONDS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from .decoding.timestamps import Transcript, Word

FORMATS = ("text", "json", "ctm", "srt")
TIMED = ("json", "ctm", "srt")  # formats that need word times
CUE_CHARS, CUE_SECONDS, PAUSE = 42, 5.0, 0.5


def _lines(fmt: str, order: list[str], results: dict[str, Transcript]) -> list[str]:
    out = []
    for uid in order:
        if uid not in results:  # skipped or failed: counted elsewhere
            continue
        r = results[uid]
        if fmt == "text":
            out.append(f"{uid} {r.text}\n")
        elif fmt == "json":
            out.append(json.dumps(r.to_dict(uid), ensure_ascii=False) + "\n")
        else:  # ctm
            out.extend(
                f"{uid} 1 {w.start:.2f} {w.end - w.start:.2f} {w.word} {w.confidence:.4f}\n" for w in r.words or []
            )
    return out


def _clock(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt_cues(words: list[Word]) -> list[tuple[float, float, str]]:
    """Subtitle cues (start, end, text) from timed words."""
    cues: list[list[Word]] = []
    for w in words:
        cur = cues[-1] if cues else None
        if (
            cur is None
            or w.start - cur[-1].end >= PAUSE
            or len(" ".join(x.word for x in cur)) + 1 + len(w.word) > CUE_CHARS
            or w.end - cur[0].start > CUE_SECONDS
        ):
            cues.append([w])
        else:
            cur.append(w)
    return [(c[0].start, c[-1].end, " ".join(x.word for x in c)) for c in cues]


def srt_text(words: list[Word]) -> str:
    return "".join(f"{i}\n{_clock(s)} --> {_clock(e)}\n{text}\n\n" for i, (s, e, text) in enumerate(srt_cues(words), 1))


def write_transcripts(
    results: dict[str, Transcript],
    order: list[str],
    fmt: str = "text",
    out: str | Path | None = None,
    stream: TextIO | None = None,
) -> str:
    """Write results (in `order`) as `fmt` to the file `out` (srt: the folder `out`), or to
    `stream` (default stdout) when out is None. Returns a line saying what was written (for stderr).

    Raises ValueError for an unknown format, srt without an output folder, or a timed format
    for results that have no word times (the search gives none: attention or joint)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt in TIMED and any(r.words is None for r in results.values()):
        raise ValueError(f"--format {fmt} needs word times, which this decoding method does not give")
    if fmt == "srt":
        if out is None:
            raise ValueError("--format srt writes one file per utterance: give the folder with --out")
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        n = 0
        for uid in order:
            if uid in results:
                (folder / f"{uid}.srt").write_text(srt_text(results[uid].words or []), encoding="utf-8")
                n += 1
        return f"wrote {n} subtitle files to {folder}/"
    lines = _lines(fmt, order, results)
    if out is None:
        (stream or sys.stdout).writelines(lines)
        return ""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join(lines), encoding="utf-8")
    return f"wrote {sum(1 for u in order if u in results)} results ({fmt}) to {out}"

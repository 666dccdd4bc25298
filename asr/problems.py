"""Reports of what was wrong with the input: counts per category and the first messages.

Every long job (prepare, train, transcribe, stream, align, score) collects its skipped or
changed input in one `Problems` and prints `summary()` at the end, so nothing is dropped
silently and a job never dies of one bad file.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Problems:
    """Counts and messages of what was wrong, per category."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    max_logged: int = 20  # per category; the rest are counted only

    def add(self, category: str, message: str) -> None:
        self.counts[category] += 1
        if self.counts[category] <= self.max_logged:
            log.warning("%s: %s", category, message)
        elif self.counts[category] == self.max_logged + 1:
            log.warning("%s: more problems of this kind are counted, not logged", category)
        self.examples[category].append(message)

    def summary(self, title: str) -> str:
        if not self.counts:
            return f"{title}: no problems found"
        lines = [f"{title}:"] + [f"  {k:<32} {v}" for k, v in sorted(self.counts.items())]
        return "\n".join(lines)

    def details(self, title: str) -> str:
        """Every message, grouped by category (for reports written to a file)."""
        lines = [f"{title}:"]
        for category in sorted(self.examples):
            lines += [f"  {category}: {m}" for m in self.examples[category]]
        return "\n".join(lines)

    def merge(self, other: Problems) -> None:
        """Add another report's counts and messages to this one."""
        for category, n in other.counts.items():
            self.counts[category] += n
            self.examples[category].extend(other.examples[category])

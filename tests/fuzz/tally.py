"""Counts of what a fuzz run sent and what came back, printed at the end of the run."""

from __future__ import annotations

from collections import Counter

TALLIES: list[Tally] = []
NOTES: list[str] = []


def note(line: str) -> None:
    """A line for the summary at the end of the run."""
    NOTES.append(line)


class Tally:
    """Answers counted by (what was sent, what came back): one line per kind in the summary."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.counts: Counter[tuple[str, str]] = Counter()
        TALLIES.append(self)

    def record(self, kind: str, outcome: object) -> None:
        self.counts[(kind, str(outcome))] += 1

    def count(self, kind: str, outcome: object) -> int:
        return self.counts[(kind, str(outcome))]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        by_kind: dict[str, Counter[str]] = {}
        for (kind, outcome), n in sorted(self.counts.items()):
            by_kind.setdefault(kind, Counter())[outcome] += n
        lines = [f"{self.title}: {self.total} cases"]
        for kind, outcomes in by_kind.items():
            answered = ", ".join(f"{outcome} x{n}" for outcome, n in sorted(outcomes.items()))
            lines.append(f"  {kind}: {sum(outcomes.values())} ({answered})")
        return lines

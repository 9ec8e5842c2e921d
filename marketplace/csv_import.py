"""What every CSV import shares: a file refused whole, a row refused with its reason, and the
header check (exactly the documented columns, each once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Problem


class MalformedFile(Problem):
    """The file as a whole cannot be read as the expected CSV; nothing from it is written.
    Each import subclasses it with its own problem code."""

    status = 400
    code = "malformed-file"


@dataclass(frozen=True)
class RowError:
    """A rejected row: its number in the file (the header is row 1), the column and why."""

    row: int
    column: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


@dataclass(frozen=True)
class HeaderProblems:
    unknown: list[str]
    missing: list[str]
    repeated: list[str]

    def __bool__(self) -> bool:
        return bool(self.unknown or self.missing or self.repeated)

    def describe(self) -> str:
        parts = []
        if self.unknown:
            parts.append("unknown column(s): " + ", ".join(repr(c) for c in self.unknown))
        if self.missing:
            parts.append("missing column(s): " + ", ".join(self.missing))
        if self.repeated:
            parts.append("repeated column(s): " + ", ".join(self.repeated))
        return "; ".join(parts)


def header_problems(columns: Sequence[str], expected: Sequence[str]) -> HeaderProblems:
    return HeaderProblems(
        unknown=[c for c in columns if c not in expected],
        missing=[c for c in expected if c not in columns],
        repeated=sorted({c for c in columns if list(columns).count(c) > 1}),
    )

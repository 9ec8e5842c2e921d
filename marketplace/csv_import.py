"""What every CSV import shares: a file refused whole, a row refused with its reason, the
header check (exactly the documented columns, each once), and reading a file's records with
their row numbers as a spreadsheet shows them."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

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


# --- reading records ----------------------------------------------------------------------------

# What ``errors="surrogateescape"`` decodes a byte that is not UTF-8 to.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class UnreadableCsv(Exception):
    """The file stops being readable CSV at ``row`` (numbered as by ``csv_records``)."""

    def __init__(self, row: int, reason: str):
        super().__init__(row, reason)
        self.row = row
        self.reason = reason


class NotUtf8(UnreadableCsv):
    """Row ``row`` holds a byte that is not UTF-8; ``reason`` is the UTF-8 decoder's."""


class BadCsv(UnreadableCsv):
    """The csv module cannot read row ``row`` (strict quoting); ``reason`` is its message."""


class _NotUtf8Line(Exception):
    def __init__(self, line: str):
        super().__init__(line)
        self.line = line

    @property
    def reason(self) -> str:
        """What the UTF-8 decoder says of the line's bytes."""
        try:
            self.line.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeDecodeError as error:
            return error.reason
        return "not UTF-8"  # not reached: the line has an escaped byte


def _utf8_lines(text: IO[str]) -> Iterator[str]:
    """The lines of ``text`` (decoded with ``errors="surrogateescape"``); a line with a byte
    that is not UTF-8 raises ``_NotUtf8Line`` when the csv reader reaches it. The decoder
    reads ahead in chunks, so the line names the row, not the decoder's position."""
    escaped = _ESCAPED_BYTE.search
    for line in text:
        if escaped(line):
            raise _NotUtf8Line(line)
        yield line


def csv_records(stream: IO[bytes]) -> Generator[tuple[int, list[str]], None, None]:
    """Yield ``(row number, cells)`` for every record of a UTF-8 CSV file (a byte-order mark
    is dropped), the header first. Rows are numbered as a spreadsheet shows them: the header is
    row 1 and each record is one row, blank ones too, however many lines its quoted cells span
    in the file. Raises ``NotUtf8`` naming the row that holds a byte that is not UTF-8, and
    ``BadCsv`` naming the row the csv module cannot read.

    ``stream`` is a buffered binary stream, read as the records are; it is left open (close
    the generator to release it early)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    row = 0  # the last row read: a problem is in row + 1
    try:
        for row, cells in enumerate(csv.reader(_utf8_lines(text), strict=True), start=1):
            yield row, cells
    except _NotUtf8Line as error:
        raise NotUtf8(row + 1, error.reason) from None
    except csv.Error as error:
        raise BadCsv(row + 1, str(error)) from None
    finally:
        text.detach()

"""Purchase-line files (DESIGN §9): reading CSV and JSON in constant memory, and checking
each row.

A file is read row by row from a binary stream: CSV through an incremental UTF-8 decoder and
``csv.reader``; JSON (a list of objects) through an incremental decoder that pulls one object
at a time out of a bounded buffer. A file that cannot be read as a whole (not UTF-8, no
header, unknown or missing columns, invalid JSON) raises ``MalformedFile``; a row that is
readable but wrong yields ``RowError``s naming the row, the column and the reason.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import IO, Any

from .. import csv_import
from ..catalog.gtin import gtin_problem, normalise_gtin
from ..csv_import import RowError

COLUMNS = (
    "po_number",
    "line",
    "order_date",
    "supplier_name",
    "supplier_sku",
    "gtin",
    "description",
    "quantity",
    "units_per_pack",
    "total_price_pence",
)
FORMATS = ("csv", "json")
CHUNK_BYTES = 64 * 1024
MAX_JSON_OBJECT_CHARS = 1024 * 1024
MAX_LINE = 2_147_483_647
# A number cell may have at most this many digits (leading zeros included). The largest value
# allowed is 13 digits long (10**12 pence); a longer string is a mistake, and Python refuses to
# convert strings of more than 4,300 digits at all.
MAX_NUMBER_DIGITS = 20
EARLIEST_ORDER_DATE = date(2000, 1, 1)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class MalformedFile(csv_import.MalformedFile):
    """The file as a whole cannot be read; nothing from it is written."""


@dataclass(frozen=True)
class LongNumber:
    """A JSON integer literal with more than ``MAX_NUMBER_DIGITS`` digits, kept as its length:
    the decoder does not convert it (Python refuses ints of more than 4,300 digits), and the
    row check reports it as a bad value, like any other."""

    digits: int


def _json_int(text: str) -> int | LongNumber:
    digits = len(text.lstrip("-"))
    return LongNumber(digits) if digits > MAX_NUMBER_DIGITS else int(text)


@dataclass(frozen=True)
class ParsedLine:
    row: int
    po_number: str
    line: int
    order_date: date
    supplier_name: str | None
    supplier_sku: str | None
    gtin: str | None
    description: str | None
    quantity: int
    units_per_pack: int | None
    total_price_pence: int


class CountingReader(io.RawIOBase):
    """Wraps a binary stream: counts the bytes read (for a progress bar) and hashes them (for
    idempotency checks)."""

    def __init__(self, raw: IO[bytes], on_progress: Callable[[int], None] | None = None):
        self.raw = raw
        self.bytes_read = 0
        self.sha256 = hashlib.sha256()
        self.on_progress = on_progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._count(data)
        return n

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size) if size is not None and size >= 0 else self.raw.read()
        self._count(data)
        return data

    def _count(self, data: bytes) -> None:
        if data:
            self.bytes_read += len(data)
            self.sha256.update(data)
            if self.on_progress:
                self.on_progress(len(data))

    def drain(self) -> None:
        while self.read(CHUNK_BYTES):
            pass


def detect_format(name: str | None, content_type: str | None = None, head: bytes = b"") -> str:
    """``csv`` or ``json`` from a content type, a file name, or the first byte."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in ("application/json", "text/json"):
        return "json"
    if ctype in ("text/csv", "application/csv"):
        return "csv"
    lowered = (name or "").lower()
    if lowered.endswith(".json"):
        return "json"
    if lowered.endswith(".csv"):
        return "csv"
    return "json" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[") else "csv"


# --- reading ------------------------------------------------------------------------------------


def read_rows(stream: IO[bytes], file_format: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, values)``. CSV rows are numbered as a spreadsheet shows them (the
    header is row 1); JSON rows by their position in the list (the first object is row 1)."""
    if file_format == "csv":
        return _csv_rows(stream)
    if file_format == "json":
        return _json_rows(stream)
    raise MalformedFile(f"Unknown file format {file_format!r}; use csv or json.")


def _not_utf8(reason: str, where: str) -> MalformedFile:
    return MalformedFile(
        f"The file is not UTF-8 text ({where}: {reason}). Save it as UTF-8 and import it again.",
        code="not-utf8",
    )


def _check_columns(names: list[str]) -> None:
    problems = csv_import.header_problems(names, COLUMNS)
    if problems:
        raise MalformedFile(
            f"The header row does not match the purchase import format ({problems.describe()}). "
            "Expected: " + ", ".join(COLUMNS) + ".",
            code="bad-header",
        )


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """CSV records numbered as a spreadsheet shows them (``csv_import.csv_records``): the
    header is row 1 and each record is one row, blank ones too, however many lines its quoted
    cells span in the file."""
    buffered = (
        stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream, CHUNK_BYTES)
    )
    records = csv_import.csv_records(buffered)
    try:
        try:
            _, header = next(records)
        except StopIteration:
            raise MalformedFile(
                "The file is empty: it needs a header row naming the columns.", code="no-header"
            ) from None
        names = [h.strip() for h in header]
        if not any(names):
            raise MalformedFile("The first row is empty: it must be the header.", code="no-header")
        _check_columns(names)
        width = len(names)
        for row, fields in records:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != width:
                yield row, {"__width__": (len(fields), width)}
                continue
            yield row, dict(zip(names, fields, strict=True))
    except csv_import.NotUtf8 as error:
        raise _not_utf8(error.reason, f"row {error.row}") from None
    except csv_import.BadCsv as error:
        raise MalformedFile(
            f"The CSV cannot be read at row {error.row}: {error.reason}.", code="bad-csv"
        ) from None
    finally:
        records.close()


def _json_rows(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    decoder = json.JSONDecoder(parse_int=_json_int)
    incremental = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    buf = ""
    pos = 0
    eof = False
    consumed = 0  # characters before buf[0], for error positions

    def fill() -> bool:
        nonlocal buf, pos, eof, consumed
        if eof:
            return False
        chunk = stream.read(CHUNK_BYTES)
        try:
            text = incremental.decode(chunk or b"", final=not chunk)
        except UnicodeDecodeError as error:
            raise _not_utf8(error.reason, f"near character {consumed + len(buf)}") from None
        if not chunk:
            eof = True
        consumed += pos
        buf = buf[pos:] + text
        pos = 0
        return bool(text) or not eof

    def peek() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    def invalid(reason: str) -> MalformedFile:
        return MalformedFile(
            f"The file is not valid JSON for a purchase import ({reason}, at character "
            f"{consumed + pos}). Expected a list of objects with the keys: {', '.join(COLUMNS)}.",
            code="bad-json",
        )

    if peek() != "[":
        raise (
            invalid("it must be a list: '[' expected")
            if peek()
            else MalformedFile(
                "The file is empty: expected a JSON list of objects.", code="no-header"
            )
        )
    pos += 1
    index = 0
    if peek() == "]":
        pos += 1
    else:
        while True:
            start = peek()
            index += 1
            if start != "{":
                raise invalid(f"element {index} is not an object")
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError:
                    if len(buf) - pos > MAX_JSON_OBJECT_CHARS or not fill():
                        raise invalid(f"element {index} is not a complete JSON object") from None
            pos = end
            unknown = [k for k in obj if k not in COLUMNS]
            if unknown:
                raise MalformedFile(
                    f"Object {index} has unknown key(s): {', '.join(repr(k) for k in unknown)}. "
                    f"The keys are: {', '.join(COLUMNS)}.",
                    code="bad-header",
                )
            yield index, obj
            after = peek()
            if after == ",":
                pos += 1
                continue
            if after == "]":
                pos += 1
                break
            raise invalid("',' or ']' expected after an object")
    if peek() != "":
        raise invalid("nothing may follow the closing ']'")


# --- checking a row ---------------------------------------------------------------------------


def _text(
    value: Any, column: str, limit: int, row: int, errors: list[RowError], required: bool = False
) -> str | None:
    if value is None:
        text = ""
    elif type(value) is str:
        text = value.strip()
    elif type(value) is int:
        text = str(value)
    else:
        errors.append(RowError(row, column, "must be text"))
        return None
    if not text:
        if required:
            errors.append(RowError(row, column, "is required"))
        return None
    if len(text) > limit:
        errors.append(RowError(row, column, f"is longer than {limit} characters"))
        return None
    return text


def _whole(
    value: Any,
    column: str,
    minimum: int,
    maximum: int,
    what: str,
    row: int,
    errors: list[RowError],
    required: bool = False,
) -> int | None:
    if type(value) is int:
        number = value
    elif value is None or type(value) is str:
        text = (value or "").strip()
        if not text:
            if required:
                errors.append(RowError(row, column, "is required"))
            return None
        if not (text.isascii() and text.isdigit()):
            errors.append(
                RowError(row, column, f"must be a whole number of {what}, got {text[:40]!r}")
            )
            return None
        if len(text) > MAX_NUMBER_DIGITS:
            errors.append(_too_long(row, column, what, len(text)))
            return None
        number = int(text)
    elif type(value) is LongNumber:
        errors.append(_too_long(row, column, what, value.digits))
        return None
    else:
        errors.append(RowError(row, column, f"must be a whole number of {what}"))
        return None
    if number < minimum:
        errors.append(RowError(row, column, f"must be at least {minimum}"))
        return None
    if number > maximum:
        errors.append(RowError(row, column, f"must be at most {maximum}"))
        return None
    return number


def _too_long(row: int, column: str, what: str, digits: int) -> RowError:
    return RowError(
        row,
        column,
        f"must be a whole number of {what} of at most {MAX_NUMBER_DIGITS} digits, "
        f"got {digits:,} digits",
    )


def _order_date(value: Any, row: int, errors: list[RowError], today: date) -> date | None:
    raw = _text(value, "order_date", 40, row, errors, required=True)
    if raw is None:
        return None
    if not _DATE.fullmatch(raw):
        errors.append(RowError(row, "order_date", f"must be a date as YYYY-MM-DD, got {raw!r}"))
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        errors.append(RowError(row, "order_date", f"{raw!r} is not a real date"))
        return None
    if day > today:
        errors.append(RowError(row, "order_date", f"{raw} is in the future"))
        return None
    if day < EARLIEST_ORDER_DATE:
        errors.append(
            RowError(row, "order_date", f"{raw} is before {EARLIEST_ORDER_DATE.isoformat()}")
        )
        return None
    return day


@functools.lru_cache(maxsize=65536)
def _checked_gtin(raw: str) -> tuple[str | None, str | None]:
    """(normalised GTIN, None) or (None, problem); a file repeats its GTINs, so cache."""
    problem = gtin_problem(raw)
    return (None, problem) if problem else (normalise_gtin(raw), None)


def _gtin(value: Any, row: int, errors: list[RowError]) -> str | None:
    raw = _text(value, "gtin", 40, row, errors)
    if raw is None:
        return None
    gtin, problem = _checked_gtin(raw)
    if problem:
        errors.append(RowError(row, "gtin", f"{raw[:20]!r} is not a valid GTIN: {problem}"))
    return gtin


def parse_row(
    row: int, values: dict[str, Any], today: date
) -> tuple[ParsedLine | None, list[RowError]]:
    """Check one row; return the line, or the errors (every bad column is reported)."""
    if "__width__" in values:
        got, want = values["__width__"]
        return None, [RowError(row, "*", f"has {got} fields; the header has {want}")]
    errors: list[RowError] = []
    get = values.get
    po_number = _text(get("po_number"), "po_number", 64, row, errors, required=True)
    line = _whole(get("line"), "line", 1, MAX_LINE, "lines", row, errors, required=True)
    order_date = _order_date(get("order_date"), row, errors, today)
    supplier_name = _text(get("supplier_name"), "supplier_name", 200, row, errors)
    supplier_sku = _text(get("supplier_sku"), "supplier_sku", 100, row, errors)
    gtin = _gtin(get("gtin"), row, errors)
    description = _text(get("description"), "description", 500, row, errors)
    quantity = _whole(get("quantity"), "quantity", 1, 10**9, "packs", row, errors, required=True)
    units_per_pack = _whole(get("units_per_pack"), "units_per_pack", 1, 10**6, "units", row, errors)
    total = _whole(
        get("total_price_pence"),
        "total_price_pence",
        1,
        10**12,
        "pence",
        row,
        errors,
        required=True,
    )
    if errors:
        return None, errors
    if not (gtin or supplier_sku or description):
        return None, [
            RowError(
                row,
                "description",
                "nothing identifies the item: give a gtin, a supplier_sku or a description",
            )
        ]
    return (
        ParsedLine(
            row=row,
            po_number=po_number,  # type: ignore[arg-type]
            line=line,  # type: ignore[arg-type]
            order_date=order_date,  # type: ignore[arg-type]
            supplier_name=supplier_name,
            supplier_sku=supplier_sku,
            gtin=gtin,
            description=description,
            quantity=quantity,  # type: ignore[arg-type]
            units_per_pack=units_per_pack,
            total_price_pence=total,  # type: ignore[arg-type]
        ),
        [],
    )

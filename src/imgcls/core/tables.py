"""The one CSV reader and writer of imgcls.

Reading: a user's label CSV, a sample submission, an ``--exclude``/``--relabel`` list and the files a run
keeps (``splits.csv``, ``predictions.csv``...) all go through ``read_table``: UTF-8 with or without a BOM,
the delimiter taken from the header line (comma, semicolon or tab), names and cells stripped of padding, and
a row that does not fit the header refused naming its file and line.

Writing: ``write_csv`` neutralises spreadsheet formulas. A cell a spreadsheet would evaluate (text starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return; a class or file name such as ``=HYPERLINK(...)``)
is written with a leading apostrophe, OWASP's rule; numbers stay as they are. ``unescape_cell`` undoes it,
so a file imgcls wrote reads back to the same values (``read_table(..., ours=True)``).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from imgcls.core.errors import ImgclsError

_FORMULA = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"^'+[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)
DELIMITERS = (",", ";", "\t")


def escape_cell(value) -> object:
    """``value`` as a spreadsheet shows it literally: text that would start a formula gets a leading
    apostrophe (so does text that already starts with apostrophes before such a character, so that
    ``unescape_cell`` is its exact inverse). Numbers, and text that is a number, are left alone."""
    if not isinstance(value, str) or not _FORMULA.match(value) or _NUMBER.match(value.strip()):
        return value
    return "'" + value


def unescape_cell(value: str) -> str:
    return value[1:] if _ESCAPED.match(value) and not _NUMBER.match(value[1:].strip()) else value


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([escape_cell(h) for h in header])
    writer.writerows([escape_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    from imgcls.core.files import atomic_write_text

    atomic_write_text(Path(path), csv_text(header, rows))


@dataclass
class Table:
    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[int]  # each row's line number in the file (1-based), for messages

    def line_of(self, row_index: int) -> int:
        return self.lines[row_index]

    def where(self, row_index: int) -> str:
        return f"{self.path.name} line {self.lines[row_index]}"


def _delimiter(first_line: str) -> str:
    """The header's delimiter: the one of comma, semicolon and tab that splits it into the most fields
    (a one-column header keeps the comma)."""
    counts = {d: len(next(csv.reader([first_line], delimiter=d), [])) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] > 1 else ","


def read_table(
    path: str | Path, *, ours: bool = False, exact: bool = False, empty_ok: bool = False, what: str = "CSV"
) -> Table:
    """A CSV as a header and one dict per row. ``ours``: a file imgcls wrote (formula escapes undone);
    ``exact``: cells as written (a run's own files), else stripped of padding. Short rows get empty cells; a row longer than the header, an empty or duplicate column name, text that
    is not UTF-8 or a file that is not text are one-line errors naming the file (and line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImgclsError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImgclsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if b"\x00" in raw[:4096]:
        raise ImgclsError(f"{path}: not a text {what} file (it holds NUL bytes; UTF-16 or binary?)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImgclsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first))
    fix = unescape_cell if ours else (lambda v: v)
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank line
            if header is None:
                while len(record) > 1 and not record[-1].strip():
                    record = record[:-1]  # a trailing delimiter on the header line
                header = [fix(h.strip()) for h in record]
                _check_header(path, header)
                continue
            while len(record) > len(header) and not record[-1].strip():
                record = record[:-1]  # a trailing delimiter on the line
            if len(record) > len(header):
                raise ImgclsError(
                    f"{path} line {reader.line_num}: {len(record)} fields, but the header has {len(header)} "
                    f"({', '.join(header)}); quote values that contain the delimiter"
                )
            cells = [fix(c if exact else c.strip()) for c in record] + [""] * (len(header) - len(record))
            rows.append(dict(zip(header, cells)))
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise ImgclsError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None or (not rows and not empty_ok):
        raise ImgclsError(f"{path}: no rows (expected a header line and one line per image)")
    return Table(path, header, rows, lines)


def _check_header(path: Path, header: list[str]) -> None:
    if any(not h for h in header):
        raise ImgclsError(f"{path} line 1: a column without a name ({', '.join(h or '(empty)' for h in header)})")
    seen = set()
    for h in header:
        if h in seen:
            raise ImgclsError(f"{path} line 1: the column {h!r} appears twice")
        seen.add(h)

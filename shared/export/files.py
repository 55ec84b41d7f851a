"""Streaming the rows into files: Parquet (snappy, typed) or gzip CSV, in bounded parts.

Rows arrive as dicts (``shared.export.focus``) and are buffered into columns; every
``row_group_rows`` rows the buffer becomes one Parquet row group (or a slice of CSV) on a
local temporary file, so memory holds one row group, never the month. Every ``part_rows``
rows the part is closed, uploaded to its blob (in blocks, from the file) and deleted
locally: parts are of bounded size, as Cost Management's partitioned exports are.

Parquet is typed (``focus.SCHEMA``): decimal(38, 24) for money and quantities, UTC
timestamps, strings, nulls as nulls. CSV follows FOCUS's text rules: decimals as plain
digits (no exponent), date-times as ``YYYY-MM-DDTHH:mm:ssZ``, a null as an empty field.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from shared.export.focus import COLUMN_NAMES, SCHEMA

PART_ROWS: Final = 500_000
ROW_GROUP_ROWS: Final = 50_000


class FileFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"

    @property
    def extension(self) -> str:
        return ".parquet" if self is FileFormat.PARQUET else ".csv.gz"

    @property
    def content_type(self) -> str:
        return "application/vnd.apache.parquet" if self is FileFormat.PARQUET else "text/csv"

    @property
    def manifest_format(self) -> str:
        return "Parquet" if self is FileFormat.PARQUET else "Csv"

    @property
    def compression(self) -> str:
        return "Snappy" if self is FileFormat.PARQUET else "Gzip"


@dataclass(frozen=True, slots=True)
class WrittenBlob:
    name: str
    byte_count: int
    row_count: int


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%dT%H:%M:%SZ}"
    return str(value)


class PartWriter:
    """Writes rows into parts named by ``part_name(n)`` (n from 1) and uploads each part
    with ``upload(name, file, content_type)`` as soon as it is complete."""

    def __init__(
        self,
        file_format: FileFormat,
        part_name: Callable[[int], str],
        upload: Callable[[str, IO[bytes], str], None],
        *,
        part_rows: int = PART_ROWS,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        self.format = file_format
        self._part_name = part_name
        self._upload = upload
        self._part_rows = part_rows
        self._group_rows = min(row_group_rows, part_rows)
        self._columns: dict[str, list[Any]] = {name: [] for name in COLUMN_NAMES}
        self._buffered = 0
        self._file: IO[bytes] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._csv: gzip.GzipFile | None = None
        self._part_rows_written = 0
        self.blobs: list[WrittenBlob] = []
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        columns = self._columns
        for name in COLUMN_NAMES:
            columns[name].append(row[name])
        self._buffered += 1
        room = self._part_rows - self._part_rows_written
        if self._buffered >= min(self._group_rows, room):
            self._flush()

    def _open(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the part closes
        if self.format is FileFormat.PARQUET:
            self._parquet = pq.ParquetWriter(
                self._file, SCHEMA, compression="snappy", version="2.6"
            )
        else:
            self._csv = gzip.GzipFile(fileobj=self._file, mode="wb", mtime=0)
            self._write_csv([list(COLUMN_NAMES)])

    def _write_csv(self, rows: list[list[str]]) -> None:
        assert self._csv is not None
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerows(rows)
        self._csv.write(text.getvalue().encode("utf-8"))

    def _flush(self) -> None:
        if not self._buffered:
            return
        if self._file is None:
            self._open()
        if self._parquet is not None:
            table = pa.Table.from_pydict(self._columns, schema=SCHEMA)
            self._parquet.write_table(table)
        else:
            columns = [self._columns[name] for name in COLUMN_NAMES]
            self._write_csv([[_text(v) for v in values] for values in zip(*columns, strict=True)])
        self._part_rows_written += self._buffered
        self.rows += self._buffered
        self._columns = {name: [] for name in COLUMN_NAMES}
        self._buffered = 0
        if self._part_rows_written >= self._part_rows:
            self._close_part()

    def _close_part(self) -> None:
        if self._file is None:
            return
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        file = self._file
        try:
            size = file.seek(0, os.SEEK_END)
            name = self._part_name(len(self.blobs) + 1)
            self._upload(name, file, self.format.content_type)
            self.blobs.append(WrittenBlob(name, size, self._part_rows_written))
        finally:
            file.close()
            self._file = self._parquet = self._csv = None
            self._part_rows_written = 0

    def finish(self) -> list[WrittenBlob]:
        """Flush and upload the last part; the parts written, in order."""
        self._flush()
        self._close_part()
        return self.blobs

    def abort(self) -> None:
        """Drop the part in progress (a failed run uploads nothing more)."""
        if self._file is not None:
            self._file.close()
        self._file = self._parquet = self._csv = None

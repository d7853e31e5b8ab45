"""What reading one export hands its caller besides the typed rows: the counts for metadata and
the trips row, the lines kept out of the lake, and the two sinks they are written to.

Apart from the reader so the landing, which owns the sinks, and the inflater, which counts
bytes, depend on this small contract rather than on the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa


class DatapointSink(Protocol):
    """Where parsed datapoints go: a Parquet file that becomes visible only when committed."""

    def write(self, table: pa.Table) -> None: ...


@dataclass(frozen=True)
class QuarantinedLine:
    """One export line kept out of the lake's tables: its number, why, and its raw bytes;
    `field` / `value` name the offending value when one is to blame (not for broken JSON)."""

    line_no: int
    reason: str
    raw: bytes
    field: str | None = None
    value: str | None = None


class QuarantineSink(Protocol):
    def add(self, line: QuarantinedLine) -> None: ...


@dataclass
class ExportStats:
    """What one export held, for metadata and the trips row."""

    datapoints: int = 0
    malformed: int = 0  # lines quarantined because they are not a JSON object
    invalid: int = 0  # lines quarantined for a value that does not parse or is not finite
    blank_lines: int = 0
    undeclared: dict[str, int] = field(default_factory=dict)  # key -> values kept in `extra`
    slow_lines: int = 0  # lines read one by one in Python
    compressed_bytes: int = 0
    decompressed_bytes: int = 0

    def add(self, other: ExportStats) -> None:
        """Fold one segment's counts in (segments are parsed in parallel, tallied in order)."""
        self.datapoints += other.datapoints
        self.malformed += other.malformed
        self.invalid += other.invalid
        self.blank_lines += other.blank_lines
        self.slow_lines += other.slow_lines
        for key, count in other.undeclared.items():
            self.undeclared[key] = self.undeclared.get(key, 0) + count

    @property
    def quarantined(self) -> int:
        """Datapoint lines quarantined instead of landed."""
        return self.malformed + self.invalid

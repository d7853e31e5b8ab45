"""An export's gzip stream → newline-aligned segments of decompressed lines, checked to its end.

Inflating is the one step no parser can speed up, so it runs on its own thread (export.py) and
uses ISA-L when installed; a stream that does not end with a complete gzip member (CRC-32 and
length checked) raises `CorruptExport`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipelines.sources.autopi.tally import ExportStats
from pipelines.sources.autopi.values import CorruptExport

try:  # ISA-L inflates 3-4x faster than zlib and checks the same CRC-32 and length
    from isal import isal_zlib as _inflate_lib

    INFLATER = "isal"
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps this working
    import zlib as _inflate_lib  # type: ignore[no-redef]

    INFLATER = "zlib"
_INFLATE_ERRORS: tuple[type[Exception], ...] = (_inflate_lib.error,)


_READ_CHUNK = 1 << 20


def inflate(path: Path, stats: ExportStats) -> Iterator[bytes]:
    """Decompressed chunks of every gzip member; raises `CorruptExport` unless the file ends
    exactly with a complete member (the inflater verifies each trailer's CRC-32 and length)."""
    inflater = _inflate_lib.decompressobj(wbits=31)
    fresh = False  # a member was completed and nothing of a next one was fed yet
    with path.open("rb") as fh:
        pending = b""
        while True:
            if not pending:
                pending = fh.read(_READ_CHUNK)
                if not pending:
                    break
                stats.compressed_bytes += len(pending)
            fresh = False
            try:
                out = inflater.decompress(pending)
            except _INFLATE_ERRORS as exc:
                raise CorruptExport(f"gzip data is corrupt ({exc})") from None
            if out:
                yield out
            if inflater.eof:  # a member ended; what follows must be another member
                pending = inflater.unused_data
                inflater = _inflate_lib.decompressobj(wbits=31)
                fresh = True
            else:
                pending = b""
    if not fresh:
        raise CorruptExport("gzip stream ends before its trailer (truncated download)")


def segments(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Runs of whole lines of about `size` bytes, each ending with a newline (a longer line
    makes a longer run; one inflated chunk can hold many runs)."""
    buffer = b""
    for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        start = 0
        while len(buffer) - start >= size:
            cut = buffer.find(b"\n", start + size - 1) + 1
            if cut == 0:
                break  # the line continues in the next chunk
            yield buffer[start:cut]
            start = cut
        buffer = buffer[start:]
    if buffer:
        yield buffer if buffer.endswith(b"\n") else buffer + b"\n"

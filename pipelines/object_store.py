"""The object-store half of the lake: reaching `s3://` (and `gs://`, `az://`) roots through
fsspec, and storing a finished file with one upload, so a reader sees a whole object or none.

An object store has no rename: the lake spools a file locally (pipelines.atomic_files) and this
module stores it at its final key with a single PUT or, past two parts' size, a multipart upload
the store only shows once completed (and which a failure aborts). A killed writer leaves nothing
on the store. Apart from the lake's layout so that only this module knows fsspec.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

PART_SIZE = 50 * 2**20
"""Part size of a multipart upload (s3fs's default): files under two parts go in one PUT."""

MAX_PARTS = 10_000
"""S3's most parts in one multipart upload."""

OBJECT_STORE = re.compile(r"^(s3|s3a|gs|gcs|az|abfs|abfss)://", re.IGNORECASE)
"""Roots the lake reaches through fsspec (s3fs; gcsfs and adlfs when installed)."""


class LakeError(RuntimeError):
    """The lake cannot do what was asked; the message is one line saying why."""


def is_object_store(location: str | Path) -> bool:
    """Whether a FLEET_LAKE_DIR value names an object store rather than a local folder."""
    return isinstance(location, str) and bool(OBJECT_STORE.match(location))


class ObjectStore:
    """The lake's object store, through fsspec: s3fs for `s3://` (gcsfs, adlfs for `gs://`,
    `az://` when installed). Endpoint and credentials come from the standard variables
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) that botocore
    reads itself, so the lake has no settings of its own and never holds a secret."""

    def __init__(self, location: str) -> None:
        self.protocol = location.split("://", 1)[0].lower()
        try:
            import fsspec

            # Listings are never cached: a partition's files are listed right after a write.
            self.fs: AbstractFileSystem = fsspec.filesystem(
                self.protocol, skip_instance_cache=True, use_listings_cache=False
            )
        except ImportError as exc:
            raise LakeError(
                f"the lake {location} needs fsspec's {self.protocol}:// filesystem: {exc}"
            ) from None

    def url(self, key: str) -> str:
        return f"{self.protocol}://{key}"

    def key(self, url: str) -> str:
        return url.split("://", 1)[1] if "://" in url else url

    def put(self, local: Path, url: str) -> int:
        """Store a finished local file at `url` in one upload; its size.

        s3fs sends a file under two parts' size as one PUT (the object appears whole or not at
        all) and a bigger one as a multipart upload of the finished file, which the store only
        shows once it is completed and which s3fs aborts when any part fails; a killed writer's
        upload is never completed, so nothing of it becomes visible.
        """
        size = local.stat().st_size
        options: dict[str, int] = {}
        if self.protocol in {"s3", "s3a"}:
            # An explicit part size bypasses s3fs's own scaling: keep within S3's 10,000 parts.
            options["chunksize"] = max(PART_SIZE, -(-size // MAX_PARTS))
        self.fs.put_file(str(local), self.key(url), **options)
        return size

    def find(self, prefix: str) -> list[str]:
        """URLs of every object under the folder `prefix`, sorted."""
        key = self.key(prefix).rstrip("/")
        try:
            found = self.fs.find(key + "/")
        except FileNotFoundError:
            return []
        return sorted(self.url(k) for k in found if k.startswith(key + "/"))

    def exists(self, url: str) -> bool:
        return bool(self.fs.exists(self.key(url)))

    def remove(self, *urls: str | Path) -> None:
        """Delete objects (one request for many); gone already is fine."""
        if urls:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm([self.key(str(u)) for u in urls])

    def open(self, url: str) -> BinaryIO:
        return self.fs.open(self.key(url), "rb")

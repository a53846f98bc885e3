"""Manual evidence: a document a person provides (a signed-off policy, a training record, the
minutes of a management review), signed and stored like collected evidence.

Not a configurable source type: ``affidavit evidence add`` runs it as a one-off run of the
source ``manual``. The run holds the document itself (mapped to the given controls, with its
effective period) and a small JSON record of who added it, when, why, and the original file
name, which points at the document by digest.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from affidavit.collectors.base import CollectContext, Collector, CollectorOptions, Evidence
from affidavit.errors import CollectorError
from affidavit.signing.hashing import sha256_file


class ManualOptions(CollectorOptions):
    file: Path
    controls: tuple[str, ...]
    added_by: str
    note: str | None = None
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    ttl: timedelta = timedelta(days=365)


class ManualCollector(Collector):
    type_name: ClassVar[str] = "manual"
    options_model: ClassVar[type[CollectorOptions]] = ManualOptions
    default_ttl: ClassVar[timedelta] = timedelta(days=365)

    def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
        opts = ctx.options
        assert isinstance(opts, ManualOptions)
        path = opts.file
        if not path.is_file():
            raise CollectorError(f"{path} is not a readable file")
        digest, size = sha256_file(path)  # of the file as given, before redaction
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        name = f"manual/{path.name}"
        yield Evidence(name=name, media_type=media, path=path, controls=opts.controls,
                       effective_from=opts.effective_from, effective_to=opts.effective_to, ttl=opts.ttl)
        yield Evidence(
            name=f"{name}.record.json",
            media_type="application/json",
            data={
                "kind": "manual-evidence",
                "file": path.name,
                "file_sha256_as_given": digest,
                "size": size,
                "added_by": opts.added_by,
                "added_at": ctx.now.isoformat().replace("+00:00", "Z"),
                "note": opts.note,
                "controls": list(opts.controls),
                "effective": {
                    "from": opts.effective_from.isoformat().replace("+00:00", "Z") if opts.effective_from else None,
                    "to": opts.effective_to.isoformat().replace("+00:00", "Z") if opts.effective_to else None,
                },
            },
            effective_from=opts.effective_from, effective_to=opts.effective_to, ttl=opts.ttl,
        )

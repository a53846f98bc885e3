"""Export: the store's runs (all, or selected) as one signed auditor bundle."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from affidavit.errors import StoreError, UsageError
from affidavit.signing.bundle import RunAttestation, write_bundle
from affidavit.signing.keys import Signer
from affidavit.store.local import LocalStore


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    runs: int
    artefacts: int
    members: int


def export_bundle(
    store: LocalStore,
    signer: Signer,
    out: Path,
    *,
    agent: str,
    now: datetime,
    since: datetime | None = None,
    controls: Sequence[str] = (),
    progress: bool = False,
) -> ExportSummary:
    runs = list(store.runs(since=since))
    if controls:
        wanted = set(controls)
        runs = [r for r in runs if any(wanted & set(a.controls) for a in store.artefacts(run_id=r.run_id))]
    if not runs:
        raise UsageError("nothing to export: the store holds no signed runs matching the selection",
                         hint="run `affidavit collect` first, or widen --since / --control")
    attestations = []
    for r in runs:
        dsse_path, sig_path = store.attestation_paths(r.run_id)
        try:
            attestations.append(RunAttestation(r.run_id, json.loads(dsse_path.read_bytes()),
                                               json.loads(sig_path.read_bytes())))
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read the attestation of run {r.run_id}: {e}",
                             hint="run `affidavit store fsck`") from None
    summary = write_bundle(
        out, runs=attestations, open_blob=store.open_blob, signer=signer,
        public_keys=[signer.public_key], agent=agent, created=now,
    )
    return ExportSummary(out, len(runs), summary.artefacts, summary.members)

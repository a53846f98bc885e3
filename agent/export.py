"""Export: the store's runs (all, or selected) as one signed auditor bundle.

When the store has a transparency log, every exported run's Sigstore bundle
carries its log entry, proved against the log's latest checkpoint, and the
bundle carries that checkpoint, the leaf hashes up to it and a trusted_root.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from affidavit.errors import StoreError, UsageError
from affidavit.signing.bundle import LogMaterial, RunAttestation, write_bundle
from affidavit.signing.keys import Signer
from affidavit.signing.tlog_runs import export_log
from affidavit.store.local import LocalStore
from affidavit.store.tlog_store import LogStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    runs: int
    artefacts: int
    members: int
    log_size: int | None = None  # the checkpoint the runs are proved against (None: the store has no log)


def export_bundle(
    store: LocalStore,
    signer: Signer,
    out: Path,
    *,
    agent: str,
    now: datetime,
    since: datetime | None = None,
    controls: Sequence[str] = (),
    library_files: Sequence[tuple[str, bytes]] = (),
    tsa_authorities: Sequence[dict[str, Any]] = (),
) -> ExportSummary:
    """Export the selected runs; ``library_files`` (bundle path, bytes) are the control catalogs and
    mappings in force, carried (and signed) so an auditor sees the mapping that was used;
    ``tsa_authorities`` (``signing.tsa.timestamp_authority_entry``) go into trusted_root.json."""
    runs = list(store.runs(since=since))
    if controls:
        wanted = set(controls)
        runs = [r for r in runs if any(wanted & set(a.controls) for a in store.artefacts(run_id=r.run_id))]
    if not runs:
        raise UsageError("nothing to export: the store holds no signed runs matching the selection",
                         hint="run `affidavit collect` first, or widen --since / --control")
    entries: dict[str, dict[str, object]] = {}
    material: LogMaterial | None = None
    if LogStore.exists(store.root):
        with LogStore.open(store.root) as log:
            if log.checkpoint is not None:  # else the log is empty: nothing to prove against
                exported = export_log(log, [r.run_id for r in runs], tsa_authorities=tsa_authorities)
                entries, material = exported.entries, exported.material
        for r in runs:
            if r.run_id not in entries:
                logger.warning("run %s is not in the store's transparency log: a verifier checking the log "
                               "will report it", r.run_id)
    attestations = []
    for r in runs:
        dsse_path, sig_path = store.attestation_paths(r.run_id)
        try:
            dsse, sigstore = json.loads(dsse_path.read_bytes()), json.loads(sig_path.read_bytes())
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read the attestation of run {r.run_id}: {e}",
                             hint="run `affidavit store fsck`") from None
        if isinstance(sigstore, dict) and isinstance(sigstore.get("verificationMaterial"), dict):
            # the entry as of the export's checkpoint replaces the one stored when the run was logged
            sigstore["verificationMaterial"]["tlogEntries"] = [entries[r.run_id]] if r.run_id in entries else []
        attestations.append(RunAttestation(r.run_id, dsse, sigstore))
    summary = write_bundle(
        out, runs=attestations, open_blob=store.open_blob, signer=signer,
        public_keys=[signer.public_key], agent=agent, created=now, extra=list(library_files), log=material,
    )
    return ExportSummary(out, len(runs), summary.artefacts, summary.members,
                         len(material.leaves) // 32 if material else None)

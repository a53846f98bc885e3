"""Benchmark: `affidavit coverage` against a plain SQLite GROUP BY count over the same index.

Builds a store index of ~100,000 artefacts shaped like a year of daily
collection (cloud, registry, ticket and document sources, each mapping its
artefacts to the common controls of the library, with the TTLs the evidence
guide suggests; see SOURCES below), by indexing synthetic RunRecords through
LocalStore.index_run (no signing). Then, in one run, on the same index, it
times

  plain:    SELECT control, count(*) FROM artefact_controls GROUP BY control
  coverage: compute_coverage() for every framework (what `affidavit coverage` computes;
            the control library is loaded once beforehand and its load time printed apart)

and prints the ratio (target <= 3). It does this twice: on the index exactly as
the store builds it, and after adding the index the coverage engine can use
(artefacts (ttl, collected_at)), so both figures are visible.
Usage: python bench/coverage_bench.py [--artefacts 100000] [--repeat 9] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from affidavit.agent.coverage import compute_coverage
from affidavit.config.catalog import load_library
from affidavit.store.base import ArtefactRecord, RunRecord
from affidavit.store.local import LocalStore

# (source, collector, artefacts per run, every n days, ttl, controls)
SOURCES = [
    ("aws-iam", "aws", 20, 1, "P1D", ["common:CC-IAM-ACCESS"]),
    ("aws-s3", "aws", 60, 1, "P1D", ["common:CC-STORAGE-PRIVATE", "common:CC-ENCRYPTION", "common:CC-RECORD-RETENTION"]),
    ("aws-cloudtrail", "aws", 5, 1, "P1D", ["common:CC-CLOUD-AUDIT-TRAIL"]),
    ("sagemaker", "aws", 40, 1, "P1D", ["common:CC-PROD-MONITORING", "common:CC-INFERENCE-LOGGING"]),
    ("mlflow-registry", "mlflow", 50, 1, "P1D", ["common:CC-MODEL-APPROVAL", "common:CC-AI-INVENTORY",
                                                  "common:CC-AI-ROLES"]),
    ("mlflow-versions", "mlflow", 5, 1, "P365D", ["common:CC-MODEL-LINEAGE", "common:CC-MODEL-VALIDATION",
                                                  "common:CC-DATA-DOCUMENTED"]),
    ("github", "git", 30, 1, "P1D", ["common:CC-CODE-REVIEW"]),
    ("jira", "jira", 40, 1, "P7D", ["common:CC-INCIDENT-MGMT", "common:CC-RISK-ASSESSMENT"]),
    ("policies", "files", 20, 7, "P30D", ["common:CC-AI-POLICY", "common:CC-DOC-CONTROL"]),
    ("manual", "manual", 1, 30, None, ["common:CC-MGMT-REVIEW"]),
]


def build(root: Path, n_artefacts: int, now: datetime, seed: int = 7) -> int:
    rng = random.Random(seed)
    per_day = sum(n / every for _, _, n, every, _, _ in SOURCES)
    days = max(1, round(n_artefacts / per_day))
    store = LocalStore.open(root, create=True)
    total = 0
    for day in range(days):
        for source, collector, n, every, ttl, controls in SOURCES:
            if day % every:
                continue
            started = now - timedelta(days=days - day) + timedelta(minutes=rng.randrange(600))
            run_id = f"{started:%Y%m%dT%H%M%SZ}-{source}-{day:05d}"
            arts = []
            for i in range(n):
                subject = f"{source}/obj{i if ttl != 'P365D' else day * n + i}"
                findings = tuple({"control": c, "result": rng.choices(["pass", "fail", "unknown"], [90, 7, 3])[0],
                                  "reason": "rule evaluated", "subject": subject} for c in controls)
                arts.append(ArtefactRecord(
                    run_id=run_id, digest=hashlib.sha256(f"{run_id}/{i}".encode()).hexdigest(),
                    name=f"{subject}.json", media_type="application/json", size=512, collector=collector,
                    collected_at=started + timedelta(seconds=i), controls=tuple(controls),
                    findings=findings if source != "manual" else (), effective_from=started,
                    effective_to=None, ttl=ttl))
            store.index_run(RunRecord(run_id=run_id, source=source, source_type=collector, started=started,
                                      finished=started + timedelta(seconds=n), keyid="0" * 16,
                                      statement_sha256="0" * 64, artefact_count=n, artefacts=tuple(arts)))
            total += n
    store.close()
    return total


def timed(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median wall time of each function; the functions run interleaved, so drift hits all alike."""
    for fn in fns:
        fn()  # warm the page cache and SQLite's schema cache
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t)
    return [statistics.median(x) for x in samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artefacts", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--keep", type=Path, help="build the store here and keep it")
    args = ap.parse_args()
    now = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="affidavit-coverage-bench-"))
    root = args.keep or tmp / "store"
    try:
        t = time.perf_counter()
        n = build(root, args.artefacts, now)
        sqlite3.connect(root / "index.db").execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
        print(f"indexed {n} artefacts through LocalStore.index_run in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        lib = load_library()
        print(f"control library loaded in {1000 * (time.perf_counter() - t):.0f} ms (not part of the ratio)")
        index = root / "index.db"
        conn = sqlite3.connect(index)
        rows = conn.execute("SELECT count(*) FROM artefact_controls").fetchone()[0]
        print(f"artefact_controls rows: {rows}")

        def plain() -> object:
            return conn.execute("SELECT control, count(*) FROM artefact_controls GROUP BY control").fetchall()

        def coverage() -> object:
            return compute_coverage(lib, index, None, now=now)

        def one() -> object:
            return compute_coverage(lib, index, ["iso42001"], now=now)

        for label in ("as the store builds it", "with an index on artefacts (ttl, collected_at)"):
            if label.startswith("with"):
                conn.execute("CREATE INDEX IF NOT EXISTS artefacts_by_ttl ON artefacts (ttl, collected_at)")
                conn.commit()
            p, c, o = timed([plain, coverage, one], args.repeat)
            print(f"\nindex {label}:")
            print(f"  plain GROUP BY count          {1000 * p:8.1f} ms")
            print(f"  coverage, all 5 frameworks    {1000 * c:8.1f} ms   ratio {c / p:.2f} (target <= 3)")
            print(f"  coverage --framework iso42001 {1000 * o:8.1f} ms   ratio {o / p:.2f}")
        conn.close()
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Transparency log: cost per append and per inclusion proof as the log grows (should stay O(log n)).

Appends 100,000 entries (Rekor-sized bodies) to a real store log and proves
inclusion of every entry, printing at n = 1k, 10k and 100k:

* a durable append as the pipeline does it (one entry, fsync of the log files,
  a new signed checkpoint renamed into place), median of ``--samples`` appends;
* the same append on a second log kept in memory (tmpfs, where fsync and rename
  cost nothing): the structure's own cost, since the disk flushes of the first
  figure are constant per append and dominate it;
* an inclusion proof, averaged over every entry in the log at that size, with
  the number of proof hashes, and a sample of proofs checked.

Between the sample points the log is filled in batches (one checkpoint per
1,000 entries) so the run takes minutes, not hours.

    python bench/tlog_bench.py [--max 100000] [--samples 200] [--memory-dir /dev/shm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.signing.tlog import leaf_hash, verify_inclusion
from affidavit.store.tlog_store import LogStore

BODY = b'{"apiVersion":"0.0.1","kind":"dsse","spec":{' + b"x" * 560 + b"}}"  # ~600 bytes, like a real entry


def body(i: int) -> bytes:
    return BODY + str(i).encode()


def fill(log: LogStore, signer: LocalSigner, target: int, batch: int = 1000) -> None:
    while log.size < target:
        n = min(batch, target - log.size)
        log.append([(f"run-{log.size + j}", body(log.size + j), 0) for j in range(n)], signer)


def timed_appends(log: LogStore, signer: LocalSigner, samples: int) -> float:
    times = []
    for _ in range(samples):
        i = log.size
        t = time.perf_counter()
        log.append([(f"run-{i}", body(i), 0)], signer)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--memory-dir", type=Path, default=Path("/dev/shm"),
                    help="a tmpfs for the in-memory log (default /dev/shm)")
    args = ap.parse_args()
    points = [n for n in (1_000, 10_000, 100_000) if n <= args.max]
    signer = LocalSigner(generate_private_key())
    with tempfile.TemporaryDirectory(prefix="tlog-bench-") as tmp, \
            tempfile.TemporaryDirectory(prefix="tlog-bench-", dir=args.memory_dir) as mem:
        log, in_memory = (LogStore.open_for_append(Path(d), signer.public_key, origin=None,
                                                   default_origin="bench.local/log", now=datetime.now(UTC))
                          for d in (tmp, mem))
        print(f"{'n':>8}  {'durable append':>15}  {'append in tmpfs':>16}  {'inclusion proof':>16}  {'hashes':>6}")
        started = time.perf_counter()
        for n in points:
            fill(log, signer, n - args.samples)
            fill(in_memory, signer, n - args.samples)
            durable = timed_appends(log, signer, args.samples)
            structural = timed_appends(in_memory, signer, args.samples)
            size = log.size
            t = time.perf_counter()
            proofs = [log.inclusion_proof(i) for i in range(size)]
            per_proof = (time.perf_counter() - t) / size
            for i in range(0, size, max(1, size // 500)):
                verify_inclusion(leaf_hash(body(i)), i, size, proofs[i], log.root)
            longest = max(len(p) for p in proofs)
            print(f"{size:>8}  {durable * 1e3:>12.2f} ms  {structural * 1e6:>13.1f} µs  "
                  f"{per_proof * 1e6:>13.1f} µs  {longest:>6}")
        log.close()
        in_memory.close()
        print(f"total {time.perf_counter() - started:.1f} s; append = one entry + signed checkpoint; "
              "proof averaged over every entry at that size")


if __name__ == "__main__":
    main()

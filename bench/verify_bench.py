"""Benchmark: `affidavit verify` on a 10,000-artefact, 1 GiB bundle against what an auditor would run by hand.

Builds real evidence first: runs of ``--per-run`` artefacts (~100 KiB of
text-like random bytes each) collected, signed and logged through the real
pipeline (``agent.pipeline.run_source`` with a transparency log) into a local
store, then exported by ``agent.export.export_bundle`` as a directory, a plain
.tar and a .tar.gz. Then, on a warm page cache, the best of ``--repeat`` runs of:

* ``verify_bundle`` in a child process (the call alone) and the ``affidavit
  verify`` CLI as a subprocess (with --key and --log-key: signatures, log
  proofs, every digest);
* ``openssl dgst -sha256 -r`` over the same files (one process per xargs batch),
  or over the .tar as one file;
* for the .tar.gz, ``gzip -dc bundle.tar.gz | openssl dgst -sha256``;
* ``sha256sum -c SHA256SUMS`` in the directory bundle.

Prints wall and CPU seconds and the ratios (target: verify <= 1.25 x openssl on
the uncompressed forms). Work happens in a temporary directory under
``$BENCH_TMP`` (default: the system's), removed at the end unless ``--keep``.
Usage: python bench/verify_bench.py [--artefacts 10000] [--total-mib 1024] [--per-run 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

AGENT = "affidavit-bench"

CHILD_VERIFY = """
import sys, time
from pathlib import Path
from affidavit.signing.keys import keyid_of, load_public_key_file
from affidavit.signing.verify import verify_bundle
key, log_key = load_public_key_file(Path(sys.argv[2])), load_public_key_file(Path(sys.argv[3]))
t = time.perf_counter()
report = verify_bundle(Path(sys.argv[1]), {keyid_of(key): key}, log_key=log_key)
dt = time.perf_counter() - t
assert report.valid, report.failures[:5]
print(dt, len(report.artefacts))
"""


@dataclass
class Timing:
    wall: float
    cpu: float  # user + system seconds of the child processes


def timed(cmd: Sequence[str] | str, *, cwd: Path | None = None, stdin: bytes | None = None,
          shell: bool = False) -> tuple[Timing, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, shell=shell, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{cmd!r} failed ({out.returncode}): {out.stderr.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu), out.stdout.decode(errors="replace")


def best(repeat: int, run: Callable[[], Timing]) -> Timing:
    return min((run() for _ in range(repeat)), key=lambda r: r.wall)


def build_evidence(root: Path, artefacts: int, total: int, per_run: int) -> tuple[Any, Any, Any]:
    """A store with ``artefacts`` artefacts in runs of ``per_run``, logged; returns (store, signer, log signer)."""
    from affidavit.agent.pipeline import open_run_log, run_source
    from affidavit.collectors.base import CollectContext, Collector, CollectorOptions, Evidence
    from affidavit.collectors.redact import Redactor
    from affidavit.config.models import SigningConfig, SourceConfig
    from affidavit.signing.keys import LocalSigner, generate_private_key
    from affidavit.store.local import LocalStore

    pool = base64.b64encode(os.urandom(6 << 20))  # text-like random bytes (deflate gets ~25% off)
    base, extra = divmod(total, artefacts)

    class BlobCollector(Collector):
        type_name: ClassVar[str] = "bench"
        options_model: ClassVar[type[CollectorOptions]] = CollectorOptions

        def __init__(self, first: int, count: int) -> None:
            self.first, self.count = first, count

        def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
            for i in range(self.first, self.first + self.count):
                size = base + (1 if i < extra else 0)
                head = b"%08d\n" % i
                offset = (i * 7919) % (len(pool) - size)
                yield Evidence(name=f"bench/{i // per_run:03d}/{i:05d}.txt", media_type="text/plain",
                               content=head + pool[offset:offset + size - len(head)], controls=("common:CC-AI-POLICY",))

    now = [datetime(2026, 11, 29, 10, 0, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]

    store = LocalStore.open(root / "store", create=True)
    signer, log_signer = LocalSigner(generate_private_key()), LocalSigner(generate_private_key())
    redactor = Redactor()  # collection is not measured
    with store.lock(10):
        tlog = open_run_log(store, SigningConfig(), log_signer, agent=AGENT,
                            run_keys={signer.keyid: signer.public_key}, clock=clock)
        try:
            for first in range(0, artefacts, per_run):
                src = SourceConfig(name=f"bench-{first // per_run:03d}", type="bench")
                result = run_source(src, BlobCollector(first, min(per_run, artefacts - first)), CollectorOptions(),
                                    store, signer, agent=AGENT, base_dir=root, redactor=redactor, clock=clock,
                                    tlog=tlog)
                if result.status != "signed":
                    raise SystemExit(f"run {src.name} failed: {result.error}")
        finally:
            tlog.close()
    return store, signer, log_signer


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--artefacts", type=int, default=10_000)
    ap.add_argument("--total-mib", type=int, default=1024)
    ap.add_argument("--per-run", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    ap.add_argument("--reuse", type=Path, help="a directory kept by an earlier --keep run: skip building")
    args = ap.parse_args(argv)
    for tool in ("openssl", "gzip", "sha256sum", "xargs"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required on PATH")
    cli = Path(sys.executable).with_name("affidavit")
    if not cli.exists():
        raise SystemExit(f"the affidavit CLI is not installed next to {sys.executable}")

    from affidavit.agent.export import export_bundle
    from affidavit.signing.keys import public_pem

    tmp = args.reuse or Path(tempfile.mkdtemp(prefix="verify-bench-", dir=os.environ.get("BENCH_TMP")))
    forms = {"directory": tmp / "bundle", "tar": tmp / "bundle.tar", "tar.gz": tmp / "bundle.tar.gz"}
    try:
        t = time.perf_counter()
        if args.reuse is None:
            store, signer, log_signer = build_evidence(tmp, args.artefacts, args.total_mib << 20, args.per_run)
            (tmp / "key.pub.pem").write_bytes(public_pem(signer.public_key))
            (tmp / "log.pub.pem").write_bytes(public_pem(log_signer.public_key))
            for out in forms.values():
                export_bundle(store, signer, out, agent=AGENT, now=datetime(2026, 11, 30, tzinfo=UTC))
            shutil.rmtree(tmp / "store")  # not needed any more; frees the page cache for the bundles
        files = files_of(forms["directory"])
        data_bytes = sum(p.stat().st_size for p in files)
        print(f"built {args.artefacts} artefacts in runs of {args.per_run}: {len(files)} files, "
              f"{data_bytes / 2**30:.3f} GiB; .tar {forms['tar'].stat().st_size / 2**30:.3f} GiB, "
              f".tar.gz {forms['tar.gz'].stat().st_size / 2**30:.3f} GiB ({time.perf_counter() - t:.0f} s)")
        keys = [str(tmp / "key.pub.pem"), str(tmp / "log.pub.pem")]
        names = b"\0".join(str(p.relative_to(forms["directory"])).encode() for p in files)

        def verify_in_process(target: Path) -> Timing:
            timing, out = timed([sys.executable, "-c", CHILD_VERIFY, str(target), *keys])
            seconds, count = out.split()
            assert int(count) >= args.artefacts
            return Timing(float(seconds), timing.cpu)

        def verify_cli(target: Path) -> Timing:
            return timed([str(cli), "verify", str(target), "--key", keys[0], "--log-key", keys[1],
                          "--no-progress"])[0]

        rows: list[tuple[str, str, Timing]] = []
        for form in ("directory", "tar", "tar.gz"):
            target = forms[form]
            rows.append((form, "verify_bundle (in-process)", best(args.repeat, lambda: verify_in_process(target))))
            rows.append((form, "affidavit verify (CLI)", best(args.repeat, lambda: verify_cli(target))))
            if form == "directory":
                rows.append((form, "openssl dgst -sha256 (xargs)", best(args.repeat, lambda: timed(
                    ["xargs", "-0", "openssl", "dgst", "-sha256", "-r"], cwd=forms["directory"], stdin=names)[0])))
                rows.append((form, "sha256sum -c SHA256SUMS", best(args.repeat, lambda: timed(
                    ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=forms["directory"])[0])))
            elif form == "tar":
                rows.append((form, "openssl dgst -sha256 bundle.tar", best(args.repeat, lambda: timed(
                    ["openssl", "dgst", "-sha256", "-r", str(forms["tar"])])[0])))
            else:
                rows.append((form, "gzip -dc | openssl dgst -sha256", best(args.repeat, lambda: timed(
                    f"gzip -dc '{forms['tar.gz']}' | openssl dgst -sha256 -r", shell=True)[0])))

        print(f"\n{'form':10} {'command':34} {'wall s':>8} {'cpu s':>8}")
        for form, name, timing in rows:
            print(f"{form:10} {name:34} {timing.wall:8.3f} {timing.cpu:8.3f}")
        by = {(f, n): r for f, n, r in rows}
        base_dir = by[("directory", "openssl dgst -sha256 (xargs)")].wall
        sums = by[("directory", "sha256sum -c SHA256SUMS")].wall
        print("\nratios (wall time; target <= 1.25 on the uncompressed forms):")
        for form, baseline_name in (("directory", "openssl dgst -sha256 (xargs)"),
                                    ("tar", "openssl dgst -sha256 bundle.tar"),
                                    ("tar.gz", "gzip -dc | openssl dgst -sha256")):
            baseline = by[(form, baseline_name)].wall
            for name in ("verify_bundle (in-process)", "affidavit verify (CLI)"):
                v = by[(form, name)].wall
                print(f"  {form:10} {name:28} / {baseline_name:32} = {v / baseline:5.2f}   "
                      f"(/ openssl over the files {v / base_dir:5.2f}, / sha256sum -c {v / sums:5.2f})")
    finally:
        if args.keep or args.reuse:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

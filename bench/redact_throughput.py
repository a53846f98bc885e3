"""Benchmark: the ingest path's redaction step against hashing alone.

For three kinds of text (clean log-like text, English-like technical prose that
mentions passwords, tokens and URLs, and text with a secret every few hundred
bytes) it writes a file, then times, in the same run and the same way the
pipeline reads an artefact (``sha256_stream`` over the opened file):

* plain read + SHA-256;
* redact + SHA-256 (``Redactor().redact_stream``);

and prints both in MiB/s, their ratio (redact+hash / hash alone) and the number
of redactions. Best of ``--repeat`` runs each. Usage:
python bench/redact_throughput.py [--size-mib 256] [--repeat 3] [--kinds clean,english,dense]
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from affidavit.collectors.redact import Redactor
from affidavit.signing.hashing import sha256_stream

BLOCK = 8 << 20  # generated once, repeated up to the file size

# Ordered roughly by frequency; drawn with Zipf weights (1/rank), as words are in English.
_WORDS = (
    "the of and to a in is that for it as with was on be by this are or from at which an have not they "
    "we can each run data model store evidence key should must when then after before because every only "
    "training evaluation metric dataset version config value user service request response pipeline "
    "signature digest artefact control policy auditor bundle token secret password access api client "
    "credential rotate vault reference environment variable default timeout retry error however therefore"
).split()
_WEIGHTS = [1 / (rank + 1) for rank in range(len(_WORDS))]


def clean_text(rng: random.Random) -> bytes:
    """Log-like text without secrets: random tokens, punctuation, numbers, paths."""
    alpha = string.ascii_letters + string.digits
    parts: list[str] = []
    size = 0
    while size < BLOCK:
        w = "".join(rng.choices(alpha, k=rng.randint(1, 12)))
        parts.append(w)
        parts.append(rng.choice(" " * 10 + "\n,.:=-_/\""))
        size += len(w) + 1
    return "".join(parts).encode()[:BLOCK]


def english_text(rng: random.Random) -> bytes:
    """Prose in this project's vocabulary, with URLs, markdown tables and ${VAR} references; no secret."""
    lines: list[str] = []
    size = 0
    while size < BLOCK:
        words = rng.choices(_WORDS, _WEIGHTS, k=rng.randint(6, 18))
        r = rng.random()
        if r < 0.05:
            words.append(f"https://example.org/{rng.choice(_WORDS)}/{rng.randint(1, 999)}")
        elif r < 0.06:
            words.append(f"password: ${{DB_PASSWORD_{rng.randint(1, 9)}}}")
        elif r < 0.08:
            lines.append("| column | value |\n|--------|-------|")
        line = " ".join(words).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines).encode()[:BLOCK]


_SECRETS = (
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "glpat-Zx9yW8vU7tS6rQ5pO4nM",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "password=hunter2hunter2",
    "postgres://admin:s3cr3t-pw@db.example:5432/app",
)


def dense_text(rng: random.Random) -> bytes:
    """A secret every few hundred bytes, between lines of clean text."""
    filler = clean_text(rng)
    parts: list[bytes] = []
    pos = 0
    while pos < BLOCK:
        n = rng.randint(100, 600)
        parts.append(filler[pos : pos + n])
        parts.append(b" " + rng.choice(_SECRETS).encode() + b"\n")
        pos += n
    return b"".join(parts)[:BLOCK]


KINDS: dict[str, Callable[[random.Random], bytes]] = {"clean": clean_text, "english": english_text, "dense": dense_text}


def write_file(path: Path, block: bytes, size_mib: int) -> int:
    total = size_mib << 20
    with path.open("wb") as f:
        left = total
        while left > 0:
            f.write(block[:left])
            left -= len(block)
    return total


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best = float("inf")
    result: object = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args(argv)
    redactor = Redactor()
    print(f"redact_stream throughput, {args.size_mib} MiB per kind, best of {args.repeat}; "
          f"prefiltered={redactor.prefiltered}")
    with tempfile.TemporaryDirectory(prefix="affidavit-bench-") as tmp:
        for kind in args.kinds.split(","):
            path = Path(tmp) / f"{kind}.txt"
            total = write_file(path, KINDS[kind](random.Random(1)), args.size_mib)

            def plain() -> object:
                with path.open("rb") as f:
                    return sha256_stream(f)

            def redacted() -> object:
                with path.open("rb") as f:
                    reader = redactor.redact_stream(f)
                    sha256_stream(reader)
                    return len(reader.redactions)

            t_hash, _ = best_time(plain, args.repeat)
            t_redact, found = best_time(redacted, args.repeat)
            mib = total / (1 << 20)
            print(
                f"{kind:8s} read+sha256 {mib / t_hash:7.0f} MiB/s   redact+sha256 {mib / t_redact:7.0f} MiB/s   "
                f"ratio {t_hash / t_redact:4.2f}   redactions {found}"
            )
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

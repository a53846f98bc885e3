"""Hashing a bundle's artefacts on threads and worker processes (signing/member_hash.py).

The worker processes are real (``python -m affidavit.signing.member_hash``);
their failures are real too: killed with SIGKILL, or an "interpreter" that
exits at once. Digests are checked against hashlib over the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tarfile
from pathlib import Path

import pytest
from tlog_fixtures import logged_store, reasons

from affidavit.signing.archive import open_bundle, read_bundle
from affidavit.signing.member_hash import FileJob, Hasher, SliceJob, hash_batch

SIZES = [0, 1, 511, 512, 513, 4096, 70_000, 1 << 20, (1 << 20) + 7, 300_000]


def artefact_tree(root: Path, count: int = 60) -> dict[str, str]:
    """Files under artefacts/ (hashed by the workers) of awkward sizes; name -> sha256."""
    expected = {}
    for i in range(count):
        data = os.urandom(SIZES[i % len(SIZES)])
        name = f"artefacts/sha256/{i:064x}"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[name] = hashlib.sha256(data).hexdigest()
    return expected


def as_tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tf.add(p, arcname=str(p.relative_to(folder)))
    return out


def digests(folder_or_tar: Path, **kw: object) -> dict[str, str]:
    contents = read_bundle(folder_or_tar, **kw)  # type: ignore[arg-type]
    assert not contents.failures, contents.failures
    return {name: m.sha256 for name, m in contents.members.items() if name.startswith("artefacts/")}


def fake_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Make the worker processes this shell script instead of Python (it gets the worker's arguments)."""
    path = tmp_path / "fake-python"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(path))


def file_jobs(expected: dict[str, str], root: Path) -> list[FileJob]:
    return [FileJob(i + 1, name, str(root / name), (root / name).stat().st_size) for i, name in enumerate(expected)]


@pytest.mark.parametrize("form", ["directory", "tar"])
def test_processes_threads_and_hashlib_agree(tmp_path: Path, form: str) -> None:
    expected = artefact_tree(tmp_path / "b")
    target = tmp_path / "b" if form == "directory" else as_tar(tmp_path / "b", tmp_path / "b.tar")
    assert digests(target, process_after=0) == expected  # every artefact hashed by a worker process
    assert digests(target, process_after=None) == expected  # threads only
    assert digests(target, process_after=500_000) == expected  # some on threads, the rest in processes


def test_progress_counts_every_byte_once_with_processes(tmp_path: Path) -> None:
    artefact_tree(tmp_path / "b")
    seen: list[int] = []
    contents = read_bundle(tmp_path / "b", progress=seen.append, process_after=100_000)
    total = sum(m.size for m in contents.members.values())
    assert sum(seen) == total > 0


def test_killed_worker_processes_leave_their_batches_to_the_caller(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    expected = artefact_tree(tmp_path, 40)
    hasher = Hasher(2, process_after=0)
    hasher.expect(1 << 30)  # starts the processes
    processes = hasher._processes or []
    assert len(processes) == 2
    for p in processes:
        p.proc.kill()
        p.proc.wait()
    for job in file_jobs(expected, tmp_path):
        hasher.submit(job)
    with caplog.at_level(logging.WARNING, logger="affidavit.signing.member_hash"):
        results = hasher.close()
    assert {name: hexd for _, name, hexd, _, problem in results if problem is None} == expected
    assert [r[0] for r in results] == list(range(1, 41))  # in order, each once
    assert "hashed on the calling thread: the hashing processes ended early (exit status -9, -9)" in caplog.text


def test_worker_that_cannot_run_is_replaced_by_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    expected = artefact_tree(tmp_path / "b", 30)
    fake_interpreter(tmp_path, monkeypatch, "exit 3")  # as where the interpreter cannot import affidavit
    with caplog.at_level(logging.WARNING, logger="affidavit.signing.member_hash"):
        assert digests(tmp_path / "b", process_after=0) == expected
    assert "the hashing processes ended early (exit status 3, 3)" in caplog.text


@pytest.mark.parametrize("interpreter", ["no-such-interpreter", ""])  # "": embedded, sys.executable is empty
def test_no_process_can_start_threads_hash_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      interpreter: str) -> None:
    expected = artefact_tree(tmp_path / "b", 30)
    monkeypatch.setattr(sys, "executable", str(tmp_path / interpreter) if interpreter else "")
    hasher = Hasher(2, process_after=0)
    for job in file_jobs(expected, tmp_path / "b"):
        hasher.submit(job)
    assert hasher._processes == []  # Popen failed: the threads took every job
    assert {r[1]: r[2] for r in hasher.close()} == expected


def test_a_replaced_archive_is_refused(tmp_path: Path) -> None:
    artefact_tree(tmp_path / "t", 3)
    tar = as_tar(tmp_path / "t", tmp_path / "t.tar")
    st = tar.stat()
    good = SliceJob(1, "a", str(tar), (st.st_dev, st.st_ino), 0, 512)
    other = SliceJob(2, "b", str(tar), (st.st_dev, st.st_ino + 1), 0, 512)
    gone = SliceJob(3, "c", str(tmp_path / "missing.tar"), (0, 0), 0, 512)
    (ok, bad, missing) = hash_batch([good, other, gone])
    assert ok[2] == hashlib.sha256(tar.read_bytes()[:512]).hexdigest() and ok[4] is None
    assert bad[4] == "the archive was replaced while it was being read"
    assert missing[4] is not None and missing[4].startswith("cannot read the archive")


def test_a_file_swapped_for_a_fifo_is_refused_by_the_worker_process(tmp_path: Path) -> None:
    fifo = tmp_path / "artefacts" / "fifo"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    (result,) = hash_batch([FileJob(1, "artefacts/fifo", str(fifo), 10)])
    assert result[4] is not None and "not a regular file" in result[4]


def test_an_interrupted_read_stops_the_workers_at_once(tmp_path: Path) -> None:
    artefact_tree(tmp_path / "b", 200)
    with pytest.raises(KeyboardInterrupt), open_bundle(tmp_path / "b", process_after=0) as reading:
        hasher = reading._reader.workers
        assert hasher is not None
        processes = list(hasher._processes or [])
        raise KeyboardInterrupt
    assert processes and all(p.proc.poll() is not None for p in processes)


def test_verify_with_worker_processes_finds_a_changed_artefact(tmp_path: Path) -> None:
    ls = logged_store(tmp_path / "e")
    ls.collect(3)
    ls.export(tmp_path / "bundle")
    assert ls.verify(tmp_path / "bundle", process_after=0).valid
    victim = next((tmp_path / "bundle" / "artefacts" / "sha256").iterdir())
    victim.write_bytes(victim.read_bytes() + b" ")
    report = ls.verify(tmp_path / "bundle", process_after=0)
    member = f"artefacts/sha256/{victim.name}"
    assert not report.valid
    assert any(r.startswith("digest mismatch") for r in reasons(report, member)), reasons(report)


def test_an_answer_for_other_jobs_is_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A worker whose answer does not match its batch job for job is treated as dead: its batches are redone."""
    expected = artefact_tree(tmp_path / "b", 30)
    fake_interpreter(tmp_path, monkeypatch, 'while read line; do echo \'[[0, "x", "00", 0, null]]\'; done')
    with caplog.at_level(logging.WARNING, logger="affidavit.signing.member_hash"):
        assert digests(tmp_path / "b", process_after=0) == expected
    assert "hashed on the calling thread" in caplog.text


def test_modules_in_the_working_directory_are_never_imported_by_a_worker(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor may run verify inside the (hostile) bundle: `python -m` would import its json.py first."""
    expected = artefact_tree(tmp_path / "b", 30)
    marker = tmp_path / "imported"
    for module in ("json", "hashlib", "affidavit"):
        (tmp_path / "b" / f"{module}.py").write_text(f"open({str(marker)!r}, 'a').write('{module}')\n")
    monkeypatch.chdir(tmp_path / "b")
    hasher = Hasher(2, process_after=0)
    for job in file_jobs(expected, tmp_path / "b"):
        hasher.submit(job)
    processes = list(hasher._processes or [])
    results = hasher.close()
    assert len(processes) == 2 and all(p.proc.returncode == 0 for p in processes)  # they ran, and answered
    assert {r[1]: r[2] for r in results} == expected
    assert not marker.exists()

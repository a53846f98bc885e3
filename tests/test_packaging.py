"""Packaging: the top-level folders install as subpackages of `affidavit`, from a wheel and editable,
tests/ and bench/ are not installed, package data ships, and mypy sees the package."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_wheel_layout(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("affidavit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"affidavit", next(t for t in tops if t.endswith(".dist-info"))}
    for sub in ("agent", "connectors", "collectors", "signing", "store", "config"):
        assert f"affidavit/{sub}/__init__.py" in names
    assert "affidavit/py.typed" in names
    assert "affidavit/errors.py" in names
    assert "affidavit/config/templates/affidavit.yaml" in names
    assert "affidavit/signing/templates/AUDITOR-README.md" in names
    assert not [n for n in names if "/tests/" in n or "/bench/" in n or n.startswith(("tests/", "bench/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "affidavit = affidavit.agent.cli:main" in text
    assert "files = affidavit.collectors.files:FilesCollector" in text


def test_mypy_clean_on_installed_package() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "-p", "affidavit"], cwd=ROOT / "tests",
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout


def test_editable_strict_install_imports_and_type_checks(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # dependencies come from the test environment, after the editable install's own path
    (site / "zzz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT),
                    "--config-settings", "editable_mode=strict"], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=tmp_path)
    where = subprocess.run([str(py), "-c", "import affidavit.agent.cli as m; print(m.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "__editable__" in where, where  # imported from the editable link tree, not a copy
    out = subprocess.run([str(py), "-m", "mypy", "-p", "affidavit.signing"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr

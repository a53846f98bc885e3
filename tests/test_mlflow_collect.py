"""The mlflow collector against a real tracking server, end to end through the pipeline.

One server per session (conftest_mlflow), seeded once; tests that change the
registry make their own models and scope their source to them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from affidavit.agent.cli_app import App
from affidavit.collectors.mlflow_docs import Names
from affidavit.collectors.mlflow_history import history
from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.store.local import LocalStore
from mlflow_server import GIT_COMMIT, SECRET, Rest, Seeded, collect, load_doc, run_script

pytest_plugins = ["conftest_mlflow"]
pytestmark = pytest.mark.slow  # a real server (the project's definition of slow)

CONTROL = {"lineage": "common:CC-MODEL-LINEAGE", "approval": "common:CC-MODEL-APPROVAL",
           "data": "common:CC-DATA-DOCUMENTED", "validation": "common:CC-MODEL-VALIDATION"}
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def require_tool(name: str) -> str:
    import shutil

    path = shutil.which(name)
    assert path, f"{name} is not installed: install it to run these tests"
    return path


def new_store(path: Path) -> tuple[LocalStore, LocalSigner]:
    return LocalStore.open(path, create=True), LocalSigner(generate_private_key())


def at(t: datetime) -> Any:
    return lambda: t


@pytest.fixture(scope="module")
def first(mlflow_seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStore, Any]]:
    """The seeded models and the churn experiment's runs, collected once into a fresh store."""
    store, signer = new_store(tmp_path_factory.mktemp("store") / "s")
    result = collect(store, signer, "reg", mlflow_seeded.url, models=["seed-*"], experiments=["seed-churn"])
    assert result.status == "signed", result.error
    yield store, result
    store.close()


def by_name(result: Any) -> dict[str, Any]:
    return {a.name: a for a in result.artefacts}


def kinds(names: Names, result: Any, kind: str) -> list[str]:
    out = []
    for a in result.artefacts:
        parsed = names.parse(a.name)
        if parsed and parsed[0] == kind:
            out.append(a.name)
    return out


def server_path(seeded: Seeded, uri: str) -> Path:
    assert uri.startswith("mlflow-artifacts:/"), uri
    return seeded.server.artifacts / uri.removeprefix("mlflow-artifacts:").lstrip("/")


def test_every_seeded_version_once_with_aliases_stage_and_findings(mlflow_seeded: Seeded, first: Any) -> None:
    store, result = first
    names = Names("reg")
    docs = by_name(result)
    seeded = mlflow_seeded.data["versions"]
    assert sorted(kinds(names, result, "model-version")) == sorted(names.version(v["model"], v["version"])
                                                                   for v in seeded)
    for v in seeded:
        rec = docs[names.version(v["model"], v["version"])]
        doc = load_doc(store, rec)
        assert doc["aliases"] == sorted(v["aliases"]), v
        assert doc["current_stage"] == v["stage"]
        assert doc["run"]["run_id"] == v["run"]
        got = {f["control"]: f["result"] for f in rec.findings}
        assert got == {CONTROL[k]: r for k, r in v["expect"].items() if k != "files"}, (v, rec.findings)
        assert [f["result"] for f in doc["findings"]] == [f["result"] for f in rec.findings]
        if "logged_model" in v:
            assert doc["source_kind"] == "logged-model"
            assert names.logged_model(v["logged_model"]) in docs
        else:
            assert doc["source_kind"] == "run-artifacts"
    model = load_doc(store, docs[names.model("seed-credit-risk")])
    assert model["aliases"] == {"champion": "1", "challenger": "2", "prod": "3"}
    assert model["versions"] == ["1", "2", "3", "4"]
    assert model["tags"] == {"owner": "risk-team"}


def test_findings_name_the_reason(first: Any) -> None:
    store, result = first
    names = Names("reg")
    reasons = {f["control"]: f["reason"] for f in by_name(result)[names.version("seed-credit-risk", "3")].findings}
    assert reasons[CONTROL["approval"]] == "seed-credit-risk v3: production (alias prod) without approval tag approved_by"
    assert "has no dataset inputs" in reasons[CONTROL["data"]]
    assert "no evaluation metrics" in reasons[CONTROL["validation"]]
    v4 = {f["control"]: f["reason"] for f in by_name(result)[names.version("seed-credit-risk", "4")].findings}
    assert "approved by its own creator" in v4[CONTROL["approval"]]
    assert "stage Production" in v4[CONTROL["data"]] or "dataset input" in v4[CONTROL["data"]]


def test_model_file_digests_equal_sha256sum_of_the_servers_files(mlflow_seeded: Seeded, first: Any) -> None:
    store, result = first
    names = Names("reg")
    docs = by_name(result)
    sha256sum = require_tool("sha256sum")
    for v in mlflow_seeded.data["versions"]:
        rec = docs[names.files(v["model"], v["version"])]
        manifest = load_doc(store, rec)
        root = server_path(mlflow_seeded, manifest["artifact_uri"])
        on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert [f["path"] for f in manifest["files"]] == on_disk
        out = subprocess.run([sha256sum, *on_disk], cwd=root, capture_output=True, text=True, check=True).stdout
        expected = {line.split(None, 1)[1].lstrip("*"): line.split()[0] for line in out.splitlines()}
        assert {f["path"]: f["sha256"] for f in manifest["files"]} == expected
        assert {f["path"]: f["size"] for f in manifest["files"]} == {p: (root / p).stat().st_size for p in on_disk}
        assert [f["result"] for f in rec.findings] == [v["expect"]["files"]]
        mlmodel = docs[names.model_file(v["model"], v["version"], "MLmodel")]
        assert load_bytes(store, mlmodel) == (root / "MLmodel").read_bytes()
        assert manifest["mlmodel"]["artefact"] == mlmodel.name and manifest["mlmodel"]["readable"]
        has_card = (root / "README.md").exists()
        assert (names.model_file(v["model"], v["version"], "README.md") in docs) == has_card
        assert (manifest["model_card"] is not None) == has_card


def load_bytes(store: LocalStore, rec: Any) -> bytes:
    with store.open_blob(rec.digest) as f:
        return f.read()


def test_runs_datasets_and_secrets(mlflow_seeded: Seeded, first: Any) -> None:
    store, result = first
    names = Names("reg")
    docs = by_name(result)
    approved = docs[names.run(mlflow_seeded.data["runs"]["approved"])]
    run = load_doc(store, approved)
    assert run["params"]["C"] == "0.5"
    assert run["params"]["db_password"] == "[REDACTED:secret-field]"
    assert approved.redactions == ({"path": "/params/db_password", "rule": "secret-field"},)
    assert run["source_code"]["git_commit"] == GIT_COMMIT
    assert run["metrics"]["accuracy"]["value"] == pytest.approx(0.91)
    assert [(d["name"], d["context"], d["source"]) for d in run["datasets"]] == [
        ("credit-train", "training", {"uri": "s3://bucket/credit/train.csv"}),
        ("credit-test", "eval", {"uri": "s3://bucket/credit/test.csv"}),
    ]
    assert all(d["digest"] for d in run["datasets"])
    for rec in result.artefacts:
        assert SECRET.encode() not in load_bytes(store, rec)
    for run_id in mlflow_seeded.data["churn_runs"]:
        assert names.run(run_id) in docs
    assert names.experiment(mlflow_seeded.data["churn_experiment"]) in docs


def test_second_unchanged_run_stores_nothing(mlflow_seeded: Seeded, first: Any) -> None:
    store, _ = first
    signer = LocalSigner(generate_private_key())
    again = collect(store, signer, "reg", mlflow_seeded.url, models=["seed-*"], experiments=["seed-churn"])
    assert again.status == "empty", again.error
    assert again.artefacts == []
    assert len(list(store.runs(source="reg"))) == 1


def test_pagination_reads_every_page(mlflow_seeded: Seeded, first: Any, tmp_path: Path) -> None:
    _, result = first
    store, signer = new_store(tmp_path / "s")
    paged = collect(store, signer, "reg", mlflow_seeded.url, models=["seed-*"], experiments=["seed-churn"],
                    page_size=1)
    assert paged.status == "signed", paged.error
    assert sorted(a.name for a in paged.artefacts) == sorted(a.name for a in result.artefacts)
    assert {a.name: a.digest for a in paged.artefacts if a.name.endswith(".json")} == {
        a.name: a.digest for a in result.artefacts if a.name.endswith(".json")}


def _own_model(seeded: Seeded, name: str, runs: list[str]) -> Rest:
    rest = Rest(seeded.url)
    rest.create_model(name)
    for r in runs:
        rest.create_version(name, f"runs:/{seeded.data['runs'][r]}/model", seeded.data["runs"][r])
    return rest


def test_a_changed_tag_gives_exactly_one_new_artefact(mlflow_seeded: Seeded, tmp_path: Path) -> None:
    rest = _own_model(mlflow_seeded, "iso-tag", ["approved"])
    store, signer = new_store(tmp_path / "s")
    opts: dict[str, Any] = {"models": ["iso-tag"], "collect_experiments": False}
    assert collect(store, signer, "tag", mlflow_seeded.url, **opts).status == "signed"
    rest.set_version_tag("iso-tag", "1", "approved_by", "dora")
    changed = collect(store, signer, "tag", mlflow_seeded.url, **opts)
    assert changed.status == "signed", changed.error
    assert [a.name for a in changed.artefacts] == [Names("tag").version("iso-tag", "1")]
    assert load_doc(store, changed.artefacts[0])["tags"] == {"approved_by": "dora"}
    assert collect(store, signer, "tag", mlflow_seeded.url, **opts).status == "empty"


def test_a_deleted_version_is_recorded_as_deleted(mlflow_seeded: Seeded, tmp_path: Path) -> None:
    rest = _own_model(mlflow_seeded, "iso-del", ["approved", "self-approved"])
    store, signer = new_store(tmp_path / "s")
    opts: dict[str, Any] = {"models": ["iso-del"], "collect_experiments": False}
    assert collect(store, signer, "del", mlflow_seeded.url, **opts).status == "signed"
    rest.delete_version("iso-del", "2")
    gone = collect(store, signer, "del", mlflow_seeded.url, **opts)
    assert gone.status == "signed", gone.error
    names = Names("del")
    docs = {a.name: load_doc(store, a) if a.name.endswith(".json") else None for a in gone.artefacts}
    v2 = names.version_dir("iso-del", "2")
    assert docs[names.version("iso-del", "2")]["status"] == "deleted"
    assert docs[names.version("iso-del", "2")]["deleted"] is True
    assert docs[names.files("iso-del", "2")]["status"] == "deleted"
    assert sorted(n for n in docs if n.startswith(v2 + "files/")) == [v2 + "files/MLmodel", v2 + "files/README.md"]
    # the run behind it still exists: no longer in this source's scope, not deleted
    assert docs[names.run(mlflow_seeded.data["runs"]["self-approved"])]["status"] == "out-of-scope"
    assert docs[names.model("iso-del")]["versions"] == ["1"]
    assert names.version("iso-del", "1") not in docs
    assert collect(store, signer, "del", mlflow_seeded.url, **opts).status == "empty"


def test_unchanged_evidence_is_re_attested_before_it_expires(mlflow_seeded: Seeded, tmp_path: Path) -> None:
    _own_model(mlflow_seeded, "iso-due", ["approved"])
    store, signer = new_store(tmp_path / "s")
    opts: dict[str, Any] = {"models": ["iso-due"], "collect_experiments": False, "ttl": "7d"}
    names = Names("due")
    first_run = collect(store, signer, "due", mlflow_seeded.url, clock=at(T0), **opts)
    assert first_run.status == "signed"
    assert collect(store, signer, "due", mlflow_seeded.url, clock=at(T0 + timedelta(days=4)), **opts).status == "empty"
    day6 = collect(store, signer, "due", mlflow_seeded.url, clock=at(T0 + timedelta(days=6)), **opts)
    assert sorted(a.name for a in day6.artefacts) == sorted([
        names.model("iso-due"), names.version("iso-due", "1"), names.run(mlflow_seeded.data["runs"]["approved"])])
    day29 = collect(store, signer, "due", mlflow_seeded.url, clock=at(T0 + timedelta(days=29)), **opts)
    assert {a.name for a in day29.artefacts} == {a.name for a in first_run.artefacts}


def test_alias_and_stage_history_from_the_stored_snapshots(mlflow_seeded: Seeded, tmp_path: Path) -> None:
    rest = _own_model(mlflow_seeded, "iso-hist", ["approved", "approved"])
    store, signer = new_store(tmp_path / "store")
    opts: dict[str, Any] = {"models": ["iso-hist"], "collect_experiments": False}
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    rest.set_alias("iso-hist", "champion", "1")
    rest.set_stage("iso-hist", "1", "Production")
    assert collect(store, signer, "hist", mlflow_seeded.url, clock=at(T0), **opts).status == "signed"
    rest.set_alias("iso-hist", "champion", "2")
    assert collect(store, signer, "hist", mlflow_seeded.url, clock=at(t1), **opts).status == "signed"
    rest.set_stage("iso-hist", "1", "Archived")
    assert collect(store, signer, "hist", mlflow_seeded.url, clock=at(t2), **opts).status == "signed"
    rows = [(h.version, h.kind, h.label, h.since, h.not_before, h.until) for h in history(store, "hist", "iso-hist")]
    assert rows == [
        ("1", "alias", "champion", T0, None, t1),
        ("1", "stage", "Production", T0, None, t2),
        ("1", "stage", "Archived", t2, t1, None),
        ("2", "alias", "champion", t1, T0, None),
    ]
    only2 = history(store, "hist", "iso-hist", version="2")
    assert [(h.label, h.until) for h in only2] == [("champion", None)]

    config = tmp_path / "affidavit.yaml"
    config.write_text(f"store:\n  path: {tmp_path / 'store'}\nsources:\n"
                      f"  - name: hist\n    type: mlflow\n    tracking_uri: {mlflow_seeded.url}\n")
    app = App(config, 0, tmp_path, {})
    from affidavit.agent.cli_mlflow import mlflow_group

    out = CliRunner().invoke(mlflow_group, ["history", "iso-hist", "--version", "2", "--json"], obj=app)
    assert out.exit_code == 0, out.output
    import json

    data = json.loads(out.stdout)
    period = data["periods"][0]
    # the model's snapshot at t2 exists only if the stage change touched the model's timestamps
    assert period.pop("last_seen") in ("2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z")
    assert data["periods"] == [{"model": "iso-hist", "version": "2", "kind": "alias", "label": "champion",
                                "since": "2026-06-01T10:00:00Z", "not_before": "2026-06-01T09:00:00Z",
                                "until": None}]
    text = CliRunner().invoke(mlflow_group, ["history", "iso-hist"], obj=app)
    assert text.exit_code == 0 and "v1     alias champion" in text.stdout
    missing = CliRunner().invoke(mlflow_group, ["history", "no-such-model"], obj=app)
    assert missing.exit_code == 2 and "no stored evidence of model 'no-such-model'" in missing.output


def test_an_http_collection_never_imports_mlflow(mlflow_seeded: Seeded, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nsys.path.insert(0, sys.argv[1])\n"
        "from mlflow_server import collect\n"
        "from affidavit.store.local import LocalStore\n"
        "from affidavit.signing.keys import LocalSigner, generate_private_key\n"
        "r = collect(LocalStore.open(Path(sys.argv[2]), create=True), LocalSigner(generate_private_key()), 'x',"
        " sys.argv[3], models=['seed-fraud'], collect_experiments=False)\n"
        "assert r.status == 'signed', r.error\n"
        "assert 'mlflow' not in sys.modules, 'the REST collection imported mlflow'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "s"),
                           mlflow_seeded.url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_local_sqlite_store_through_mlflows_client(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    seeded = run_script("seed-local", str(work / "mlflow.db"), str(work / "artifacts"))
    store, signer = new_store(tmp_path / "s")
    result = collect(store, signer, "local", "sqlite:///mlflow.db", base_dir=work)
    assert result.status == "signed", result.error
    names = Names("local")
    docs = by_name(result)
    version = load_doc(store, docs[names.version("local-model", seeded["version"])])
    assert version["aliases"] == ["champion"] and version["production"] == ["alias champion"]
    manifest = load_doc(store, docs[names.files("local-model", seeded["version"])])
    root = Path(seeded["artifact_uri"].removeprefix("file://")) / "model"
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*") if p.is_file()}
    assert collect(store, signer, "local", "sqlite:///mlflow.db", base_dir=work).status == "empty"


def test_the_embedded_default_collects_a_local_mlflow_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`affidavit collect` with no config, in a directory holding ./mlflow.db, collects its ML evidence."""
    import json

    from affidavit.agent.cli import run

    run_script("seed-local", str(tmp_path / "mlflow.db"), str(tmp_path / "artifacts"))
    for var in [v for v in __import__("os").environ if v.startswith(("MLFLOW_", "AFFIDAVIT_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AFFIDAVIT_PASSPHRASE", "correct horse battery staple")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.chdir(tmp_path)
    code = run(["collect", "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    mlflow_run = next(r for r in report["runs"] if r["source"] == "mlflow")
    assert mlflow_run["status"] == "signed"
    names = {a["name"] for a in mlflow_run["artefacts"]}
    assert "mlflow/mlflow/registered-model/local-model/version/1.json" in names
    assert "mlflow/mlflow/registered-model/local-model/version/1/files.json" in names
    assert 'tracking_uri: "sqlite:///mlflow.db"' in (tmp_path / "affidavit.yaml").read_text()

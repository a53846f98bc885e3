"""The mlflow collector's parts that need no server: options, rules, names, paging, retries, history, bootstrap."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from affidavit.agent.bootstrap import render_config, sources_block
from affidavit.collectors import mlflow_findings as rules
from affidavit.collectors.base import Seen, canonical_json
from affidavit.collectors.mlflow_delta import Delta, stored_digest
from affidavit.collectors.mlflow_docs import Names, marker_doc, run_doc
from affidavit.collectors.mlflow_history import _periods
from affidavit.collectors.mlflow_options import MlflowOptions
from affidavit.collectors.redact import Redactor
from affidavit.config.loader import load_config
from affidavit.connectors.mlflow import name_filter, paginate
from affidavit.connectors.mlflow_http import retry_after, split_credentials
from affidavit.errors import ConfigError, FatalError, RetriableError
from affidavit.signing.hashing import sha256_bytes
from mlflow_server import check, free_port

T0 = datetime(2026, 6, 1, tzinfo=UTC)


# -- connector helpers ---------------------------------------------------------------


def test_paginate_reads_to_the_end() -> None:
    pages = {None: ([1, 2], "a"), "a": ([3], "b"), "b": ([4], "")}
    assert list(paginate(lambda t: pages[t], "things", "here")) == [1, 2, 3, 4]


def test_paginate_stops_a_token_loop() -> None:
    pages = {None: ([1], "a"), "a": ([2], "b"), "b": ([3], "a")}
    with pytest.raises(FatalError, match="here: loop detected in the pagination of things"):
        list(paginate(lambda t: pages[t], "things", "here"))


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    now = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("Mon, 01 Jun 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Mon, 01 Jun 2026 11:00:00 GMT", now) == 0.0


def test_credentials_come_out_of_the_url() -> None:
    assert split_credentials("https://ann:p%40ss@mlflow.example:8443/base/") == (
        "https://mlflow.example:8443/base", "ann", "p@ss")
    assert split_credentials("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None, None)


def test_name_filter_quotes() -> None:
    assert name_filter("credit") == "name = 'credit'"
    assert name_filter("it's") == 'name = "it\'s"'
    with pytest.raises(FatalError, match="both quote characters"):
        name_filter("""a'b"c""")


# -- options -------------------------------------------------------------------------


def test_options_defaults_and_durations() -> None:
    opts = MlflowOptions.model_validate({"tracking_uri": "http://x", "rehash_after": "10d", "due_margin": "12h"})
    assert opts.rehash_after == timedelta(days=10) and opts.due_margin == timedelta(hours=12)
    assert opts.models == ["*"] and opts.approval_tags == ["approved_by"]
    conn = opts.connection("src", Path("/cfg"))
    assert conn.source == "src" and conn.verify is True and conn.max_retries == 5
    assert MlflowOptions.model_validate({"tracking_uri": "x", "ca_bundle": "ca.pem"}).connection(
        "s", Path("/cfg")).verify == "/cfg/ca.pem"


@pytest.mark.parametrize("bad, message", [
    ({"token": "t", "username": "u"}, "either token or username/password"),
    ({"password": "p"}, "a password needs a username"),
    ({"thresholds": {"accuracy": {}}}, "give min, max or both"),
    ({"models": []}, "at least one"),
    ({"rehash_after": "soon"}, "not a duration"),
    ({"page_size": 5000}, "less than or equal to 1000"),
])
def test_options_refuse(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        MlflowOptions.model_validate({"tracking_uri": "http://x", **bad})


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("sources:\n  - name: reg\n    type: mlflow\n    trackin_uri: http://x\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, cwd=tmp_path, env={})
    assert "sources[0].tracking_uri: required key is missing" in e.value.message
    assert "unknown key 'trackin_uri'; did you mean 'tracking_uri'?" in e.value.message


# -- findings --------------------------------------------------------------------------


def run_with(datasets: list[tuple[str, str | None, str | None, str | None]] = (),  # type: ignore[assignment]
             metrics: dict[str, float] | None = None, commit: str | None = "abc", user: str = "ann") -> dict[str, Any]:
    tags = [{"key": "mlflow.user", "value": user}]
    if commit:
        tags.append({"key": "mlflow.source.git.commit", "value": commit})
    inputs = []
    for name, digest, source, context in datasets:
        inputs.append({"dataset": {"name": name, "digest": digest or "", "source": source or ""},
                       "tags": [{"key": "mlflow.data.context", "value": context}] if context else []})
    return {"info": {"run_id": "r1", "user_id": user},
            "data": {"tags": tags, "metrics": [{"key": k, "value": v} for k, v in (metrics or {}).items()]},
            "inputs": {"dataset_inputs": inputs}}


def version(tags: dict[str, str] | None = None, run_id: str | None = "r1") -> dict[str, Any]:
    return {"name": "m", "version": "1", "run_id": run_id, "tags": [{"key": k, "value": v} for k, v in
                                                                    (tags or {}).items()]}


def results(findings: list[Any]) -> dict[str, str]:
    return {f.control: f.result for f in findings}


def test_production_means_a_configured_alias_or_stage() -> None:
    p = rules.Policy()
    assert rules.production_reasons(["Champion", "b"], "None", p) == ["alias Champion"]
    assert rules.production_reasons([], "production", p) == ["stage production"]
    assert rules.production_reasons(["candidate"], "Staging", p) == []


def test_a_non_production_version_gets_only_lineage() -> None:
    got = rules.version_findings("m v1", version(), [], "ann", run_with(), None, rules.Policy())
    assert results(got) == {rules.LINEAGE: "pass"}


def test_approval_rules() -> None:
    p = rules.Policy(approvers=("carol", "dave"))
    assert rules.approval("s", "alias prod", {}, "ann", p).result == "fail"
    assert rules.approval("s", "alias prod", {"approved_by": "ann"}, "ann", p).reason == "s: approved by its own creator ann"
    assert "not in the approver list" in rules.approval("s", "x", {"approved_by": "eve"}, "ann", p).reason
    ok = rules.approval("s", "x", {"approved_by": "carol"}, None, p)
    assert ok.result == "pass" and "creator unknown" in ok.reason
    two = rules.Policy(approval_tags=("approved_by", "approval_ref"))
    assert rules.approval("s", "x", {"approved_by": "carol"}, "ann", two).reason.endswith("approval tag approval_ref")
    no_approver = rules.Policy(approval_tags=("approval_ref",), approver_tag="approved_by")
    assert rules.approval("s", "x", {"approval_ref": "JIRA-1"}, "ann", no_approver).result == "unknown"


def test_data_and_validation_rules() -> None:
    p = rules.Policy(thresholds={"accuracy": rules.Threshold(minimum=0.9)})
    good = run_with([("train", "d1", "s3://t", "training"), ("test", "d2", "s3://e", "eval")], {"accuracy": 0.95})
    assert rules.data_documented("s", "x", version(), good).result == "pass"
    assert rules.validation("s", "x", version(), good, None, p).result == "pass"
    low = run_with([("test", "d2", "s3://e", "eval")], {"accuracy": 0.5})
    assert "accuracy = 0.5 misses its threshold >= 0.9" in rules.validation("s", "x", version(), low, None, p).reason
    missing = run_with([("test", "d2", "s3://e", "eval")], {"f1": 0.9})
    assert "metric accuracy (it has a threshold) is not recorded" in rules.validation(
        "s", "x", version(), missing, None, p).reason
    no_digest = run_with([("train", None, "s3://t", "training")], {"accuracy": 0.95})
    assert "without digest or source: train" in rules.data_documented("s", "x", version(), no_digest).reason
    train_only = run_with([("train", "d", "s3://t", "training")], {"accuracy": 0.95})
    assert "no test/eval dataset input" in rules.validation("s", "x", version(), train_only, None, rules.Policy()).reason
    no_context = run_with([("train", "d", "s3://t", None)], {"val_loss": 0.1})
    v = rules.validation("s", "x", version(), no_context, None, rules.Policy())
    assert v.result == "pass" and "dataset contexts not recorded" in v.reason
    logged = {"data": {"metrics": [{"key": "test_accuracy", "value": 0.9}]}}
    assert rules.validation("s", "x", version(), run_with(), logged, rules.Policy()).result == "pass"
    assert rules.validation("s", "x", version(run_id=None), None, None, rules.Policy()).result == "unknown"
    assert rules.data_documented("s", "x", version(run_id=None), None).result == "unknown"


def test_lineage_rules() -> None:
    assert rules.lineage("s", version(run_id=None), None).reason == "s: no source run recorded"
    assert "no longer exists" in rules.lineage("s", version(), None).reason
    assert "records no git commit" in rules.lineage("s", version(), run_with(commit=None)).reason
    assert rules.lineage("s", version(), run_with(commit="0123456789abcdef")).reason == "s: run r1 at commit 0123456789ab"
    assert results(rules.files_findings("f", ["MLmodel", "requirements.txt"])) == {rules.LINEAGE: "pass"}
    assert rules.files_findings("f", ["MLmodel", "w.bin"])[0].result == "fail"
    assert rules.files_findings("f", [])[0].reason == "f: the model has no files"


# -- names, documents, digests --------------------------------------------------------------


@pytest.mark.parametrize("model, ver, path", [("credit", "7", "MLmodel"), ("a/b c", "12", "sub dir/x#1.bin"),
                                              ("ünï'code", "1", "README.md")])
def test_names_round_trip(model: str, ver: str, path: str) -> None:
    n = Names("src")
    assert n.parse(n.model(model)) == ("registered-model", (model,))
    assert n.parse(n.version(model, ver)) == ("model-version", (model, ver))
    assert n.parse(n.files(model, ver)) == ("model-files", (model, ver))
    assert n.parse(n.model_file(model, ver, path)) == ("model-file", (model, ver, path))
    assert n.parse(n.run("r/1")) == ("run", ("r/1",))
    assert n.model(model).count("/") == 3  # a slash in a name never makes a new level
    assert n.parse("mlflow/other/run/x.json") is None and n.parse("mlflow/src/unknown/x") is None


def test_the_digest_is_the_one_the_pipeline_stores() -> None:
    doc = run_doc({"info": {"run_id": "r"}, "data": {"params": [{"key": "api_key", "value": "sk-123"}]}}, "http://s")
    redacted, found = Redactor().redact_document(doc)
    assert found and redacted["params"]["api_key"] == "[REDACTED:secret-field]"
    assert stored_digest(doc, Redactor()) == sha256_bytes(canonical_json(redacted))


def test_redaction_is_idempotent_so_the_fast_digest_path_holds() -> None:
    doc = {"params": {"db_password": "hunter2", "C": "1"}, "note": "token ghp_" + "a1B2" * 9,
           "aws": "AKIAIOSFODNN7EXAMPLE", "auth": "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789"}
    r = Redactor()
    once, found = r.redact_document(doc)
    assert found and once != doc
    twice, _ = r.redact_document(once)
    assert twice == once
    stored = stored_digest(doc, r)
    d = Delta({"mlflow/s/x": Seen(stored, T0, None)}, "mlflow/s/", T0, timedelta(days=1), lambda: r)
    assert d.digest_matches("mlflow/s/x", doc)  # the slow path: redact, then compare
    assert d.digest_matches("mlflow/s/x", once)  # the fast path: already the stored bytes
    assert not d.digest_matches("mlflow/s/x", {**doc, "C": "2"})


def test_delta_yields_new_changed_and_due_only() -> None:
    r = Redactor()
    doc = {"a": 1}
    same = stored_digest(doc, r)
    prev = {
        "mlflow/s/same": Seen(same, T0, T0 + timedelta(days=7)),
        "mlflow/s/due": Seen(same, T0, T0 + timedelta(days=2)),
        "mlflow/s/changed": Seen("0" * 64, T0, T0 + timedelta(days=7)),
        "mlflow/s/gone": Seen(same, T0, None),
        "mlflow/other/x": Seen(same, T0, None),
    }
    d = Delta(prev, "mlflow/s/", T0 + timedelta(days=1), timedelta(days=1, hours=1), lambda: r)
    from affidavit.collectors.base import Evidence

    def offered(name: str) -> bool:
        return d.offer(Evidence(name=name, media_type="application/json", data=doc)) is not None

    assert not offered("mlflow/s/same")
    assert offered("mlflow/s/due") and offered("mlflow/s/changed") and offered("mlflow/s/new")
    assert list(d.missing()) == ["mlflow/s/gone"]
    marker = marker_doc("run", ("x",), "deleted", "http://s")
    assert marker == marker_doc("run", ("x",), "deleted", "http://s")  # same object, same bytes


# -- history ---------------------------------------------------------------------------------


def test_periods_over_snapshots() -> None:
    t = [T0 + timedelta(hours=i) for i in range(4)]
    snaps = [(t[0], {("1", "champion")}), (t[1], {("2", "champion")}), (t[2], {("2", "champion")}), (t[3], set())]
    rows = [(h.version, h.since, h.not_before, h.until, h.last_seen) for h in _periods("m", "alias", snaps)]
    assert rows == [("1", t[0], None, t[1], t[0]), ("2", t[1], t[0], t[3], t[2])]


# -- the embedded default and lazy imports -----------------------------------------------------


def test_embedded_default_adds_a_local_mlflow_store(tmp_path: Path) -> None:
    assert "type: mlflow" not in sources_block(tmp_path, env={})
    (tmp_path / "mlruns").mkdir()
    assert "tracking_uri: ./mlruns" in sources_block(tmp_path, env={})
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert 'tracking_uri: "sqlite:///mlflow.db"' in sources_block(tmp_path, env={})
    block = sources_block(tmp_path, env={"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
                                         "MLFLOW_TRACKING_TOKEN": "t0k"})
    assert 'tracking_uri: "http://mlflow.internal:5000"' in block and 'token: "${MLFLOW_TRACKING_TOKEN}"' in block
    assert "t0k" not in block
    creds = sources_block(tmp_path, env={"MLFLOW_TRACKING_URI": "https://u:pw@host/"})
    assert 'tracking_uri: "${MLFLOW_TRACKING_URI}"' in creds and "pw" not in creds


def test_the_embedded_default_with_mlflow_loads(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_TRACKING_USERNAME": "ann",
           "MLFLOW_TRACKING_PASSWORD": "pw"}
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text(render_config(tmp_path, None).replace(sources_block(tmp_path).rstrip("\n"),
                                                         sources_block(tmp_path, env).rstrip("\n")))
    loaded = load_config(cfg, cwd=tmp_path, env=env)
    opts = loaded.options["mlflow"]
    assert isinstance(opts, MlflowOptions)
    assert (opts.tracking_uri, opts.username, opts.password) == ("http://127.0.0.1:5000", "ann", "pw")
    assert "pw" in loaded.secrets
    assert yaml.safe_load(cfg.read_text())["sources"][-1]["type"] == "mlflow"


def test_importing_the_collector_does_not_import_mlflow() -> None:
    code = ("import sys\nimport affidavit.collectors.mlflow, affidavit.agent.cli_mlflow\n"
            "import affidavit.collectors.mlflow_history\n"
            "from affidavit.collectors.base import collector_types\ncollector_types()\n"
            "assert 'mlflow' not in sys.modules, sorted(m for m in sys.modules if m.startswith('mlflow'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- errors that need no server -----------------------------------------------------------------


def test_nothing_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RetriableError, match=rf"source 'gone': MLflow at {url}: ConnectionError"):
        check("gone", url)


def test_a_missing_local_store(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="does not exist"):
        check("local", "sqlite:///nowhere/mlflow.db", base_dir=tmp_path)
    with pytest.raises(FatalError, match="does not exist"):
        check("local", "./mlruns", base_dir=tmp_path)
    with pytest.raises(FatalError, match="scheme 'ftp' is not supported"):
        check("local", "ftp://host/x", base_dir=tmp_path)


def test_history_command_needs_one_mlflow_source(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from affidavit.agent.cli_app import App
    from affidavit.agent.cli_mlflow import mlflow_group

    config = tmp_path / "affidavit.yaml"
    config.write_text("sources:\n"
                      "  - {name: a, type: mlflow, tracking_uri: 'http://127.0.0.1:1'}\n"
                      "  - {name: b, type: mlflow, tracking_uri: 'http://127.0.0.1:1'}\n"
                      "  - {name: docs, type: files, paths: ['*.md'], allow_empty: true}\n")
    app = App(config, 0, tmp_path, {})
    several = CliRunner().invoke(mlflow_group, ["history", "m"], obj=app)
    assert several.exit_code == 2 and "several mlflow sources (a, b)" in several.output
    wrong = CliRunner().invoke(mlflow_group, ["history", "m", "--source", "docs"], obj=app)
    assert wrong.exit_code == 2 and "of type files, not mlflow" in wrong.output
    unknown = CliRunner().invoke(mlflow_group, ["history", "m", "--source", "zzz"], obj=app)
    assert unknown.exit_code != 0 and "no source named 'zzz'" in str(unknown.exception)
    none = tmp_path / "none.yaml"
    none.write_text("sources: []\n")
    empty = CliRunner().invoke(mlflow_group, ["history", "m"], obj=App(none, 0, tmp_path, {}))
    assert empty.exit_code == 2 and "has no source of type mlflow" in empty.output


def test_local_store_uris_resolve_from_the_config_directory(tmp_path: Path) -> None:
    from affidavit.connectors.mlflow_local import resolve_uri, safe_location

    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "mlruns").mkdir()
    assert resolve_uri("sqlite:///mlflow.db", tmp_path, "s") == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert resolve_uri("./mlruns", tmp_path, "s") == (tmp_path / "mlruns").resolve().as_uri()
    assert resolve_uri("databricks", tmp_path, "s") == "databricks"
    assert resolve_uri("databricks://prod", tmp_path, "s") == "databricks://prod"
    assert resolve_uri("postgresql://u:pw@db/mlflow", tmp_path, "s") == "postgresql://u:pw@db/mlflow"
    assert safe_location("postgresql://u:pw@db/mlflow") == "postgresql://u@db/mlflow"
    with pytest.raises(FatalError, match="not a sqlite file URI"):
        resolve_uri("sqlite://", tmp_path, "s")

"""The JSON documents the MLflow collector yields, and their stable logical names.

Every document holds only what the server shows (no collection time), so the
same server state always gives the same bytes: that is what lets an
incremental run compare digests. Key/value lists (params, tags) become
mappings, so the redaction step recognises secret-looking keys
(``api_key``, ``db_password``) and replaces their values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

GIT_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_TAGS = {
    "name": "mlflow.source.name",
    "type": "mlflow.source.type",
    "git_commit": GIT_COMMIT_TAG,
    "git_repo_url": "mlflow.source.git.repoURL",
    "git_branch": "mlflow.source.git.branch",
}
CONTEXT_TAG = "mlflow.data.context"


def iso_ms(ms: Any) -> str | None:
    """Epoch milliseconds (int or numeric string) as ISO 8601 UTC with Z; None when absent or zero."""
    try:
        value = int(ms)
    except (TypeError, ValueError):
        return None
    if value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def kv(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """MLflow's ``[{"key": k, "value": v}]`` as a sorted mapping."""
    return {str(i.get("key")): str(i.get("value", "")) for i in sorted(items or (), key=lambda i: str(i.get("key")))}


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _json_or_text(value: Any) -> Any:
    """A JSON-encoded string field (dataset source, profile) decoded when it is JSON."""
    if not isinstance(value, str) or not value:
        return _text(value)
    try:
        return json.loads(value)
    except ValueError:
        return value


def metrics_map(items: Iterable[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in sorted(items or (), key=lambda m: str(m.get("key"))):
        out[str(m.get("key"))] = {"value": m.get("value"), "step": int(m.get("step") or 0),
                                  "timestamp": iso_ms(m.get("timestamp"))}
    return out


# -- logical names ------------------------------------------------------------------


def _q(text: str) -> str:
    return quote(text, safe="-_.~@+=,")


@dataclass(frozen=True)
class Names:
    """Stable artefact names under ``mlflow/<source>/``."""

    source: str

    @property
    def prefix(self) -> str:
        return f"mlflow/{self.source}/"

    def model(self, name: str) -> str:
        return f"{self.prefix}registered-model/{_q(name)}.json"

    def version(self, name: str, version: str) -> str:
        return f"{self.prefix}registered-model/{_q(name)}/version/{_q(version)}.json"

    def version_dir(self, name: str, version: str) -> str:
        return f"{self.prefix}registered-model/{_q(name)}/version/{_q(version)}/"

    def files(self, name: str, version: str) -> str:
        return self.version_dir(name, version) + "files.json"

    def model_file(self, name: str, version: str, path: str) -> str:
        return self.version_dir(name, version) + "files/" + "/".join(_q(p) for p in path.split("/"))

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run/{_q(run_id)}.json"

    def logged_model(self, model_id: str) -> str:
        return f"{self.prefix}logged-model/{_q(model_id)}.json"

    def experiment(self, experiment_id: str) -> str:
        return f"{self.prefix}experiment/{_q(experiment_id)}.json"

    def parse(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        """(kind, identifiers) of one of this source's names; None for a name this collector never makes."""
        if not name.startswith(self.prefix):
            return None
        parts = name.removeprefix(self.prefix).split("/")
        head = parts[0]
        if head in ("run", "logged-model", "experiment") and len(parts) == 2 and parts[1].endswith(".json"):
            return head, (unquote(parts[1].removesuffix(".json")),)
        if head != "registered-model" or len(parts) < 2:
            return None
        model = unquote(parts[1].removesuffix(".json"))
        if len(parts) == 2 and parts[1].endswith(".json"):
            return "registered-model", (model,)
        if len(parts) == 4 and parts[2] == "version" and parts[3].endswith(".json"):
            return "model-version", (model, unquote(parts[3].removesuffix(".json")))
        if len(parts) >= 5 and parts[2] == "version":
            version = unquote(parts[3])
            if parts[4:] == ["files.json"]:
                return "model-files", (model, version)
            if parts[4] == "files" and len(parts) > 5:
                return "model-file", (model, version, "/".join(unquote(p) for p in parts[5:]))
        return None


# -- documents ------------------------------------------------------------------------


def registered_model_doc(rm: Mapping[str, Any], versions: Sequence[str], server: str) -> dict[str, Any]:
    aliases = {str(a.get("alias")): str(a.get("version")) for a in rm.get("aliases", ()) or ()}
    return {
        "kind": "registered-model",
        "server": server,
        "name": rm.get("name"),
        "description": _text(rm.get("description")),
        "created": iso_ms(rm.get("creation_timestamp")),
        "last_updated": iso_ms(rm.get("last_updated_timestamp")),
        "created_by": _text(rm.get("user_id")),
        "tags": kv(rm.get("tags")),
        "aliases": dict(sorted(aliases.items())),
        "versions": sorted(versions, key=_version_key),
    }


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 62, v)


def source_kind(source: str) -> str:
    if source.startswith("runs:/"):
        return "run-artifacts"
    if source.startswith("models:/m-"):
        return "logged-model"
    if source.startswith("models:/"):
        return "registered-model-copy"
    return "uri"


def version_doc(v: Mapping[str, Any], aliases: Sequence[str], production: Sequence[str],
                creator: str | None, run: Mapping[str, Any] | None, logged: Mapping[str, Any] | None,
                names: Names, server: str, findings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A model version, what makes it production, the facts its findings rest on, and those findings."""
    source = str(v.get("source") or "")
    model_id = source.removeprefix("models:/").split("/")[0] if source_kind(source) == "logged-model" else None
    model_id = _text(v.get("model_id")) or model_id
    run_id = _text(v.get("run_id"))
    run_ref: dict[str, Any] | None = None
    if run_id:
        info = (run or {}).get("info", {})
        tags = kv((run or {}).get("data", {}).get("tags"))
        run_ref = {
            "run_id": run_id,
            "found": run is not None,
            "artefact": names.run(run_id),
            "experiment_id": _text(info.get("experiment_id")),
            "user": _text(info.get("user_id")) or tags.get("mlflow.user"),
            "git_commit": tags.get(GIT_COMMIT_TAG),
            "dataset_inputs": len((run or {}).get("inputs", {}).get("dataset_inputs", ()) or ()),
        }
    return {
        "kind": "model-version",
        "server": server,
        "model": v.get("name"),
        "version": str(v.get("version")),
        "status": _text(v.get("status")),
        "status_message": _text(v.get("status_message")),
        "current_stage": _text(v.get("current_stage")),
        "aliases": sorted(aliases),
        "production": list(production),
        "source": source,
        "source_kind": source_kind(source),
        "run": run_ref,
        "logged_model": {"model_id": model_id, "found": logged is not None,
                         "artefact": names.logged_model(model_id)} if model_id else None,
        "description": _text(v.get("description")),
        "tags": kv(v.get("tags")),
        "created": iso_ms(v.get("creation_timestamp")),
        "last_updated": iso_ms(v.get("last_updated_timestamp")),
        "created_by": creator,
        "run_link": _text(v.get("run_link")),
        "findings": [dict(f) for f in findings],
    }


def dataset_inputs(run: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for di in (run or {}).get("inputs", {}).get("dataset_inputs", ()) or ():
        ds = di.get("dataset", {}) or {}
        tags = kv(di.get("tags"))
        out.append({
            "name": _text(ds.get("name")),
            "digest": _text(ds.get("digest")),
            "source_type": _text(ds.get("source_type")),
            "source": _json_or_text(ds.get("source")),
            "context": tags.get(CONTEXT_TAG),
            "schema": _json_or_text(ds.get("schema")),
            "profile": _json_or_text(ds.get("profile")),
            "tags": tags,
        })
    return out


def run_doc(run: Mapping[str, Any], server: str) -> dict[str, Any]:
    info = run.get("info", {}) or {}
    data = run.get("data", {}) or {}
    tags = kv(data.get("tags"))
    run_id = _text(info.get("run_id")) or _text(info.get("run_uuid"))
    return {
        "kind": "run",
        "server": server,
        "run_id": run_id,
        "run_name": _text(info.get("run_name")) or tags.get("mlflow.runName"),
        "experiment_id": _text(info.get("experiment_id")),
        "user": _text(info.get("user_id")) or tags.get("mlflow.user"),
        "status": _text(info.get("status")),
        "lifecycle_stage": _text(info.get("lifecycle_stage")),
        "start": iso_ms(info.get("start_time")),
        "end": iso_ms(info.get("end_time")),
        "artifact_uri": _text(info.get("artifact_uri")),
        "source_code": {k: tags.get(t) for k, t in SOURCE_TAGS.items()},
        "params": kv(data.get("params")),
        "metrics": metrics_map(data.get("metrics")),
        "tags": tags,
        "datasets": dataset_inputs(run),
        "model_inputs": sorted(str(m.get("model_id")) for m in (run.get("inputs", {}) or {}).get("model_inputs", ())
                               or ()),
        "model_outputs": sorted(str(m.get("model_id")) for m in (run.get("outputs", {}) or {}).get("model_outputs", ())
                                or ()),
    }


def logged_model_doc(lm: Mapping[str, Any], server: str) -> dict[str, Any]:
    info = lm.get("info", {}) or {}
    data = lm.get("data", {}) or {}
    return {
        "kind": "logged-model",
        "server": server,
        "model_id": _text(info.get("model_id")),
        "name": _text(info.get("name")),
        "experiment_id": _text(info.get("experiment_id")),
        "source_run_id": _text(info.get("source_run_id")),
        "status": _text(info.get("status")),
        "model_type": _text(info.get("model_type")),
        "artifact_uri": _text(info.get("artifact_uri")),
        "created": iso_ms(info.get("creation_timestamp_ms")),
        "last_updated": iso_ms(info.get("last_updated_timestamp_ms")),
        "created_by": _text(info.get("creator_id")),
        "params": kv(data.get("params")),
        "metrics": metrics_map(data.get("metrics")),
        "tags": kv(info.get("tags")),
    }


def experiment_doc(e: Mapping[str, Any], server: str) -> dict[str, Any]:
    return {
        "kind": "experiment",
        "server": server,
        "experiment_id": _text(e.get("experiment_id")),
        "name": _text(e.get("name")),
        "artifact_location": _text(e.get("artifact_location")),
        "lifecycle_stage": _text(e.get("lifecycle_stage")),
        "created": iso_ms(e.get("creation_time")),
        "last_updated": iso_ms(e.get("last_update_time")),
        "tags": kv(e.get("tags")),
    }


def marker_doc(kind: str, ids: Sequence[str], status: str, server: str) -> dict[str, Any]:
    """What replaces an object's evidence once it is gone: ``deleted`` or ``out-of-scope``.

    Only the object's identity: the same object always gets the same bytes, so
    a marker is stored once, not on every run.
    """
    return {"kind": kind, "server": server, "ids": list(ids), "deleted": status == "deleted", "status": status}

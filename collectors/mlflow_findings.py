"""Findings for model versions (evidence-guide.md §3): release approval, training data, validation, lineage.

"Production" is a version under a configured alias or in a configured stage.
Approval, data and validation rules apply to production versions only;
lineage applies to every version. Data the rules need that is absent because
a convention was not followed gives ``unknown``, never ``pass``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from affidavit.collectors.base import Finding
from affidavit.collectors.mlflow_docs import GIT_COMMIT_TAG, dataset_inputs, kv

APPROVAL = "common:CC-MODEL-APPROVAL"
DATA = "common:CC-DATA-DOCUMENTED"
VALIDATION = "common:CC-MODEL-VALIDATION"
LINEAGE = "common:CC-MODEL-LINEAGE"
CARD = "common:CC-MODEL-CARD"
INVENTORY = "common:CC-AI-INVENTORY"
ENVIRONMENT_FILES = ("requirements.txt", "conda.yaml", "python_env.yaml", "environment.yml", "environment.yaml")


@dataclass(frozen=True)
class Threshold:
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Policy:
    """The conventions the rules assume (all configurable per source)."""

    production_aliases: tuple[str, ...] = ("production", "prod", "champion")
    production_stages: tuple[str, ...] = ("Production",)
    approval_tags: tuple[str, ...] = ("approved_by",)
    approver_tag: str | None = "approved_by"
    approvers: tuple[str, ...] | None = None
    evaluation_metrics: tuple[str, ...] = (
        "*accuracy*", "*auc*", "*f1*", "*precision*", "*recall*", "*rmse*", "*mse*", "*mae*", "*r2*",
        "*mape*", "*logloss*", "eval*", "test*", "val*",
    )
    eval_contexts: tuple[str, ...] = ("test", "eval", "evaluation", "validation")
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)


def production_reasons(aliases: Sequence[str], stage: str | None, policy: Policy) -> list[str]:
    """Why a version counts as production (empty: it does not)."""
    wanted = {a.lower() for a in policy.production_aliases}
    out = [f"alias {a}" for a in sorted(aliases) if a.lower() in wanted]
    if stage and stage.lower() in {s.lower() for s in policy.production_stages}:
        out.append(f"stage {stage}")
    return out


def creator_of(version: Mapping[str, Any], run: Mapping[str, Any] | None) -> str | None:
    """Who created a version: its ``user_id``, else the source run's user (often the only one without auth)."""
    if version.get("user_id"):
        return str(version["user_id"])
    if run is None:
        return None
    info = run.get("info", {}) or {}
    return str(info.get("user_id") or kv(run.get("data", {}).get("tags")).get("mlflow.user") or "") or None


def version_findings(subject: str, version: Mapping[str, Any], production: Sequence[str], creator: str | None,
                     run: Mapping[str, Any] | None, logged: Mapping[str, Any] | None,
                     policy: Policy) -> list[Finding]:
    out = [lineage(subject, version, run)]
    if production:
        where = " and ".join(production)
        out.append(approval(subject, where, kv(version.get("tags")), creator, policy))
        out.append(data_documented(subject, where, version, run))
        out.append(validation(subject, where, version, run, logged, policy))
    return out


def lineage(subject: str, version: Mapping[str, Any], run: Mapping[str, Any] | None) -> Finding:
    run_id = version.get("run_id")
    if not run_id:
        return Finding(LINEAGE, "fail", f"{subject}: no source run recorded", subject)
    if run is None:
        return Finding(LINEAGE, "fail", f"{subject}: source run {run_id} no longer exists", subject)
    commit = kv(run.get("data", {}).get("tags")).get(GIT_COMMIT_TAG)
    if not commit:
        return Finding(LINEAGE, "fail", f"{subject}: run {run_id} records no git commit ({GIT_COMMIT_TAG})", subject)
    return Finding(LINEAGE, "pass", f"{subject}: run {run_id} at commit {commit[:12]}", subject)


def approval(subject: str, where: str, tags: Mapping[str, str], creator: str | None, policy: Policy) -> Finding:
    missing = [t for t in policy.approval_tags if not tags.get(t, "").strip()]
    if missing:
        return Finding(APPROVAL, "fail", f"{subject}: production ({where}) without approval tag "
                       f"{', '.join(missing)}", subject)
    approver = tags.get(policy.approver_tag, "").strip() if policy.approver_tag else ""
    if policy.approver_tag and not approver:
        return Finding(APPROVAL, "unknown", f"{subject}: approval recorded but no approver in tag "
                       f"{policy.approver_tag}", subject)
    if approver and creator and approver.lower() == creator.lower():
        return Finding(APPROVAL, "fail", f"{subject}: approved by its own creator {creator}", subject)
    if approver and policy.approvers is not None and approver.lower() not in {a.lower() for a in policy.approvers}:
        return Finding(APPROVAL, "fail", f"{subject}: approver {approver} is not in the approver list", subject)
    reason = f"{subject}: approved by {approver}" if approver else f"{subject}: approval tags present"
    if approver and not creator:
        reason += " (creator unknown: segregation of duties not checked)"
    return Finding(APPROVAL, "pass", reason, subject)


def data_documented(subject: str, where: str, version: Mapping[str, Any], run: Mapping[str, Any] | None) -> Finding:
    if not version.get("run_id") or run is None:
        return Finding(DATA, "unknown", f"{subject}: production ({where}) with no readable source run: "
                       "its training data cannot be identified", subject)
    datasets = dataset_inputs(run)
    run_id = version.get("run_id")
    if not datasets:
        return Finding(DATA, "fail", f"{subject}: production ({where}) but run {run_id} has no dataset inputs",
                       subject)
    incomplete = [str(d["name"] or "(unnamed)") for d in datasets if not d["digest"] or not d["source"]]
    if incomplete:
        return Finding(DATA, "fail", f"{subject}: dataset input without digest or source: "
                       f"{', '.join(incomplete)}", subject)
    listed = ", ".join(f"{d['name']} ({d['context'] or 'no context'})" for d in datasets)
    return Finding(DATA, "pass", f"{subject}: {len(datasets)} dataset input(s) with digest and source: {listed}",
                   subject)


def _metrics(run: Mapping[str, Any] | None, logged: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for holder in (run, logged):
        for m in (holder or {}).get("data", {}).get("metrics", ()) or ():
            try:
                out.setdefault(str(m.get("key")), float(m.get("value")))
            except (TypeError, ValueError):
                continue
    return out


def validation(subject: str, where: str, version: Mapping[str, Any], run: Mapping[str, Any] | None,
               logged: Mapping[str, Any] | None, policy: Policy) -> Finding:
    if run is None and logged is None:
        return Finding(VALIDATION, "unknown", f"{subject}: production ({where}) with no readable run or logged "
                       "model: evaluation results cannot be checked", subject)
    metrics = _metrics(run, logged)
    evals = sorted(k for k in metrics if any(fnmatchcase(k.lower(), p.lower()) for p in policy.evaluation_metrics))
    if not evals:
        return Finding(VALIDATION, "fail", f"{subject}: production ({where}) with no evaluation metrics "
                       f"(none of {', '.join(metrics) or 'no metrics'} matches the evaluation keys)", subject)
    for key, t in sorted(policy.thresholds.items()):
        if key not in metrics:
            return Finding(VALIDATION, "fail", f"{subject}: metric {key} (it has a threshold) is not recorded",
                           subject)
        value = metrics[key]
        if (t.minimum is not None and value < t.minimum) or (t.maximum is not None and value > t.maximum):
            bound = f">= {t.minimum}" if t.minimum is not None and value < t.minimum else f"<= {t.maximum}"
            return Finding(VALIDATION, "fail", f"{subject}: {key} = {value:g} misses its threshold {bound}", subject)
    contexts = {str(d["context"]).lower() for d in dataset_inputs(run) if d["context"]}
    if contexts and not contexts & {c.lower() for c in policy.eval_contexts}:
        return Finding(VALIDATION, "fail", f"{subject}: no test/eval dataset input (contexts: "
                       f"{', '.join(sorted(contexts))})", subject)
    shown = ", ".join(f"{k}={metrics[k]:g}" for k in evals[:5])
    reason = f"{subject}: evaluation metrics {shown}"
    reason += "; thresholds met" if policy.thresholds else "; no thresholds configured"
    if not contexts:
        reason += f"; dataset contexts not recorded ({'mlflow.data.context'})"
    return Finding(VALIDATION, "pass", reason, subject)


def files_findings(subject: str, paths: Sequence[str]) -> list[Finding]:
    """Lineage of the model's files (subject: the files, not the version): an environment file must be there."""
    names = {p.rsplit("/", 1)[-1] for p in paths}
    out = []
    if not paths:
        out.append(Finding(LINEAGE, "fail", f"{subject}: the model has no files", subject))
    elif names & set(ENVIRONMENT_FILES):
        found = ", ".join(sorted(names & set(ENVIRONMENT_FILES)))
        out.append(Finding(LINEAGE, "pass", f"{subject}: {len(paths)} file(s) hashed; environment in {found}",
                           subject))
    else:
        out.append(Finding(LINEAGE, "fail", f"{subject}: model files without an environment file "
                           f"({', '.join(ENVIRONMENT_FILES[:3])})", subject))
    return out

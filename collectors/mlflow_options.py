"""The ``mlflow`` source's options (validated by the config loader) and what they build."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from affidavit.collectors.base import CollectorOptions
from affidavit.collectors.mlflow_findings import Policy, Threshold
from affidavit.config.durations import parse_duration
from affidavit.connectors.mlflow import Connection


def _duration(v: Any) -> Any:
    if isinstance(v, str):
        return parse_duration(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return timedelta(seconds=v)
    return v


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class ThresholdOption(CollectorOptions):
    """An acceptance threshold for one metric: ``{min: 0.8}``, ``{max: 0.1}`` or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> ThresholdOption:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class MlflowOptions(CollectorOptions):
    """Where the tracking server is, how to talk to it, what to collect and which conventions to test."""

    tracking_uri: str = Field(min_length=1, description="http(s)://host:port, sqlite:///mlflow.db, ./mlruns, databricks")
    registry_uri: str | None = Field(None, description="model registry URI when it differs (local stores only)")
    username: str | None = Field(None, description="basic auth user (write ${ENV_VAR})")
    password: str | None = Field(None, repr=False, description="basic auth password (write ${ENV_VAR})")
    token: str | None = Field(None, repr=False, description="bearer token (write ${ENV_VAR})")
    verify_tls: bool = True
    ca_bundle: str | None = Field(None, description="CA certificates (PEM) for an https server")
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per HTTP call")
    max_retries: int = Field(5, ge=0, le=20, description="retries of a call on 429, 5xx or connection errors")
    backoff: float = Field(0.5, ge=0, le=60, description="seconds before the first retry, doubling")
    max_retry_wait: float = Field(60.0, ge=0, le=3600, description="longest single wait, Retry-After included")
    page_size: int = Field(500, ge=1, le=1000)
    download_workers: int = Field(4, ge=1, le=32, description="parallel downloads of model files")
    models: list[str] = Field(default_factory=lambda: ["*"], description="registered model name patterns")
    experiments: list[str] = Field(default_factory=list,
                                   description="experiments (names or ids, '*' for all) whose every run is collected")
    collect_experiments: bool = True
    model_files: bool = True
    rehash_after: Duration = Field(timedelta(days=30), description="how long model-file digests stay current")
    due_margin: Duration = Field(timedelta(days=2), description="re-attest unchanged evidence this long before it expires")
    production_aliases: list[str] = Field(default_factory=lambda: ["production", "prod", "champion"])
    production_stages: list[str] = Field(default_factory=lambda: ["Production"])
    approval_tags: list[str] = Field(default_factory=lambda: ["approved_by"],
                                     description="version tags that must all be set on a production version")
    approver_tag: str | None = Field("approved_by", description="the version tag naming the approver")
    approvers: list[str] | None = Field(None, description="who may approve (unset: anyone but the creator)")
    evaluation_metrics: list[str] = Field(default_factory=lambda: list(Policy().evaluation_metrics))
    eval_contexts: list[str] = Field(default_factory=lambda: list(Policy().eval_contexts))
    thresholds: dict[str, ThresholdOption] = Field(default_factory=dict)

    @field_validator("models", "production_aliases", "approval_tags")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v or any(not s.strip() for s in v):
            raise ValueError("give at least one non-empty name")
        return v

    @model_validator(mode="after")
    def _auth(self) -> MlflowOptions:
        if self.token and (self.username or self.password):
            raise ValueError("set either token or username/password, not both")
        if self.password and not self.username:
            raise ValueError("a password needs a username")
        return self

    def connection(self, source: str, base_dir: Path) -> Connection:
        verify: bool | str = self.verify_tls
        if self.ca_bundle:
            bundle = Path(self.ca_bundle).expanduser()
            verify = str(bundle if bundle.is_absolute() else base_dir / bundle)
        return Connection(
            source=source, tracking_uri=self.tracking_uri, registry_uri=self.registry_uri,
            username=self.username, password=self.password, token=self.token, verify=verify,
            timeout=self.timeout, max_retries=self.max_retries, backoff=self.backoff,
            max_retry_wait=self.max_retry_wait, page_size=self.page_size, workers=self.download_workers,
            base_dir=base_dir,
        )

    def policy(self) -> Policy:
        return Policy(
            production_aliases=tuple(self.production_aliases), production_stages=tuple(self.production_stages),
            approval_tags=tuple(self.approval_tags), approver_tag=self.approver_tag,
            approvers=tuple(self.approvers) if self.approvers is not None else None,
            evaluation_metrics=tuple(self.evaluation_metrics), eval_contexts=tuple(self.eval_contexts),
            thresholds={k: Threshold(t.min, t.max) for k, t in self.thresholds.items()},
        )

"""Typed config models. The YAML file's shape (architecture.md) is fixed by these."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from affidavit.config.durations import check_schedule, parse_duration
from affidavit.errors import ConfigError

SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
LOG_ORIGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$")  # = signing.tlog_note.ORIGIN_RE
CONTROL_ID = re.compile(r"^[a-z0-9][a-z0-9-]*:[A-Za-z0-9][A-Za-z0-9._()-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Model):
    path: Path = Field(Path("affidavit-store"), description="the local store, always written first")
    remote: str | None = Field(None, description="s3://bucket/prefix or gs://bucket/prefix (not yet supported)")
    lock_timeout: float = Field(30.0, ge=0, description="seconds a collection waits for the store lock")

    @field_validator("remote")
    @classmethod
    def _remote(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("remote stores (s3://, gs://) are not supported by this version yet; remove the key")
        return v


KMS_SCHEME = "awskms://"  # = signing.kms.SCHEME (not imported: the config must not pull in the signing stack)
_KEY_SCHEMA = {"type": "string", "description": "a key file (encrypted PKCS#8 PEM, relative to the config file) "
               "or an AWS KMS key: awskms://<key id, alias/NAME or key ARN>"}


def _key_ref(v: Any) -> Any:
    """A key reference: an ``awskms://`` URI stays a string, anything else is a file path."""
    if isinstance(v, str) and v.startswith(KMS_SCHEME):
        return v
    if isinstance(v, str):
        if "://" in v:
            raise ValueError(f"{v!r} is neither a key file nor an AWS KMS key (awskms://...)")
        return Path(v)
    return v


KeyRef = Annotated[Path | str, BeforeValidator(_key_ref), WithJsonSchema(_KEY_SCHEMA)]


class SigningConfig(_Model):
    key: KeyRef = Field(Path("affidavit.key.pem"), description="the signing key: an encrypted PKCS#8 PEM file, "
                        "or an AWS KMS key awskms://<key id, alias/NAME or ARN> (no passphrase then)")
    passphrase_file: Path | None = Field(None, description="file holding the key passphrase (mode 0600)")
    algorithm: Literal["ecdsa-p256", "ed25519"] = Field("ecdsa-p256", description="algorithm for new keys")
    tsa_roots: Path | None = Field(None, description="PEM file with the timestamp authority's root certificate(s); "
                                   "required with tsa_url")
    tsa_url: str | None = Field(None, description="RFC 3161 timestamp authority: every signature gets a token")
    tsa_timeout: float = Field(10.0, gt=0, le=300, description="seconds to wait for the timestamp authority")
    kms_region: str | None = Field(None, description="AWS region of an awskms:// key (default: from its ARN or "
                                   "the AWS environment)")
    kms_endpoint: str | None = Field(None, description="AWS KMS endpoint URL (default: AWS's; set for a "
                                     "VPC endpoint or an emulator)")
    log_key: KeyRef = Field(
        Path("affidavit-log.key.pem"),
        description="the transparency log's own ECDSA P-256 key (encrypted PKCS#8, same passphrase as key; "
        "created on the first collection), or an awskms:// key",
    )
    log_origin: str | None = Field(
        None,
        description="the log's name in its checkpoints, e.g. affidavit.example.org/prod "
        "(default: affidavit.local/<agent name or host name>); fixed when the log starts",
    )

    @property
    def key_is_kms(self) -> bool:
        return isinstance(self.key, str)

    @property
    def key_file(self) -> Path:
        """The signing key's file; ConfigError for a KMS key (check :attr:`key_is_kms` first)."""
        if isinstance(self.key, str):
            raise ConfigError(f"signing.key is the AWS KMS key {self.key}; this command needs a key file",
                              hint="manage KMS keys in AWS KMS")
        return self.key

    @field_validator("log_origin")
    @classmethod
    def _log_origin(cls, v: str | None) -> str | None:
        if v is not None and not LOG_ORIGIN.match(v):
            raise ValueError(
                f"{v!r} is not a log origin: use letters, digits and . _ / : - (at most 200), "
                "starting with a letter or digit, e.g. affidavit.example.org/prod"
            )
        return v

    @field_validator("tsa_url")
    @classmethod
    def _tsa(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL of an RFC 3161 timestamp authority")
        if info.data.get("tsa_roots") is None:
            raise ValueError("RFC 3161 timestamps need the TSA's root certificate(s) to check its tokens: "
                             "set signing.tsa_roots to a PEM file")
        return v

    @field_validator("kms_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v


def _duration(v: Any) -> timedelta:
    if isinstance(v, timedelta):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return timedelta(seconds=v)
    if not isinstance(v, str):
        raise ValueError("expected a duration such as 12h, 7d or P7D")
    return parse_duration(v)


def _control_ids(v: list[str]) -> list[str]:
    for c in v:
        if not CONTROL_ID.match(c):
            raise ValueError(f"{c!r} is not a control id; write framework:id, e.g. common:CC-AI-POLICY")
    return v


class SourceConfig(BaseModel):
    """One source. Keys other than these are the collector type's own options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="unique name; lower case letters, digits, '.', '_', '-'")
    type: str = Field(description="collector type, e.g. files, git")
    schedule: str | None = Field(None, description="'every 1h' or a cron expression (daemon only)")
    ttl: timedelta | None = Field(None, description="how long the evidence stays fresh, e.g. 7d")
    controls: list[str] = Field(default_factory=list, description="extra controls this source's evidence maps to")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SOURCE_NAME.match(v):
            raise ValueError(f"{v!r} is not a source name; use lower case letters, digits, '.', '_' and '-'")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        return None if v is None else check_schedule(v)

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> timedelta | None:
        return None if v is None else _duration(v)

    @field_validator("controls")
    @classmethod
    def _controls(cls, v: list[str]) -> list[str]:
        return _control_ids(v)

    def options(self) -> dict[str, Any]:
        """The type-specific keys."""
        return dict(self.model_extra or {})


class ControlsConfig(_Model):
    extra: list[str] = Field(default_factory=list, description="YAML files with frameworks, controls, mappings")
    soa: Path | None = Field(None, description="Statement of Applicability file")


class Config(_Model):
    agent: str | None = Field(None, description="this agent's name in signed statements (default: host name)")
    store: StoreConfig = StoreConfig()
    signing: SigningConfig = SigningConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    controls: ControlsConfig = ControlsConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice; names must be unique")
            seen.add(s.name)
        return self

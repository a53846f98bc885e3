"""Load, resolve and validate the config file.

Every problem is reported as one ConfigError naming the file, the line where
YAML can tell, the key path (``sources[1].paths``) and what is expected; all
problems are listed at once.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from affidavit.collectors.base import Collector, CollectorOptions, collector_types
from affidavit.config.models import Config, SourceConfig
from affidavit.errors import ConfigError

CONFIG_NAME = "affidavit.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Environment overrides for containers: variable -> (section, key)
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "AFFIDAVIT_STORE_PATH": ("store", "path"),
    "AFFIDAVIT_SIGNING_KEY": ("signing", "key"),
    "AFFIDAVIT_PASSPHRASE_FILE": ("signing", "passphrase_file"),
}


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path | None  # None: the embedded default, not read from a file
    base_dir: Path
    secrets: frozenset[str] = frozenset()  # values that came from ${ENV} references: never log them
    options: Mapping[str, CollectorOptions] = field(default_factory=dict)  # by source name
    collectors: Mapping[str, type[Collector]] = field(default_factory=dict)  # by type name

    def source(self, name: str) -> SourceConfig:
        for s in self.config.sources:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.config.sources) or "none"
        raise ConfigError(f"no source named {name!r} in {self.path or 'the config'} (sources: {known})")

    def collector_for(self, source: SourceConfig) -> Collector:
        return self.collectors[source.type]()


def default_config_path(cwd: Path) -> Path | None:
    """``./affidavit.yaml``, then the user's config directory; None when neither exists."""
    import click

    for candidate in (cwd / CONFIG_NAME, Path(click.get_app_dir("affidavit")) / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    """Key path -> 1-based line, from the YAML node tree (best effort)."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _where(name: str, lines: Mapping[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{name}:{lines[loc[:n]]}"
    return name


def _resolve_env(value: Any, loc: tuple[str | int, ...], env: Mapping[str, str],
                 problems: list[tuple[tuple[str | int, ...], str]], secrets: set[str]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in env:
                problems.append((loc, f"environment variable {var} is not set (referenced as ${{{var}}})"))
                return ""
            secrets.add(env[var])
            return env[var]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _resolve_env(v, loc + (k,), env, problems, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, loc + (i,), env, problems, secrets) for i, v in enumerate(value)]
    return value


def _pydantic_problems(err: ValidationError, model: type[BaseModel] | None,
                       prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(model, loc[len(prefix):-1]) if model else []
            close = difflib.get_close_matches(key, allowed, n=1)
            msg = f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "") + (
                f" (allowed: {', '.join(allowed)})" if allowed and not close else ""
            )
        elif e["type"] == "missing":
            msg = "required key is missing"
        yield loc, msg


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        f = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if f is None:
            return []
        ann = f.annotation
        args = getattr(ann, "__args__", None)
        current = args[0] if args else ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def load_config(path: Path | None, *, cwd: Path, env: Mapping[str, str] | None = None,
                default: dict[str, Any] | None = None) -> LoadedConfig:
    """Load ``path`` (or ``default``, the embedded config, when path is None)."""
    env = os.environ if env is None else env
    name = str(path) if path else "embedded default config"
    text = ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist", hint="run `affidavit init` to write one") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{where}: malformed YAML: {problem}") from None
        raw = {} if raw is None else raw
        base_dir = path.resolve().parent
    else:
        raw = default or {}
        base_dir = cwd
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: the config must be a mapping of sections (store, signing, sources, controls)")
    lines = _line_map(text)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    secrets: set[str] = set()
    resolved = _resolve_env(raw, (), env, problems, secrets)
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sec = resolved.setdefault(section, {})
            if isinstance(sec, dict):
                sec[key] = env[var]

    config: Config | None = None
    if not problems:
        try:
            config = Config.model_validate(resolved)
        except ValidationError as e:
            problems.extend(_pydantic_problems(e, Config))

    collectors = collector_types()
    options: dict[str, CollectorOptions] = {}
    if config is not None:
        for i, src in enumerate(config.sources):
            loc: tuple[str | int, ...] = ("sources", i)
            cls = collectors.get(src.type)
            if cls is None:
                installed = ", ".join(sorted(collectors)) or "none"
                problems.append((loc + ("type",), f"unknown source type {src.type!r} (installed: {installed})"))
                continue
            try:
                options[src.name] = cls.options_model.model_validate(src.options())
            except ValidationError as e:
                problems.extend(_pydantic_problems(e, cls.options_model, loc))
    if problems:
        msgs = [f"{_where(name, lines, loc)}: {format_path(loc)}: {msg}" for loc, msg in problems]
        raise ConfigError("; ".join(msgs))
    assert config is not None
    config = _resolve_paths(config, base_dir)
    return LoadedConfig(config, path, base_dir, frozenset(s for s in secrets if s), options, collectors)


def _resolve_paths(config: Config, base: Path) -> Config:
    def r(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p))

    def key(ref: Path | str) -> Path | str:
        return ref if isinstance(ref, str) else (ref if ref.is_absolute() else base / ref)  # str: awskms://

    sc = config.signing
    store = config.store.model_copy(update={"path": r(config.store.path)})
    signing = sc.model_copy(
        update={"key": key(sc.key), "passphrase_file": r(sc.passphrase_file), "log_key": key(sc.log_key),
                "tsa_roots": r(sc.tsa_roots)}
    )
    controls = config.controls.model_copy(update={"soa": r(config.controls.soa)})
    return config.model_copy(update={"store": store, "signing": signing, "controls": controls})

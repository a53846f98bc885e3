"""Config loading: env references, relative paths, and errors that name file, line, key path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from affidavit.agent.bootstrap import render_config
from affidavit.config.durations import check_schedule, parse_duration
from affidavit.config.loader import load_config
from affidavit.config.models import Config
from affidavit.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "affidavit.yaml"
    p.write_text(text)
    return p


GOOD = """
store:
  path: ./store
signing:
  key: keys/k.pem
sources:
  - name: docs
    type: files
    ttl: 30d
    schedule: "every 1h"
    paths: ["docs/**/*.md"]
    controls: ["common:CC-AI-POLICY"]
  - name: history
    type: git
    repo: ${REPO_DIR}
    schedule: "0 * * * *"
"""


def test_good_config_resolves_paths_env_and_types(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD), cwd=Path("/"), env={"REPO_DIR": "/srv/repo"})
    cfg = loaded.config
    assert cfg.store.path == tmp_path / "store"
    assert cfg.signing.key == tmp_path / "keys" / "k.pem"
    assert [s.name for s in cfg.sources] == ["docs", "history"]
    assert cfg.sources[0].ttl == timedelta(days=30)
    assert cfg.sources[1].ttl is None
    assert loaded.options["history"].repo == "/srv/repo"  # type: ignore[attr-defined]
    assert loaded.options["docs"].paths == ["docs/**/*.md"]  # type: ignore[attr-defined]
    assert loaded.secrets == frozenset({"/srv/repo"})
    assert loaded.base_dir == tmp_path


def test_missing_env_secret_names_variable_and_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD), cwd=tmp_path, env={})
    msg = e.value.message
    assert "REPO_DIR is not set" in msg
    assert "sources[1].repo" in msg
    assert "affidavit.yaml:15" in msg  # the line of `repo: ${REPO_DIR}`


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "store:\n  path: [unclosed\nsigning: {}\n"), cwd=tmp_path, env={})
    assert "malformed YAML" in e.value.message
    assert "affidavit.yaml:3:" in e.value.message


def test_unknown_source_type_lists_installed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "sources:\n  - name: x\n    type: nosuch\n"), cwd=tmp_path, env={})
    assert "sources[0].type: unknown source type 'nosuch' (installed: files, git, mlflow)" in e.value.message
    assert "affidavit.yaml:3" in e.value.message


def test_every_problem_reported_at_once_with_suggestions(tmp_path: Path) -> None:
    text = """
store:
  pth: ./x
sources:
  - name: Bad Name
    type: files
    paths: ["a"]
    ttl: soon
  - name: docs
    type: files
    pathz: ["b"]
"""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), cwd=tmp_path, env={})
    msg = e.value.message
    assert "store.pth: unknown key 'pth'; did you mean 'path'?" in msg
    assert "sources[0].name:" in msg and "is not a source name" in msg
    assert "sources[0].ttl:" in msg and "is not a duration" in msg
    assert "affidavit.yaml:3" in msg and "affidavit.yaml:8" in msg


def test_collector_options_validated_with_key_path(tmp_path: Path) -> None:
    text = "sources:\n  - name: docs\n    type: files\n    pathz: [a]\n"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), cwd=tmp_path, env={})
    assert "sources[0].pathz: unknown key 'pathz'; did you mean 'paths'?" in e.value.message
    assert "sources[0].paths: required key is missing" in e.value.message


def test_duplicate_source_names_and_bad_controls(tmp_path: Path) -> None:
    text = "sources:\n  - {name: a, type: files, paths: [x]}\n  - {name: a, type: files, paths: [y], controls: [nope]}\n"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), cwd=tmp_path, env={})
    assert "'nope' is not a control id" in e.value.message


def test_duplicate_source_names(tmp_path: Path) -> None:
    text = "sources:\n  - {name: a, type: files, paths: [x]}\n  - {name: a, type: files, paths: [y]}\n"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), cwd=tmp_path, env={})
    assert "source name 'a' is used twice" in e.value.message


def test_unsupported_features_are_refused_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "store:\n  remote: s3://b/p\nsigning:\n  tsa_url: http://t/\n"),
                    cwd=tmp_path, env={})
    assert "store.remote: remote stores" in e.value.message
    assert "signing.tsa_url: RFC 3161" in e.value.message


def test_top_level_must_be_mapping_and_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), cwd=tmp_path, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", cwd=tmp_path, env={})


def test_env_overrides_for_containers(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "store:\n  path: a\n"), cwd=tmp_path,
                         env={"AFFIDAVIT_STORE_PATH": "/data/store", "AFFIDAVIT_SIGNING_KEY": "k/key.pem"})
    assert loaded.config.store.path == Path("/data/store")
    assert loaded.config.signing.key == tmp_path / "k" / "key.pem"


def test_rendered_default_config_loads(tmp_path: Path) -> None:
    path = write(tmp_path, render_config(tmp_path, "./affidavit.passphrase"))
    loaded = load_config(path, cwd=tmp_path, env={})
    assert loaded.config.signing.passphrase_file == tmp_path / "affidavit.passphrase"
    assert [s.type for s in loaded.config.sources] == ["files"]  # tmp_path is not a git repository


def test_json_schema_describes_the_sections() -> None:
    schema = Config.model_json_schema()
    assert set(schema["properties"]) == {"agent", "store", "signing", "sources", "controls"}
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                          ("2w", 1209600), ("P7D", 604800), ("PT12H", 43200), ("P1DT1M", 86460)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7", "7 days", "P", "PT", "0d", "-1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_schedules() -> None:
    assert check_schedule("every 1h") == "every 1h"
    assert check_schedule("0 * * * *") == "0 * * * *"
    for bad in ("every", "sometimes", "61 * * * *", "* * *"):
        with pytest.raises(ValueError):
            check_schedule(bad)

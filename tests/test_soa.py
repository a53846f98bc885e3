"""Statement of Applicability: soa init writes every requirement; loading validates with file/line errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from affidavit.agent import cli, cli_controls
from affidavit.agent.soa import load_soa, parse_soa, soa_text, write_soa
from affidavit.config.catalog import ControlLibrary, load_library
from affidavit.errors import ConfigError, UsageError

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def lib() -> ControlLibrary:
    return load_library()


@pytest.mark.parametrize("fw", ["iso42001", "iso27001", "eu-ai-act", "nist-ai-rmf", "soc2"])
def test_init_lists_every_requirement_as_applicable(lib: ControlLibrary, tmp_path: Path, fw: str) -> None:
    path = write_soa(lib, fw, tmp_path / "soa.yaml", now=NOW)
    text = path.read_text()
    assert "applicable: yes" in text and "written by `affidavit soa init` on 2025-03-01" in text.lower()
    soa = load_soa(path, lib)
    assert soa.framework == fw and soa.path == path
    assert list(soa.entries) == [r.id for r in lib.requirements(fw)]
    assert all(e.applicable and e.justification == "" for e in soa.entries.values())
    assert soa.excluded(lib.requirements(fw)[0].id) is None


def test_exclusion_with_justification_and_local_ids(lib: ControlLibrary) -> None:
    text = ("framework: iso42001\napproved_on: 2025-02-01\nrequirements:\n"
            "  - {id: A.10.4, applicable: no, justification: We have no customers., owner: ciso}\n"
            "  - {id: iso42001:A.6.2.5, applicable: yes}\n")
    soa = parse_soa(text, "soa.yaml", lib)
    excluded = soa.excluded("iso42001:A.10.4")
    assert excluded is not None and excluded.justification == "We have no customers." and excluded.owner == "ciso"
    assert excluded.origin is not None and excluded.origin.line == 4
    assert soa.excluded("iso42001:A.6.2.5") is None
    assert soa.entry("iso42001:4.1") is None  # not listed: applicable


def soa_error(lib: ControlLibrary, text: str, *fragments: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_soa(text, "my-soa.yaml", lib)
    for frag in fragments:
        assert frag in e.value.message, e.value.message


def test_soa_errors_name_file_line_and_key(lib: ControlLibrary) -> None:
    head = "framework: iso42001\nrequirements:\n"
    soa_error(lib, head + "  - {id: A.6.2.5, applicable: yes}\n  - {id: A.99.1, applicable: yes}\n",
              "my-soa.yaml:4: requirements[1].id: 'A.99.1' is not a requirement of 'iso42001'")
    soa_error(lib, head + "  - {id: A.10.4, applicable: no}\n",
              "my-soa.yaml:3: requirements[0].justification", "without a justification")
    soa_error(lib, head + "  - {id: iso27001:A.5.1, applicable: yes}\n", "my-soa.yaml:3: requirements[0].id",
              "belongs to another framework")
    soa_error(lib, head + "  - {id: A.2.2, applicable: yes}\n  - {id: iso42001:A.2.2, applicable: no, justification: x}\n",
              "my-soa.yaml:4: requirements[1].id", "listed twice", "my-soa.yaml:3")
    soa_error(lib, head + "  - {id: A.2.2, applicable: maybe}\n", "my-soa.yaml:3: requirements[0].applicable")
    soa_error(lib, head + "  - {id: A.2.2, applicable: yes, owner: x, ownr: y}\n",
              "my-soa.yaml:3: requirements[0].ownr: unknown key")
    soa_error(lib, "framework: iso9001\nrequirements: []\n", "my-soa.yaml:1: framework: unknown framework 'iso9001'")
    soa_error(lib, "requirements: []\n", "framework: required key is missing")
    soa_error(lib, "- a list\n", "my-soa.yaml:1:", "is a mapping")
    soa_error(lib, "framework: [\n", "malformed YAML")


def test_missing_soa_file_and_overwrite(lib: ControlLibrary, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_soa(tmp_path / "none.yaml", lib)
    path = write_soa(lib, "soc2", tmp_path / "soa.yaml", now=NOW)
    with pytest.raises(UsageError, match="already exists"):
        write_soa(lib, "soc2", path, now=NOW)
    write_soa(lib, "iso42001", path, now=NOW, force=True)
    assert load_soa(path, lib).framework == "iso42001"
    with pytest.raises(ConfigError, match="unknown framework"):
        soa_text(lib, "nope", now=NOW)


def test_template_is_plain_yaml(lib: ControlLibrary) -> None:
    data = yaml.safe_load(soa_text(lib, "nist-ai-rmf", now=NOW))
    assert data["framework"] == "nist-ai-rmf"
    assert len(data["requirements"]) == 91
    assert data["requirements"][0] == {"id": "nist-ai-rmf:GV-1", "title": lib.requirement("nist-ai-rmf:GV-1").title,
                                       "applicable": True, "justification": "", "owner": ""}


# -- CLI --------------------------------------------------------------------------------------

def invoke(cwd: Path, *args: str) -> tuple[int, str, str]:
    group = cli.AffidavitGroup(name="affidavit", params=cli.main.params, callback=cli.main.callback,
                               commands={**cli.main.commands, **{c.name or "": c for c in cli_controls.COMMANDS}})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        res = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_soa_init_and_check_commands(tmp_path: Path) -> None:
    code, _, err = invoke(tmp_path, "soa", "init", "--framework", "iso42001")
    assert code == 0, err
    path = tmp_path / "soa-iso42001.yaml"
    assert path.is_file() and "controls.soa: soa-iso42001.yaml" in err
    code, _, err = invoke(tmp_path, "soa", "init", "--framework", "iso42001")
    assert code == 2 and "already exists" in err
    code, out, _ = invoke(tmp_path, "soa", "check", str(path))
    assert code == 0 and "iso42001, 74 requirement(s) listed, 0 excluded" in out
    path.write_text(path.read_text().replace("\n  applicable: yes", "\n  applicable: no", 1))
    code, _, err = invoke(tmp_path, "soa", "check", str(path))
    assert code == 2 and f"{path}:" in err and "requirements[0].justification" in err
    code, _, err = invoke(tmp_path, "soa", "init", "--framework", "iso9001", "--out", "x.yaml")
    assert code == 2 and "unknown framework 'iso9001'" in err and not (tmp_path / "x.yaml").exists()
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("store: {path: ./store}\n")
    code, _, err = invoke(tmp_path, "--config", str(cfg), "soa", "check")
    assert code == 2 and "no controls.soa" in err

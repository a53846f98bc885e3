"""The control library: catalogs as data (checked against shared/controls), mappings, user files, errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from affidavit.agent import cli, cli_controls
from affidavit.config.catalog import RELATIONSHIPS, ControlLibrary, is_common, library_paths, load_library
from affidavit.errors import ConfigError

SHARED = Path(__file__).parents[2] / "shared" / "controls"


@pytest.fixture(scope="module")
def lib() -> ControlLibrary:
    return load_library()


def shared_csv(name: str) -> list[dict[str, str]]:
    path = SHARED / name
    assert path.is_file(), f"{path} is missing: the catalogs are checked against shared/controls beside the checkout"
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def kinds(lib: ControlLibrary, fw: str, kind: str) -> list[str]:
    return [r.local_id for r in lib.requirements(fw) if r.kind == kind]


# -- counts -------------------------------------------------------------------------------

def test_catalog_counts(lib: ControlLibrary) -> None:
    assert {f.id for f in lib.frameworks()} == {"iso42001", "iso27001", "eu-ai-act", "nist-ai-rmf", "soc2"}
    assert len(kinds(lib, "iso42001", "annex-a")) == 38
    assert len(kinds(lib, "iso42001", "clause")) == 36
    assert len(kinds(lib, "iso27001", "annex-a")) == 93
    assert len(kinds(lib, "iso27001", "clause")) == 34
    assert len(kinds(lib, "nist-ai-rmf", "category")) == 19
    assert len(kinds(lib, "nist-ai-rmf", "subcategory")) == 72
    assert len(lib.requirements("eu-ai-act")) == 35
    assert len(lib.requirements("soc2")) == 61
    assert len(lib.common_controls()) == 50
    per_theme = {t: sum(1 for i in kinds(lib, "iso27001", "annex-a") if i.startswith(f"A.{t}.")) for t in (5, 6, 7, 8)}
    assert per_theme == {5: 37, 6: 8, 7: 14, 8: 34}


def test_nist_subcategories_have_their_category_as_parent(lib: ControlLibrary) -> None:
    for cat in kinds(lib, "nist-ai-rmf", "category"):
        kids = lib.children(f"nist-ai-rmf:{cat}")
        assert kids and all(k.local_id.startswith(cat + ".") for k in kids)
    assert sum(len(lib.children(f"nist-ai-rmf:{c}")) for c in kinds(lib, "nist-ai-rmf", "category")) == 72


# -- the committed YAML against shared/controls ---------------------------------------------

@pytest.mark.parametrize("csv_name,fw,title_key,group_key", [
    ("iso42001.csv", "iso42001", "title", "group"),
    ("iso27001_clauses.csv", "iso27001", "title", "group"),
    ("eu_ai_act.csv", "eu-ai-act", "title", "chapter"),
    ("nist_ai_rmf.csv", "nist-ai-rmf", "title", None),
    ("nist_ai_rmf_subcategories.csv", "nist-ai-rmf", "title", None),
])
def test_catalog_matches_shared_csv(lib: ControlLibrary, csv_name: str, fw: str, title_key: str,
                                    group_key: str | None) -> None:
    rows = shared_csv(csv_name)
    assert rows
    for row in rows:
        req = lib.requirement(f"{fw}:{row['id']}")
        assert req.title == row[title_key], row["id"]
        if group_key:
            assert req.group == row[group_key], row["id"]
        if "category" in row:
            assert req.parent == f"{fw}:{row['category']}"
            assert req.ref == row["nist_ref"]


def test_iso27001_annex_a_and_soc2_match_shared_csv(lib: ControlLibrary) -> None:
    annex = shared_csv("iso27001.csv")
    assert [f"iso27001:{r['id']}" for r in annex] == [r.id for r in lib.requirements("iso27001") if r.kind == "annex-a"]
    for row in annex:
        req = lib.requirement(f"iso27001:{row['id']}")
        assert req.title == row["title"] and row["theme"] in (req.group or "")
    soc2 = shared_csv("soc2_tsc_ids.csv")
    assert [f"soc2:{r['id']}" for r in soc2] == [r.id for r in lib.requirements("soc2")]
    for row in soc2:
        req = lib.requirement(f"soc2:{row['id']}")
        assert req.group == row["category"] and (req.note or "") == row["coso_principle"]


def test_every_catalog_id_is_in_shared_csv(lib: ControlLibrary) -> None:
    files = {"iso42001": ["iso42001.csv"], "iso27001": ["iso27001.csv", "iso27001_clauses.csv"],
             "eu-ai-act": ["eu_ai_act.csv"], "nist-ai-rmf": ["nist_ai_rmf.csv", "nist_ai_rmf_subcategories.csv"],
             "soc2": ["soc2_tsc_ids.csv"]}
    for fw, names in files.items():
        ids = [f"{fw}:{r['id']}" for n in names for r in shared_csv(n)]
        assert sorted(ids) == sorted(r.id for r in lib.requirements(fw)), fw


def test_crosswalk_matches_shared_csv(lib: ControlLibrary) -> None:
    rows = shared_csv("crosswalk_nist_ai_rmf_to_iso42001.csv")
    assert len(rows) == 280
    expected = {(f"nist-ai-rmf:{r['from_id']}", f"iso42001:{r['to_id']}") for r in rows}
    got = {(m.source, m.target) for m in lib.mappings() if m.source.startswith("nist-ai-rmf:")}
    assert got == expected
    for m in lib.mappings():
        if m.source.startswith("nist-ai-rmf:"):
            assert m.relationship == "related"
            assert "airc.nist.gov" in m.provenance and "cited as" in (m.note or "")


def test_common_controls_follow_the_evidence_guide(lib: ControlLibrary) -> None:
    """Every mapping of evidence-guide §2 is in common.yaml with its relationship (NIST links may be typed)."""
    guide = (SHARED / "evidence-guide.md").read_text(encoding="utf-8")
    abbrev = {"eq": "equal", "sup": "superset", "sub": "subset", "int": "intersect", "rel": "related"}
    pairs = 0
    for line in guide.split("## 3.")[0].splitlines():
        if not line.startswith("| `CC-"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        cc = "common:" + cells[0].strip("`")
        have = {m.target: m.relationship for m in lib.mappings_from(cc)}
        for fw, col in (("iso42001", cells[2]), ("iso27001", cells[3]), ("eu-ai-act", cells[4])):
            for part in [p for p in col.split(";") if p.strip() not in ("—", "")]:
                rid, rel = part.strip().rsplit(" ", 1)
                assert have.get(f"{fw}:{rid}") == abbrev[rel], (cc, rid)
                pairs += 1
        for n in [p.strip() for p in cells[5].split(",") if p.strip() not in ("—", "")]:
            assert have.get(f"nist-ai-rmf:{n}") in ("related", "intersect"), (cc, n)
            pairs += 1
    assert pairs == 515


def test_every_mapping_target_exists_and_is_explained(lib: ControlLibrary) -> None:
    assert len(lib.mappings()) > 800
    for m in lib.mappings():
        assert m.relationship in RELATIONSHIPS
        assert lib.has(m.source) and lib.has(m.target) and not is_common(m.target)
        lib.requirement(m.target)
        if is_common(m.source):
            assert m.provenance == "project" and m.rationale and "\n" not in m.rationale.strip()


def test_nist_links_are_backed_by_the_published_crosswalk(lib: ControlLibrary) -> None:
    for cc in lib.common_controls():
        iso = {m.target for m in lib.mappings_from(cc.id) if m.target.startswith("iso42001:")}
        for m in lib.mappings_from(cc.id):
            if m.target.startswith("nist-ai-rmf:"):
                linked = {x.target for x in lib.mappings_from(m.target)}
                assert linked & iso, f"{cc.id} -> {m.target} is not backed by the crosswalk"


def test_every_iso42001_requirement_is_evidenced_by_some_control(lib: ControlLibrary) -> None:
    for r in lib.requirements("iso42001"):
        assert any(m.counted for m in lib.control_mappings_for(r.id)), r.id
    only_related = [r.local_id for r in lib.requirements("eu-ai-act")
                    if not any(m.counted for m in lib.control_mappings_for(r.id))]
    assert only_related == ["Art.8", "Art.21", "Art.22", "Art.23", "Art.24", "Art.54", "Art.71"]


def test_query_api(lib: ControlLibrary) -> None:
    to_deploy = {m.source: m.relationship for m in lib.mappings_for("iso42001:A.6.2.5")
                 if is_common(m.source)}
    assert to_deploy["common:CC-MODEL-APPROVAL"] == "intersect"
    assert to_deploy["common:CC-CODE-REVIEW"] == "related"
    targets = {m.target for m in lib.mappings_from("common:CC-MODEL-APPROVAL")}
    assert {"iso42001:A.6.2.5", "iso27001:A.8.32", "eu-ai-act:Art.17", "soc2:CC8.1"} <= targets
    assert any(m.source.startswith("nist-ai-rmf:") for m in lib.crosswalk("iso42001:A.6.2.5"))
    assert all(is_common(m.source) for m in lib.control_mappings_for("iso42001:A.6.2.5"))
    assert lib.common_control("common:CC-IAM-ACCESS").automation == "full"
    ttl = lib.common_control("common:CC-MGMT-REVIEW").ttl
    assert ttl is not None and ttl.days == 365
    with pytest.raises(ConfigError, match="unknown framework 'iso9001'"):
        lib.requirements("iso9001")
    with pytest.raises(ConfigError, match="unknown requirement"):
        lib.requirement("iso42001:A.99")
    with pytest.raises(ConfigError, match="unknown common control"):
        lib.common_control("common:CC-NOPE")


# -- user extension files -----------------------------------------------------------------

USER = """
source: our GRC team
framework:
  id: acme-ai
  title: ACME internal AI standard
  source: ACME policy handbook v3
requirements:
  - {id: "AI-1", title: Models are approved}
  - {id: "AI-1.1", title: Approvals are recorded, parent: "AI-1"}
controls:
  - id: common:ACME-SHADOW-AI
    title: No unapproved AI tools
    statement: Every AI tool in use is on the approved list.
    automation: full
    ttl: 7d
    mappings:
      - {target: "acme-ai:AI-1", relationship: related, rationale: supports it}
mappings:
  - {from: common:CC-MODEL-APPROVAL, to: "acme-ai:AI-1.1", relationship: equal, rationale: same thing}
  - {from: common:CC-CODE-REVIEW, to: "iso42001:A.6.2.5", relationship: subset, rationale: we gate deploys on PRs}
collector_overrides:
  - {collector: files, control: common:CC-AI-POLICY, controls: [common:CC-DOC-CONTROL]}
  - {collector: git, controls: [common:ACME-SHADOW-AI], mode: add}
"""


def test_user_file_adds_framework_controls_mappings_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "acme.yaml"
    f.write_text(USER)
    lib = load_library([f])
    assert lib.framework("acme-ai").title == "ACME internal AI standard"
    assert [r.id for r in lib.requirements("acme-ai")] == ["acme-ai:AI-1", "acme-ai:AI-1.1"]
    assert lib.requirement("acme-ai:AI-1.1").parent == "acme-ai:AI-1"
    cc = lib.common_control("common:ACME-SHADOW-AI")
    assert cc.automation == "full" and cc.ttl is not None and cc.ttl.days == 7
    m = next(m for m in lib.mappings_for("acme-ai:AI-1.1"))
    assert (m.source, m.relationship, m.provenance) == ("common:CC-MODEL-APPROVAL", "equal", "our GRC team")
    assert m.origin is not None and m.origin.file == str(f) and m.origin.line == 19  # USER starts with a newline
    # the user's mapping replaces the built-in one for the same pair
    a625 = {m.source: m for m in lib.mappings_for("iso42001:A.6.2.5")}
    assert a625["common:CC-CODE-REVIEW"].relationship == "subset"
    assert a625["common:CC-CODE-REVIEW"].provenance == "our GRC team"
    assert [m.target for m in lib.mappings() if m.source == "common:CC-CODE-REVIEW"
            and m.target == "iso42001:A.6.2.5"] == ["iso42001:A.6.2.5"]
    assert lib.effective_controls("files", "common:CC-AI-POLICY") == ("common:CC-DOC-CONTROL",)
    assert lib.effective_controls("files", "common:CC-IAM-ACCESS") == ("common:CC-IAM-ACCESS",)
    assert lib.effective_controls("git", "common:CC-CODE-REVIEW") == ("common:CC-CODE-REVIEW", "common:ACME-SHADOW-AI")
    assert lib.controls_for("files", ["common:CC-AI-POLICY", "common:CC-DOC-CONTROL"]) == ("common:CC-DOC-CONTROL",)
    assert [x.builtin for x in lib.files].count(False) == 1
    assert {x.bundle_path for x in lib.files} >= {"controls/builtin/common.yaml", "controls/user/acme.yaml"}


def check_error(tmp_path: Path, text: str, *fragments: str) -> str:
    f = tmp_path / "user.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_library([f])
    msg = e.value.message
    assert str(f) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def test_mapping_to_a_missing_id_names_file_line_and_key(tmp_path: Path) -> None:
    text = "mappings:\n  - from: common:CC-AI-POLICY\n    to: iso42001:A.6.9\n    relationship: equal\n"
    msg = check_error(tmp_path, text, ":3: mappings[0].to: maps to 'iso42001:A.6.9', which does not exist")
    assert "framework 'iso42001'" in msg
    text = ("controls:\n  - id: common:X\n    title: t\n    statement: s\n    mappings:\n"
            "      - {target: iso9001:8.1, relationship: equal}\n")
    check_error(tmp_path, text, ":6: controls[0].mappings[0].target", "no framework 'iso9001'")
    check_error(tmp_path, "mappings:\n  - {from: common:CC-NOPE, to: iso42001:5.2, relationship: related}\n",
                ":2: mappings[0].from", "'common:CC-NOPE'")
    check_error(tmp_path, "mappings:\n  - {from: common:CC-AI-POLICY, to: common:CC-AI-ROLES, relationship: related}\n",
                ":2: mappings[0].to", "not a common control")


def test_duplicate_ids_fail(tmp_path: Path) -> None:
    check_error(tmp_path, "controls:\n  - {id: common:CC-AI-POLICY, title: t, statement: s}\n",
                ":2: controls[0].id", "'common:CC-AI-POLICY' is defined twice", "common.yaml (built in)")
    check_error(tmp_path, "framework: {id: iso42001, title: t, source: s}\n",
                ":1: framework.id", "framework 'iso42001' is already defined")
    check_error(tmp_path, 'framework: {id: f, title: t, source: s}\nrequirements:\n  - {id: "R1"}\n  - {id: "R1"}\n',
                ":4: requirements[1].id", "'f:R1' is defined twice")
    check_error(tmp_path, "mappings:\n  - {from: common:CC-AI-POLICY, to: iso42001:5.2, relationship: related}\n"
                "  - {from: common:CC-AI-POLICY, to: iso42001:5.2, relationship: equal}\n",
                ":3: mappings[1]", "defined twice")
    check_error(tmp_path, "source: a\nsource: b\n", ":2: source: key 'source' appears twice")


def test_shape_errors_name_file_line_and_key(tmp_path: Path) -> None:
    check_error(tmp_path, "mappings:\n  - {from: common:CC-AI-POLICY, to: iso42001:5.2, relationship: same}\n",
                ":2: mappings[0].relationship: expected 'equal', 'superset', 'subset', 'intersect' or 'related'")
    check_error(tmp_path, "framework: {id: f, title: t, source: s}\nrequirements:\n  - {id: 4.1}\n",
                ":3: requirements[0].id", "quote")
    check_error(tmp_path, "controls:\n  - id: common:X\n    title: t\n    statment: s\n",
                ":4: controls[0].statment: unknown key 'statment'", "controls[0].statement: required key is missing")
    check_error(tmp_path, "requirements:\n  - {id: R1}\n", "need a `framework:` section")
    check_error(tmp_path, "controls:\n  - {id: CC-X, title: t, statement: s}\n", ":2: controls[0]", "framework:id")
    check_error(tmp_path, "controls:\n  - {id: iso42001:X, title: t, statement: s}\n", "start with 'common:'")
    check_error(tmp_path, "controls:\n  - {id: common:X, title: t, statement: s, ttl: soon}\n",
                ":2: controls[0].ttl", "not a duration")
    check_error(tmp_path, "framework: {id: Bad_Slug, title: t, source: s}\n", ":1: framework", "framework slug")
    check_error(tmp_path, 'framework: {id: f, title: t, source: s}\nrequirements:\n  - {id: "R1", parent: "R0"}\n',
                ":3: requirements[0].parent", "'f:R0' is not a requirement")
    check_error(tmp_path, "- just\n- a list\n", ":1:", "a control library file is a mapping")
    check_error(tmp_path, "mappings: [\n  {from: x\n", "malformed YAML")


def test_override_errors(tmp_path: Path) -> None:
    check_error(tmp_path, "collector_overrides:\n  - {collector: files, control: common:CC-X, controls: [common:CC-AI-POLICY]}\n",
                ":2: collector_overrides[0].control", "'common:CC-X' is not a common control")
    check_error(tmp_path, "collector_overrides:\n"
                "  - {collector: files, control: common:CC-AI-POLICY, controls: [common:CC-DOC-CONTROL]}\n"
                "  - {collector: files, control: common:CC-DOC-CONTROL, controls: [common:CC-AI-ROLES]}\n",
                ":2: collector_overrides[0].controls", "do not chain")


def test_several_problems_are_listed_at_once(tmp_path: Path) -> None:
    msg = check_error(tmp_path, "mappings:\n  - {from: common:CC-AI-POLICY, to: iso42001:X1, relationship: related}\n"
                      "  - {from: common:CC-AI-POLICY, to: iso42001:X2, relationship: related}\n", "X1", "X2")
    assert msg.count(str(tmp_path / "user.yaml")) == 2


def test_missing_user_file_and_globs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_library([tmp_path / "nope.yaml"])
    (tmp_path / "controls").mkdir()
    for n in ("b.yaml", "a.yaml"):
        (tmp_path / "controls" / n).write_text("")
    paths = library_paths(["controls/*.yaml", "controls/a.yaml", "none/*.yaml"], tmp_path)
    assert paths == [tmp_path / "controls" / "a.yaml", tmp_path / "controls" / "b.yaml"]
    assert library_paths(["missing.yaml"], tmp_path) == [tmp_path / "missing.yaml"]
    assert len(load_library(paths).files) == len(load_library().files) + 2  # empty files are valid


# -- the controls command -----------------------------------------------------------------

def invoke(*args: str) -> tuple[int, str, str]:
    group = cli.AffidavitGroup(name="affidavit", params=cli.main.params, callback=cli.main.callback,
                               commands={**cli.main.commands, **{c.name or "": c for c in cli_controls.COMMANDS}})
    res = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_controls_command_lists_library_and_user_extensions(tmp_path: Path) -> None:
    (tmp_path / "controls").mkdir()
    (tmp_path / "controls" / "acme.yaml").write_text(USER)
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("store: {path: ./store}\ncontrols:\n  extra: ['controls/*.yaml']\n")
    code, out, _ = invoke("--config", str(cfg), "controls", "--json")
    assert code == 0
    data = json.loads(out)
    assert {f["id"]: f["requirements"] for f in data["frameworks"]}["acme-ai"] == 2
    assert len(data["controls"]) == 51
    code, out, _ = invoke("--config", str(cfg), "controls", "--framework", "iso42001")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("iso42001:A.6.2.5 "))
    assert re.search(r"CC-MODEL-APPROVAL intersect.*CC-CODE-REVIEW subset", line)
    code, out, _ = invoke("--config", str(cfg), "controls", "--framework", "nist-ai-rmf", "--json")
    reqs = {r["id"]: r for r in json.loads(out)["requirements"]}
    assert "iso42001:A.6.2.4" in reqs["nist-ai-rmf:MS-2.5"]["crosswalk"]
    code, _, err = invoke("--config", str(cfg), "controls", "--framework", "iso9001")
    assert code == 2 and "unknown framework 'iso9001'" in err


def test_controls_command_reports_a_bad_user_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("mappings:\n  - {from: common:CC-AI-POLICY, to: iso42001:Z, relationship: equal}\n")
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("controls:\n  extra: [bad.yaml]\n")
    code, _, err = invoke("--config", str(cfg), "controls")
    assert code == 2
    assert f"{tmp_path / 'bad.yaml'}:2: mappings[0].to" in err

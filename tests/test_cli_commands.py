"""The CLI loads a command's module only when that command runs: the table that says where each lives."""

from __future__ import annotations

import importlib
import subprocess
import sys

from click.testing import CliRunner

from affidavit.agent.cli import COMMAND_MODULES, main


def test_every_command_is_in_the_table_under_its_module() -> None:
    found = {}
    for module in sorted(set(COMMAND_MODULES.values())):
        for cmd in importlib.import_module(f"affidavit.agent.{module}").COMMANDS:
            found[cmd.name] = module
    assert found == COMMAND_MODULES


def test_help_lists_every_command() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    section = res.output.split("Commands:\n")[1].split("\n\n")[0]  # up to the epilog
    listed = {line.split()[0] for line in section.splitlines()}
    assert listed == set(COMMAND_MODULES)


def test_verify_loads_no_other_command_module() -> None:
    code = ("import sys; from affidavit.agent.cli import run; run(['verify', '--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('affidavit.agent.cli_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['affidavit.agent.cli_app', 'affidavit.agent.cli_verify']"


def test_unknown_command_is_a_usage_error() -> None:
    res = CliRunner().invoke(main, ["verifyy"])
    assert res.exit_code == 2 and "No such command 'verifyy'" in res.output

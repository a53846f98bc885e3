"""A test that needs a tool .ci/run installs fails, never skips, when the tool is missing."""

from __future__ import annotations

import pytest
from conftest import require_tool


def test_missing_tool_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="not installed"):
        require_tool("affidavit-no-such-tool-xyz")


def test_ci_tools_present() -> None:
    for tool in ("openssl", "git"):
        assert require_tool(tool).endswith(tool)

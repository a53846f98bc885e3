"""The agent: CLI, one-shot runner, pipeline and export; it orchestrates the other packages."""

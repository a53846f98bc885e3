"""Affidavit: an evidence agent for AI governance.

The repository's top-level folders are the architecture; each installs as a
subpackage of this one import package:

- ``affidavit.connectors``: talk to one external system each
- ``affidavit.collectors``: decide what is evidence, shape it, map it to controls
- ``affidavit.signing``: hashing, keys, DSSE / in-toto, Sigstore bundles, verification
- ``affidavit.store``: evidence stores (local files + SQLite index)
- ``affidavit.config``: config models, loader, control catalogs as data
- ``affidavit.agent``: CLI, one-shot runner, export

Data flows one way: connectors -> collectors -> signing -> store, with the
agent orchestrating.
"""

from __future__ import annotations

__version__ = "0.1.0"

"""The one-shot collection job: every selected source, one signed run each, under the store lock."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from affidavit import __version__
from affidavit.agent.keyring import Prompt, check_in_force, create_key, kms_signer, load_signer
from affidavit.agent.pipeline import RunResult, Timestamper, ensure_log_signer, open_run_log, run_source
from affidavit.collectors.redact import Redactor
from affidavit.config.loader import LoadedConfig
from affidavit.config.models import SourceConfig
from affidavit.signing.keys import Signer
from affidavit.store.local import LocalStore

log = logging.getLogger("affidavit.agent.runner")


def agent_name(loaded: LoadedConfig) -> str:
    return f"affidavit/{__version__} ({loaded.config.agent or socket.gethostname()})"


def selected_sources(loaded: LoadedConfig, names: Sequence[str]) -> list[SourceConfig]:
    if not names:
        return list(loaded.config.sources)
    return [loaded.source(n) for n in names]


@dataclass
class SignerSetup:
    signer: Signer
    notes: list[str] = field(default_factory=list)  # what was created, for the user


def ensure_signer(loaded: LoadedConfig, env: Mapping[str, str], prompt: Prompt | None) -> SignerSetup:
    """Load the configured key (a KMS key, or a key file, created with a passphrase file on a first run).

    A key the key history has rotated out or revoked is refused (SigningKeyError).
    """
    sc = loaded.config.signing
    if isinstance(sc.key, str):
        signer: Signer = kms_signer(sc.key, sc)
        check_in_force(sc, loaded.base_dir, signer.keyid)
        return SignerSetup(signer)
    if sc.key.exists():
        signer = load_signer(sc.key, sc.passphrase_file, env, prompt)
        check_in_force(sc, loaded.base_dir, signer.keyid)
        return SignerSetup(signer)
    new = create_key(sc.key, sc.algorithm, sc.passphrase_file, env, prompt)
    notes = [f"generated a {sc.algorithm} signing key {new.key_path} (public key: {new.public_path})"]
    if new.passphrase_file is not None:
        notes.append(
            f"wrote a random key passphrase to {new.passphrase_file} (mode 0600); keep it safe, "
            "or set AFFIDAVIT_PASSPHRASE instead"
        )
    return SignerSetup(new.signer, notes)


@dataclass
class CollectReport:
    store: Path
    results: list[RunResult]

    @property
    def exit_code(self) -> int:
        return 1 if any(r.status == "failed" for r in self.results) else 0

    def to_json(self) -> dict[str, object]:
        return {"store": str(self.store), "ok": self.exit_code == 0, "runs": [r.to_json() for r in self.results]}


def log_signer_loader(loaded: LoadedConfig, env: Mapping[str, str], prompt: Prompt | None,
                      notes: list[str]) -> Callable[[], Signer]:
    """Loads (or on first use creates) the transparency log key when called; notes for the user go to ``notes``.

    A callable, so the key is touched only once the store is open and locked:
    a collection that fails before that writes nothing.
    """
    def load() -> Signer:
        signer, new_notes = ensure_log_signer(loaded.config.signing, loaded.base_dir, env, prompt)
        notes.extend(new_notes)
        return signer

    return load


def collect(
    loaded: LoadedConfig,
    signer: Signer,
    sources: Sequence[SourceConfig],
    *,
    log_signer: Callable[[], Signer],
    on_artefact: Callable[[str, str], None] | None = None,
    on_source: Callable[[RunResult], None] | None = None,
) -> CollectReport:
    """Run each source in turn; a failing source does not stop the others.

    Every signed run is appended to the store's transparency log (opened under
    the store lock with the log key ``log_signer`` returns); with
    ``signing.tsa_url``, every run's signature is timestamped first (a TSA that
    fails fails that run, with nothing logged or stored).
    """
    timestamper = Timestamper.from_config(loaded.config.signing)  # the TSA roots are read before anything else
    store = LocalStore.open(loaded.config.store.path, create=True)
    redactor = Redactor()
    results: list[RunResult] = []

    def per_source(name: str) -> Callable[[str], None] | None:
        if on_artefact is None:
            return None
        report = on_artefact
        return lambda artefact: report(name, artefact)

    with store.lock(loaded.config.store.lock_timeout), contextlib.ExitStack() as stack:
        tlog = open_run_log(store, loaded.config.signing, log_signer(), agent=loaded.config.agent,
                            run_keys={signer.keyid: signer.public_key})
        stack.callback(tlog.close)
        if timestamper is not None:
            stack.callback(timestamper.close)
        for src in sources:
            result = run_source(
                src,
                loaded.collector_for(src),
                loaded.options[src.name],
                store,
                signer,
                agent=agent_name(loaded),
                base_dir=loaded.base_dir,
                redactor=redactor,
                on_artefact=per_source(src.name),
                tlog=tlog,
                timestamper=timestamper,
            )
            if result.status == "failed":
                log.error("source %s failed: %s", src.name, result.error)
            results.append(result)
            if on_source is not None:
                on_source(result)
    return CollectReport(loaded.config.store.path, results)

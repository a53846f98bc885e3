"""Offline verification of an auditor bundle, with a per-artefact report.

The trust anchor is the auditor's only: bare ``keys`` (keyid -> public key) or a
trust file (keys with validity windows and revocations, log keys, TSA roots); the
bundle's own keys/ are never trusted, nor its trusted_root.json: the
transparency log is checked against the auditor's ``log_key`` and timestamps
against the auditor's TSA roots (see verify_log). ``bundle.tsr``, the token over
``bundle.sig``, is the one member no statement covers (it timestamps the bundle
statement's signature, so it cannot be inside it): it is trusted only if its
imprint is that signature's and its TSA chains to the auditor's roots.
Every problem becomes a :class:`Failure` naming the member; only unreadable
input (InputError) and a missing trust anchor (UsageError) raise.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affidavit.errors import InputError, UsageError
from affidavit.signing.archive import BundleReading, Failure, ReadLimits, open_bundle
from affidavit.signing.bundle import (
    ARTEFACT_PREFIX,
    BUNDLE_DSSE,
    BUNDLE_FILES,
    BUNDLE_PAYLOAD,
    BUNDLE_SIG,
    BUNDLE_TSR,
    FORMAT,
    FORMAT_VERSION,
    KEYS_PREFIX,
    LOG_CHECKPOINT,
    LOG_FILES,
    MANIFEST,
    README,
    RUN_ID_RE,
    RUN_SUFFIXES,
    RunPart,
    RUNS_PREFIX,
    SUMS,
    UNSIGNED_FILES,
    artefact_member,
    manifest_artefacts,
    manifest_runs,
    run_member,
    timestamp_tokens,
)
from affidavit.signing.dsse import PAYLOAD_TYPE, Envelope, EnvelopeFormatError, parse_envelope, verified_keyids
from affidavit.signing.keys import PublicKey, algorithm_of, keyid_of, load_public_key_pem
from affidavit.signing.limits import json_problem
from affidavit.signing.member_hash import PROCESS_AFTER
from affidavit.signing.predicate import HEX64_RE, predicate_problem, run_from_parsed
from affidavit.signing.sigstore import SigstoreFormatError, envelope_of
from affidavit.signing.statement import (
    BUNDLE_PREDICATE,
    EVIDENCE_PREDICATE,
    StatementFormatError,
    parse_statement,
    subject_digests,
)
from affidavit.signing.tlog_note import CheckpointError, log_id_of, parse_checkpoint
from affidavit.signing.trust import TrustedKey, TrustStore
from affidavit.signing.verify_log import BundleSource, LogCheck, TimeCheck, reread
from affidavit.signing.verify_report import (
    ArtefactResult,
    ControlsReport,
    LogReport,
    RunSummary,
    VerifyReport,
    group_controls,
)
from affidavit.store.base import RunRecord

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ArtefactResult", "Failure", "LogReport", "RunSummary", "VerifyReport", "verify_bundle"]
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_KEY_NAME = re.compile(r"^keys/([0-9a-f]{64})\.pub\.pem$")
_RUN_PARTS: tuple[RunPart, ...] = ("dsse", "sigstore", "payload", "sig")
CATALOGS = "controls/"  # where an export puts the control catalogs and mappings in force


@dataclass
class _RunState:
    run_id: str
    record: RunRecord | None = None
    signed: bool = False
    log_index: int | None = None


class _Verifier:
    def __init__(self, members: Mapping[str, Any], failures: list[Failure], keys: Mapping[str, PublicKey],
                 max_json_depth: int = ReadLimits.max_json_depth) -> None:
        self.members = members
        self.max_json_depth = max_json_depth
        self.failures = failures
        self.keys = keys
        self.log: LogCheck | None = None
        self.times: TimeCheck | None = None  # timestamps and key windows
        self.once: set[tuple[str, str]] = set()
        self.signers: list[str] = []
        self.bundle_predicate: dict[str, Any] | None = None
        self.runs: dict[str, _RunState] = {}
        # digest checks of artefacts still being hashed (their member's digest is ""): (member, expected, who);
        # None once check_deferred has run
        self.deferred: list[tuple[str, str, str]] | None = []

    # -- helpers --------------------------------------------------------------
    def fail(self, member: str, reason: str, kind: str | None = None) -> None:
        """Record a failure; with ``kind``, only the first of that kind for the member."""
        if kind is not None:
            if (member, kind) in self.once:
                return
            self.once.add((member, kind))
        self.failures.append(Failure(member, reason))

    def data(self, name: str, why: str) -> bytes | None:
        m = self.members.get(name)
        if m is None:
            self.fail(name, f"missing ({why})", "missing")
            return None
        data: bytes | None = m.data  # None: too large, already reported by the reader
        return data

    def json(self, name: str, why: str) -> Any:
        data = self.data(name, why)
        if data is None:
            return None
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            self.fail(name, "not valid JSON")
            return None
        if obj is None:  # callers take None for "reported already"
            self.fail(name, "is JSON null, not the document a bundle holds here")
        return obj

    def check_digest(self, name: str, expected: str, who: str) -> bool:
        m = self.members.get(name)
        if m is None:
            self.fail(name, f"missing (subject of {who})", "missing")
            return False
        if not m.sha256 and self.deferred is not None:  # checked once the reader has hashed it
            self.deferred.append((name, expected, who))
            return True
        if m.sha256 != expected:
            self.fail(name, f"digest mismatch ({who} says {expected}, file has {m.sha256})", "digest")
            return False
        return True

    def envelope(self, name: str, obj: Any) -> tuple[Envelope | None, list[str]]:
        """Parse a DSSE envelope and check its signature against the trust anchor."""
        if obj is None:
            return None, []
        try:
            env = parse_envelope(obj)
        except EnvelopeFormatError as e:
            self.fail(name, f"malformed DSSE envelope ({e})")
            return None, []
        if problem := json_problem(env.payload, self.max_json_depth):  # before anything parses the payload
            self.fail(name, f"its payload: {problem}")
            return None, []
        if env.payload_type != PAYLOAD_TYPE:
            self.fail(name, f"payloadType is {env.payload_type!r}, not {PAYLOAD_TYPE}")
        good = verified_keyids(env, self.keys)
        if not good:
            ids = ", ".join(k or "(none)" for k, _ in env.signatures)
            self.fail(name, f"signature does not verify with any trusted key (signed by keyid {ids})")
        return env, good

    def raw(self, name: str) -> bytes | None:
        """An optional member's bytes (re-read if the reader only hashed it); None when absent or unreadable."""
        m = self.members.get(name)
        if m is None:
            return None
        data: bytes | None = m.data if m.data is not None or self.log is None else reread(self.log.source, m)
        if data is None:
            self.fail(name, "cannot be read (too large, or it changed while being verified)")
        return data

    def in_force(self, what: str, token_member: str, key_member: str, env: Envelope, good: list[str],
                 stamped: bytes, tokens: list[bytes]) -> list[str]:
        """The verified signers of ``env`` whose key was in force when they signed (see TimeCheck)."""
        if self.times is None:
            return good
        return self.times.check_envelope(what, token_member, key_member, env, good, stamped, tokens)

    def same_bytes(self, name: str, expected: bytes, what: str) -> None:
        data = self.data(name, f"the raw {what} for OpenSSL users")
        if data is not None and data != expected:
            self.fail(name, f"differs from the {what} inside the envelope")

    # -- the bundle statement ---------------------------------------------------
    def check_bundle_statement(self) -> None:
        for name in (MANIFEST, README, SUMS, *BUNDLE_FILES):
            if name not in self.members:
                self.fail(name, "missing (every bundle has one)", "missing")
        env, self.signers = self.envelope(BUNDLE_DSSE, self.json(BUNDLE_DSSE, "the bundle's signed statement"))
        if env is None:
            return
        token = self.raw(BUNDLE_TSR)
        self.signers = self.in_force("the bundle statement", BUNDLE_TSR, BUNDLE_DSSE, env, self.signers,
                                     env.signatures[0][1], [token] if token is not None else [])
        self.same_bytes(BUNDLE_PAYLOAD, env.payload, "payload")
        self.same_bytes(BUNDLE_SIG, env.signatures[0][1], "signature")
        try:
            stmt = parse_statement(env.payload)
        except StatementFormatError as e:
            self.fail(BUNDLE_DSSE, f"its statement is malformed ({e}); no member of the bundle is covered")
            return
        if stmt["predicateType"] != BUNDLE_PREDICATE:
            self.fail(BUNDLE_DSSE, f"predicateType is {stmt['predicateType']!r}, not {BUNDLE_PREDICATE}")
            return
        self.bundle_predicate = pred = stmt["predicate"]
        if pred.get("format_version") != FORMAT_VERSION:
            self.fail(BUNDLE_DSSE, f"unsupported bundle format version {pred.get('format_version')}")
        subjects = subject_digests(stmt)
        if pred.get("members") != len(subjects):
            self.fail(BUNDLE_DSSE, f"predicate says {pred.get('members')} members, the statement has {len(subjects)}")
        covered: set[str] = set()
        for name, hexd in subjects:
            if name in covered or name in UNSIGNED_FILES:
                self.fail(BUNDLE_DSSE, f"subject {name!r} is listed twice or names the statement itself")
            covered.add(name)
            self.check_digest(name, hexd, "the bundle statement")
        for name in self.members:
            if name not in covered and name not in UNSIGNED_FILES:
                self.fail(name, "not covered by any signed statement")

    def check_sums(self) -> None:
        data = self.data(SUMS, "every bundle has one")
        if data is None:
            return
        listed: set[str] = set()
        for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            match = _SUMS_LINE.match(line)
            if not match:
                self.fail(SUMS, f"line {i} is not '<sha256>  <file>'")
                continue
            hexd, name = match.groups()
            listed.add(name)
            if name in (SUMS, *UNSIGNED_FILES):
                self.fail(SUMS, f"line {i} lists {name}, which it cannot cover")
            self.check_digest(name, hexd, "SHA256SUMS")
        for name in self.members:
            if name not in listed and name not in (SUMS, *UNSIGNED_FILES):
                self.fail(name, "not listed in SHA256SUMS")

    # -- runs and artefacts -----------------------------------------------------
    def check_runs(self) -> None:
        for name in self.members:
            if not name.startswith(RUNS_PREFIX):
                continue
            stem = name[len(RUNS_PREFIX):]
            suffix = next((s for s in RUN_SUFFIXES.values() if stem.endswith(s)), None)
            run_id = stem[: -len(suffix)] if suffix else ""
            if not RUN_ID_RE.match(run_id):
                self.fail(name, "unexpected file in runs/ (not <run>.dsse.json, .sigstore.json, .payload.json, .sig)")
            elif run_member(run_id, "dsse") not in self.members:
                self.fail(name, f"belongs to no run ({run_member(run_id, 'dsse')} is missing)")
            else:
                self.runs.setdefault(run_id, _RunState(run_id))
        for run_id in sorted(self.runs):
            self.check_run(self.runs[run_id])
        referenced = {a.digest for s in self.runs.values() if s.record for a in s.record.artefacts}
        for name in self.members:
            if not name.startswith(ARTEFACT_PREFIX.split("/")[0] + "/"):
                continue
            hexd = name[len(ARTEFACT_PREFIX):]
            if not name.startswith(ARTEFACT_PREFIX) or not HEX64_RE.match(hexd):
                self.fail(name, "unexpected file in artefacts/ (artefacts are named artefacts/sha256/<digest>)")
            elif hexd not in referenced:
                self.fail(name, "not a subject of any run statement")
                self.check_digest(name, hexd, "its file name")

    def check_run(self, state: _RunState) -> None:
        dsse_name = run_member(state.run_id, "dsse")
        obj = self.json(dsse_name, "the run's envelope")
        env, good = self.envelope(dsse_name, obj)
        if env is None:
            return
        hint, sigstore = self.check_sigstore(state.run_id, obj, env)
        if hint is not None and self.log is not None and isinstance(obj, dict):
            state.log_index = self.log.check_run(state.run_id, sigstore, obj, env, hint)
        sig = env.signature(hint)
        self.same_bytes(run_member(state.run_id, "payload"), env.payload, "payload")
        self.same_bytes(run_member(state.run_id, "sig"), sig, "signature")
        keyid = hint or (good[0] if good else env.signatures[0][0])
        try:
            stmt = parse_statement(env.payload)
            if stmt["predicateType"] == EVIDENCE_PREDICATE and (problem := predicate_problem(stmt)):
                raise ValueError(problem)
            record = run_from_parsed(stmt, keyid, hashlib.sha256(env.payload).hexdigest(), checked=True)
            subjects = subject_digests(stmt)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            self.fail(dsse_name, f"its statement is not an evidence statement ({e})")
            return
        if record.run_id != state.run_id:
            self.fail(dsse_name, f"its statement is for run {record.run_id!r}, not {state.run_id!r}")
        if {d for _, d in subjects} != {a.digest for a in record.artefacts}:
            self.fail(dsse_name, "its subjects and its predicate's artefacts name different digests")
        try:
            tokens = timestamp_tokens(sigstore)
        except ValueError as e:
            self.fail(run_member(state.run_id, "sigstore"), f"verificationMaterial.{e}")
            tokens = []
        good = self.in_force(f"run {state.run_id}", run_member(state.run_id, "sigstore"), dsse_name, env, good,
                             sig, tokens)
        state.record, state.signed = record, bool(good)
        who = f"run {state.run_id}"
        for _, hexd in subjects:
            self.check_digest(artefact_member(hexd), hexd, who)
        for a in record.artefacts:
            m = self.members.get(artefact_member(a.digest))
            if m is not None and m.size != a.size and HEX64_RE.match(a.digest):
                self.fail(artefact_member(a.digest), f"size mismatch ({who} says {a.size} bytes, file has {m.size})")

    def check_sigstore(self, run_id: str, dsse: Any, env: Envelope) -> tuple[str | None, Any]:
        """(the Sigstore bundle's key hint, the bundle) of a run; (None, ...) when unusable."""
        name = run_member(run_id, "sigstore")
        obj = self.json(name, "the run's Sigstore bundle")
        if obj is None:
            return None, None
        try:
            wrapped, hint = envelope_of(obj)
        except SigstoreFormatError as e:
            self.fail(name, str(e))
            return None, obj
        if wrapped != dsse:
            self.fail(name, f"does not wrap the same envelope as {run_member(run_id, 'dsse')}")
        if hint not in [k for k, _ in env.signatures]:
            self.fail(name, f"key hint {hint} is not the keyid of any signature in the envelope")
            return None, obj
        return hint, obj

    def check_deferred(self, reader_failures: list[Failure]) -> None:
        """After the reader has hashed every artefact: its failures, then the digest checks that waited."""
        self.failures.extend(reader_failures)
        deferred, self.deferred = self.deferred or [], None
        members = self.members
        for name, expected, who in deferred:
            m = members.get(name)
            if m is None or m.sha256 != expected:  # the usual case (a match) decided without a call
                self.check_digest(name, expected, who)

    def check_keys(self) -> None:
        for name, m in self.members.items():
            if not name.startswith(KEYS_PREFIX):
                continue
            match = _KEY_NAME.match(name)
            if not match:
                self.fail(name, "unexpected file in keys/ (keys are named keys/<keyid>.pub.pem)")
                continue
            if m.data is None:
                continue
            try:
                found = keyid_of(load_public_key_pem(m.data, name))
            except InputError as e:
                self.fail(name, e.message)
                continue
            if found != match.group(1):
                self.fail(name, f"holds the key with keyid {found}")

    # -- the manifest -----------------------------------------------------------
    def check_manifest(self) -> None:
        obj = self.json(MANIFEST, "every bundle has one")
        if obj is None:
            return
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            self.fail(MANIFEST, f"not an Affidavit bundle manifest (format must be {FORMAT!r})")
            return
        if obj.get("format_version") != FORMAT_VERSION:
            self.fail(MANIFEST, f"unsupported bundle format version {obj.get('format_version')}")
            return
        pred = self.bundle_predicate or {}
        for field in ("created", "agent"):
            if field in pred and obj.get(field) != pred[field]:
                self.fail(MANIFEST, f"{field} is {obj.get(field)!r}, the bundle statement says {pred[field]!r}")
        # compare with the run statements that verified; a run that did not has its own failure already
        records = [s.record for s in self.runs.values() if s.record is not None and s.signed]
        unsigned = {s.run_id for s in self.runs.values() if not s.signed}
        self.compare(obj.get("runs"), manifest_runs(records), "run_id", "run", unsigned)
        if not unsigned:
            self.compare(obj.get("artefacts"), manifest_artefacts(records), "digest", "artefact", set())
        keys = sorted(m[len(KEYS_PREFIX):-len(".pub.pem")] for m in self.members if _KEY_NAME.match(m))
        if obj.get("keys") != keys:
            self.fail(MANIFEST, f"keys is {obj.get('keys')!r}, the bundle holds {keys!r}")
        standard = (MANIFEST, README, SUMS, *UNSIGNED_FILES, *LOG_FILES)
        folders = ("artefacts/", KEYS_PREFIX, RUNS_PREFIX)
        extra = sorted(m for m in self.members if m not in standard and not m.startswith(folders))
        if not isinstance(obj.get("extra"), list) or sorted(map(str, obj["extra"])) != extra:
            self.fail(MANIFEST, f"extra is {obj.get('extra')!r}, the bundle holds {extra!r}")

    def compare(self, listed: Any, expected: list[dict[str, Any]], key: str, what: str, skip: set[str]) -> None:
        if listed == expected:  # the usual case: nothing the checks below could find (expected's keys are unique)
            return
        if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
            self.fail(MANIFEST, f"{what}s is not a list of objects")
            return
        by_key: dict[str, dict[str, Any]] = {}
        for i, e in enumerate(listed):
            k = e.get(key)
            if not isinstance(k, str):
                self.fail(MANIFEST, f"{what}s[{i}] has no {key} string")
            elif k in by_key:
                self.fail(MANIFEST, f"{what} {k} is listed twice")
            else:
                by_key[k] = e
        wanted = {e[key]: e for e in expected}
        for k, entry in wanted.items():
            if k not in by_key:
                self.fail(MANIFEST, f"{what} {k} is not listed, but the run statements name it")
                continue
            for field, value in entry.items():
                if by_key[k].get(field) != value:
                    got = by_key[k].get(field)
                    self.fail(MANIFEST, f"{what} {k}: {field} is {got!r}, the run statements say {value!r}")
        for k in by_key:
            if k not in wanted and k not in skip:
                self.fail(MANIFEST, f"lists {what} {k}, which no readable run statement names")

    # -- the report -------------------------------------------------------------
    def report(self, path: Path) -> VerifyReport:
        log = self.log.report() if self.log is not None else LogReport("failed")
        bad = {f.member for f in self.failures}
        runs: list[RunSummary] = []
        artefacts: list[ArtefactResult] = []
        for run_id in sorted(self.runs):
            s = self.runs[run_id]
            if s.record is None:
                continue
            r = s.record
            ok = s.signed and not any(run_member(run_id, p) in bad for p in _RUN_PARTS)
            runs.append(RunSummary(r.run_id, r.source, r.source_type, r.started, r.finished, r.keyid,
                                   len(r.artefacts), ok, s.log_index))
            for a in r.artefacts:
                member = artefact_member(a.digest)
                intact = member in self.members and member not in bad
                artefacts.append(ArtefactResult(a.name, f"sha256:{a.digest}", run_id, a.controls, ok and intact))
        pred = self.bundle_predicate or {}
        created, agent = pred.get("created"), pred.get("agent")
        named = [c for a in artefacts if a.ok for c in a.controls]
        times = self.times
        return VerifyReport(not self.failures, path, tuple(self.failures), tuple(self.signers), tuple(runs),
                            tuple(artefacts), created if isinstance(created, str) else None,
                            agent if isinstance(agent, str) else None, log,
                            tuple(times.keys()) if times else (), tuple(times.stamps) if times else (),
                            group_controls(named, self.catalogs(bad)) if named else ControlsReport())

    def catalogs(self, bad: set[str]) -> list[tuple[str, bytes]]:
        """The bundle's control catalogs that its statement covers and that are intact, built-in ones first."""
        if not self.signers or self.log is None:
            return []
        names = sorted((n for n in self.members if n.startswith(CATALOGS) and n.endswith(".yaml") and n not in bad),
                       key=lambda n: (not n.startswith(CATALOGS + "builtin/"), n))
        out = []
        for name in names:
            m = self.members[name]
            data = m.data if m.data is not None else reread(self.log.source, m)
            if data is not None:
                out.append((name, data))
        return out


def verify_bundle(
    path: Path,
    keys: Mapping[str, PublicKey] | TrustStore,
    *,
    progress: Callable[[int], None] | None = None,
    limits: ReadLimits = ReadLimits(),
    log_key: PublicKey | None = None,
    checkpoint: str | None = None,
    max_proof_hashes: int | None = None,
    tsa_roots: Sequence[x509.Certificate] = (),
    key_sources: Mapping[str, str] | None = None,
    process_after: int | None = PROCESS_AFTER,
    reading: BundleReading | None = None,
) -> VerifyReport:
    """Verify a bundle (.tar.gz, .tar or directory) offline against the auditor's trust anchor.

    ``keys`` is either bare trusted keys (keyid -> public key: no validity
    window) or a :class:`TrustStore` (a trust file: keys with windows and
    revocations, log keys, TSA roots). ``tsa_roots`` add TSA roots; every RFC
    3161 token is verified against them and gives its signature a trusted time,
    against which each key's window and revocation are checked (without one, a
    revoked key's signatures fail). ``key_sources`` (keyid -> "trust file" /
    "--key") label the keys in the report.

    ``log_key`` is the transparency log's public key (default: the trust
    store's log key the bundle's checkpoint names; without one the log is
    reported "not checked"); ``checkpoint`` an older signed checkpoint of that
    log the auditor kept, which the bundle's log must extend. ``progress``
    receives the bytes read (increments); ``limits`` bound what reading and
    checking may cost (``max_proof_hashes``, if given, overrides its proof
    length). Raises UsageError with no trust
    anchor, or a checkpoint without a log key, and InputError when ``path`` is
    not a readable bundle; every other problem is a Failure in the report.
    ``process_after``: artefact bytes hashed on threads before worker
    processes take over (None: threads only). ``reading``: ``open_bundle(path)``
    already started by the caller (the CLI starts reading before it imports
    this module); it is finished here.
    """
    trust = keys if isinstance(keys, TrustStore) else \
        TrustStore({k: TrustedKey(k, pk, algorithm_of(pk)) for k, pk in keys.items()}, {})
    if not trust.keys:
        raise UsageError("no trust anchor: pass --key PEM or --trust FILE")
    if checkpoint is not None and log_key is None and not trust.log_keys:
        raise UsageError("--checkpoint needs --log-key: a checkpoint is only worth its log's signature",
                         hint="pass the log's public key (`affidavit-log.pub.pem`) with --log-key")
    sources = key_sources or dict.fromkeys(trust.keys, "trust file" if isinstance(keys, TrustStore) else "--key")
    # the signatures, statements, log and manifest are checked while worker threads hash the artefacts
    if reading is None:
        reading = open_bundle(path, limits=limits, progress=progress, process_after=process_after)
    with reading:
        contents = reading.contents
        if log_key is None and trust.log_keys:
            log_key = _log_key_for(contents.members, trust)
        read_so_far = len(contents.failures)
        v = _Verifier(contents.members, list(contents.failures), trust.public_keys(), limits.max_json_depth)
        v.log = LogCheck(contents.members, v.fail,
                         BundleSource(contents.source, contents.kind, limits.max_metadata_bytes), log_key, checkpoint,
                         limits.max_proof_hashes if max_proof_hashes is None else max_proof_hashes,
                         limits.max_json_depth)
        v.times = TimeCheck(trust, (*trust.tsa_roots, *tsa_roots), v.fail, sources)
        if log_key is not None and (problem := trust.check_log_key_time(keyid_of(log_key), None)) \
                and keyid_of(log_key) in trust.log_keys:
            v.fail(LOG_CHECKPOINT, f"signed by a log key you no longer trust: {problem}")
        v.check_bundle_statement()
        v.check_sums()
        v.log.check_material()
        v.check_runs()
        v.check_keys()
        v.check_manifest()
    v.check_deferred(contents.failures[read_so_far:])
    return v.report(path)


def _log_key_for(members: Mapping[str, Any], trust: TrustStore) -> PublicKey:
    """The trusted log key whose id the bundle's checkpoint names (else one of them, for a precise failure)."""
    keys = [trust.log_keys[k].public_key for k in sorted(trust.log_keys)]
    m = members.get(LOG_CHECKPOINT)
    try:
        hint = parse_checkpoint(m.data.decode("utf-8")).key_hint if m is not None and m.data is not None else b""
    except (UnicodeDecodeError, CheckpointError):
        hint = b""
    return next((k for k in keys if log_id_of(k)[:4] == hint), keys[0])

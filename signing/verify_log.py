"""The transparency-log part of bundle verification.

Checks, with the auditor's log key: the bundle's checkpoint is signed by it; the
leaf hashes in ``log/leaves.bin`` hash to the checkpoint's root; each run's
single tlogEntry is the Rekor dsse body of that run's own envelope, sits at its
log index in the leaves, and proves inclusion against the bundle's checkpoint
(an entry proved against another checkpoint, or another run's index, fails);
``trusted_root.json`` and the manifest name the same log. With the auditor's old
checkpoint, the consistency proof from it to the bundle's checkpoint is computed
from the leaves and verified, so a deleted or rewritten entry shows. Without a
log key the structure is still checked, but the log is reported "not checked".

:class:`TimeCheck` is the other "when" evidence: each verified signature's RFC 3161
tokens, checked against the auditor's TSA roots, give it a trusted signing time,
and the auditor's trust anchor (keys with validity windows and revocations) then
says whether its key was in force (``TrustStore.check_signature_time``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from affidavit.signing.archive import BundleKind, Member, normalise_name
from affidavit.signing.bundle import LOG_CHECKPOINT, LOG_FILES, LOG_LEAVES, MANIFEST, TRUSTED_ROOT, run_member
from affidavit.signing.dsse import Envelope
from affidavit.signing.keys import PublicKey, verify_signature
from affidavit.signing.limits import VerifyLimits, json_problem
from affidavit.signing.tlog import HASH_SIZE, MemoryTree, ProofError, leaf_hash, verify_consistency, \
    verify_inclusion
from affidavit.signing.tlog_entry import API_VERSION, KIND, MAX_PROOF_HASHES, TRUSTED_ROOT_MEDIA_TYPE, \
    TlogEntryError, dsse_body_problem, parse_tlog_entry
from affidavit.signing.tlog_note import Checkpoint, CheckpointError, is_log_key, log_id_of, parse_checkpoint, \
    verify_checkpoint
from affidavit.signing.trust import TrustStore
from affidavit.signing.verify_report import (
    CONSISTENCY_NOT_CHECKED,
    LOG_ABSENT,
    LOG_NOT_CHECKED,
    TIMESTAMPS_NOT_CHECKED,
    KeyReport,
    LogReport,
    TimestampReport,
)

if TYPE_CHECKING:
    from cryptography import x509

YOUR_CHECKPOINT = "(--checkpoint)"  # the member name of failures about the auditor's own checkpoint


@dataclass
class BundleSource:
    """Where the bundle came from, to re-read a member the streaming reader only hashed."""

    path: Path
    kind: BundleKind
    max_bytes: int


def reread(source: BundleSource, member: Member) -> bytes | None:
    """The bytes of a member whose content the reader did not keep; None if unreadable or changed since."""
    if member.size > source.max_bytes or member.refused:  # refused: over a limit, or JSON not to be parsed
        return None
    data: bytes | None = None
    try:
        if source.kind == "directory":
            fd = os.open(source.path / member.name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                data = f.read(member.size + 1)
        else:
            with tarfile.open(source.path, mode="r|*") as tf:
                for info in tf:
                    if info.isreg() and normalise_name(info.name) == (member.name, None):
                        stream = tf.extractfile(info)
                        data = stream.read(member.size + 1) if stream is not None else None
                        break
    except (OSError, tarfile.TarError, EOFError, ValueError):
        return None
    if data is None or hashlib.sha256(data).hexdigest() != member.sha256:
        return None
    return data


class LogCheck:
    """Log checks for one bundle; call check_material, then check_run per run, then report."""

    def __init__(self, members: dict[str, Member], fail: Callable[[str, str], None], source: BundleSource,
                 log_key: PublicKey | None, old_checkpoint: str | None,
                 max_proof_hashes: int = MAX_PROOF_HASHES,
                 max_json_depth: int = VerifyLimits.max_json_depth) -> None:
        self.members, self._fail, self.source = members, fail, source
        self.max_json_depth = max_json_depth
        self.log_key, self.old_checkpoint, self.max_proof_hashes = log_key, old_checkpoint, max_proof_hashes
        self.failed = False
        self.present = False
        self.checkpoint: Checkpoint | None = None
        self.checkpoint_text: str | None = None
        self.log_id: bytes | None = None  # of the auditor's key, else of trusted_root.json's
        self.tree: MemoryTree | None = None
        self.base_url: str | None = None  # of the log in trusted_root.json
        self.old: Checkpoint | None = None

    def fail(self, member: str, reason: str) -> None:
        self.failed = True
        self._fail(member, reason)

    def bytes_of(self, name: str) -> bytes | None:
        m = self.members.get(name)
        if m is None:
            self.fail(name, "missing (the bundle's transparency log needs it)")
            return None
        data = m.data if m.data is not None else reread(self.source, m)
        if data is None:
            self.fail(name, "cannot be read (too large, or it changed while being verified)")
        return data

    # -- the log material -------------------------------------------------------
    def check_material(self) -> None:
        manifest_log = self._manifest_log()
        self.present = any(n in self.members for n in LOG_FILES) or manifest_log is not None
        if not self.present:
            if self.log_key is not None:
                self.fail(LOG_CHECKPOINT, "missing: the bundle carries no transparency log, but you passed --log-key")
            return
        if self.log_key is not None:
            self.log_id = log_id_of(self.log_key)
            if not is_log_key(self.log_key):
                self.fail(LOG_CHECKPOINT, "the --log-key is not an ECDSA P-256 key, so it signs no checkpoint")
        self._check_trusted_root()
        self._check_checkpoint()
        self._check_leaves()
        self._check_manifest(manifest_log)

    def _manifest_log(self) -> Any:
        m = self.members.get(MANIFEST)
        try:
            obj = json.loads(m.data) if m is not None and m.data is not None else None
        except (ValueError, RecursionError):
            return None  # the manifest check reports it
        return obj.get("log") if isinstance(obj, dict) else None

    def _check_checkpoint(self) -> None:
        data = self.bytes_of(LOG_CHECKPOINT)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
            signed = parse_checkpoint(text)
            if self.log_key is not None:
                verify_checkpoint(text, self.log_key)
        except UnicodeDecodeError:
            self.fail(LOG_CHECKPOINT, "not UTF-8 text")
            return
        except CheckpointError as e:
            self.fail(LOG_CHECKPOINT, f"not a valid checkpoint of the trusted log: {e}")
            return
        if self.log_id is not None and signed.key_hint != self.log_id[:4]:
            self.fail(LOG_CHECKPOINT, "its key hint is not that of the log named in trusted_root.json")
            return
        if self.base_url is not None and signed.checkpoint.origin not in self.base_url:
            self.fail(TRUSTED_ROOT, f"its log's baseUrl {self.base_url!r} does not contain the checkpoint's "
                                    f"origin {signed.checkpoint.origin!r} (Sigstore verifiers match them)")
        self.checkpoint, self.checkpoint_text = signed.checkpoint, text

    def _check_trusted_root(self) -> None:
        data = self.bytes_of(TRUSTED_ROOT)
        try:
            obj = json.loads(data) if data is not None else None
        except (ValueError, RecursionError):
            self.fail(TRUSTED_ROOT, "not valid JSON")
            return
        if obj is None:
            return
        if not isinstance(obj, dict) or obj.get("mediaType") != TRUSTED_ROOT_MEDIA_TYPE:
            self.fail(TRUSTED_ROOT, f"not a Sigstore trusted root (mediaType must be {TRUSTED_ROOT_MEDIA_TYPE})")
            return
        tlogs = obj.get("tlogs")
        if not isinstance(tlogs, list) or len(tlogs) != 1 or not isinstance(tlogs[0], dict):
            self.fail(TRUSTED_ROOT, "does not name exactly one transparency log under tlogs")
            return
        tlog = tlogs[0]
        pk = tlog.get("publicKey")
        try:
            raw = base64.b64decode(pk.get("rawBytes", "") if isinstance(pk, dict) else "", validate=True)
            key = serialization.load_der_public_key(raw)
            named_id = base64.b64decode(str((tlog.get("logId") or {}).get("keyId", "")), validate=True)
        except (binascii.Error, ValueError, TypeError, AttributeError, UnsupportedAlgorithm):
            self.fail(TRUSTED_ROOT, "its log has no readable publicKey.rawBytes / logId.keyId")
            return
        if not isinstance(key, ec.EllipticCurvePublicKey) or not is_log_key(key):
            self.fail(TRUSTED_ROOT, "its log key is not ECDSA P-256")
            return
        if named_id != log_id_of(key):
            self.fail(TRUSTED_ROOT, "its logId.keyId is not the SHA-256 of its log key")
        if self.log_id is not None and log_id_of(key) != self.log_id:
            self.fail(TRUSTED_ROOT, f"names log key {log_id_of(key).hex()}, not your --log-key ({self.log_id.hex()})")
        if self.log_id is None:
            self.log_id = log_id_of(key)
        if not isinstance(pk, dict) or pk.get("keyDetails") != "PKIX_ECDSA_P256_SHA_256":
            self.fail(TRUSTED_ROOT, "its log key's keyDetails is not PKIX_ECDSA_P256_SHA_256")
        base = tlog.get("baseUrl")
        self.base_url = base if isinstance(base, str) else ""

    def _check_leaves(self) -> None:
        data = self.bytes_of(LOG_LEAVES)
        if data is None:
            return
        if len(data) % HASH_SIZE:
            self.fail(LOG_LEAVES, f"{len(data)} bytes is not a whole number of {HASH_SIZE}-byte leaf hashes")
            return
        self.tree = tree = MemoryTree(data)
        cp = self.checkpoint
        if cp is None:
            return
        if tree.size != cp.size:
            self.fail(LOG_LEAVES, f"holds {tree.size} leaf hashes; the checkpoint says the log has {cp.size} "
                                  "entries (entries were deleted or added)")
        elif tree.root() != cp.root:
            self.fail(LOG_LEAVES, "the leaf hashes do not hash to the checkpoint's root: an entry was rewritten")

    def _check_manifest(self, section: Any) -> None:
        cp = self.checkpoint
        if cp is None:
            return
        expected = {"origin": cp.origin, "tree_size": cp.size, "root_hash": cp.root.hex(),
                    "log_id": self.log_id.hex() if self.log_id else None}
        if not isinstance(section, dict):
            self.fail(MANIFEST, "has no log section, but the bundle carries a transparency log")
            return
        for field, value in expected.items():
            if section.get(field) != value:
                self.fail(MANIFEST, f"log.{field} is {section.get(field)!r}, the checkpoint says {value!r}")

    # -- one run ----------------------------------------------------------------
    def check_run(self, run_id: str, sigstore: Any, envelope: dict[str, Any], env: Envelope,
                  hint: str) -> int | None:
        """Check a run's tlogEntries; the run's log index when it checks out."""
        name = run_member(run_id, "sigstore")
        vm = sigstore.get("verificationMaterial") if isinstance(sigstore, dict) else None
        entries = vm.get("tlogEntries", []) if isinstance(vm, dict) else []
        if not isinstance(entries, list):
            self.fail(name, "verificationMaterial.tlogEntries is not a list")
            return None
        if not self.present:
            if entries:
                self.fail(name, "has a transparency log entry, but the bundle carries no log checkpoint to prove it")
            return None
        if len(entries) != 1:
            self.fail(name, "has no transparency log entry: the run was not logged (or its entry was deleted)"
                      if not entries else f"holds {len(entries)} log entries; a run is logged once")
            return None
        try:
            e = parse_tlog_entry(entries[0], max_hashes=self.max_proof_hashes)
        except TlogEntryError as err:
            self.fail(name, f"tlogEntries[0]: {err}")
            return None
        if (e.kind, e.version) != (KIND, API_VERSION):
            self.fail(name, f"its log entry is of kind {e.kind}/{e.version}, not {KIND}/{API_VERSION}")
            return None
        if self.log_id is not None and e.log_id != self.log_id:
            self.fail(name, f"its log entry is in log {e.log_id.hex()}, not the trusted log {self.log_id.hex()}")
            return None
        sig = env.signature(hint)
        if problem := json_problem(e.body, self.max_json_depth):  # before it is parsed (and re-serialised)
            self.fail(name, f"tlogEntries[0].canonicalizedBody: {problem}")
            return None
        problem = dsse_body_problem(e.body, envelope, env.payload, base64.b64encode(sig).decode("ascii"), hint)
        if problem:
            self.fail(name, f"its log entry is not this run's: {problem}")
            return None
        if e.proof_index != e.index:
            self.fail(name, f"logIndex {e.index} and inclusionProof.logIndex {e.proof_index} differ")
            return None
        cp, tree = self.checkpoint, self.tree
        if cp is None or tree is None:
            return None  # the material's own failure says why
        if (e.tree_size, e.root, e.checkpoint) != (cp.size, cp.root, self.checkpoint_text):
            self.fail(name, f"its inclusion proof is against a checkpoint of size {e.tree_size} (root "
                            f"{e.root.hex()[:16]}…), not the bundle's (size {cp.size}, "
                            f"root {cp.root.hex()[:16]}…): "
                            "a run statement taken from another bundle")
            return None
        leaf = leaf_hash(e.body)
        if e.index >= tree.size or tree.leaf(e.index) != leaf:
            self.fail(name, f"log index {e.index} holds another entry: its log index, leaf and checkpoint do not "
                            "match this run statement")
            return None
        try:
            verify_inclusion(leaf, e.index, cp.size, e.hashes, cp.root)
        except ProofError as err:
            self.fail(name, f"its inclusion proof fails: {err}")
            return None
        return e.index  # unique: the leaf at an index is one run's own body

    # -- the verdict ------------------------------------------------------------
    def report(self) -> LogReport:
        if not self.present:
            return LogReport("failed" if self.failed else LOG_ABSENT)
        consistency = self._consistency()
        cp = self.checkpoint
        status = "failed" if self.failed else ("verified" if self.log_key is not None else LOG_NOT_CHECKED)
        return LogReport(status, cp.origin if cp else None, cp.size if cp else None, cp.root.hex() if cp else None,
                         self.log_id.hex() if self.log_id else None, consistency,
                         self.old.size if self.old is not None else None)

    def _consistency(self) -> str:
        if self.old_checkpoint is None:
            return CONSISTENCY_NOT_CHECKED
        if self.log_key is None:  # verify_bundle refuses this combination
            return "not checked (no --log-key)"
        try:
            old = verify_checkpoint(self.old_checkpoint, self.log_key)
        except CheckpointError as e:
            self.fail(YOUR_CHECKPOINT, f"not a checkpoint of the trusted log: {e}")
            return "failed"
        self.old = old
        cp, tree = self.checkpoint, self.tree
        if cp is None or tree is None:
            self.fail(YOUR_CHECKPOINT, "cannot check consistency: the bundle's own checkpoint or leaves are unusable")
            return "failed"
        if old.origin != cp.origin:
            self.fail(YOUR_CHECKPOINT, f"is for log {old.origin!r}; the bundle's log is {cp.origin!r}")
            return "failed"
        if old.size > cp.size:
            self.fail(YOUR_CHECKPOINT, f"your checkpoint (size {old.size}) is newer than the bundle's (size "
                                       f"{cp.size}): the bundle's log lost entries, or the bundle is older")
            return "failed"
        if tree.size != cp.size:
            return "failed"  # the leaves' own failure says why
        try:
            verify_consistency(old.size, cp.size, tree.consistency_proof(old.size), old.root, cp.root)
        except ProofError as e:
            self.fail(YOUR_CHECKPOINT, f"the bundle's log does not extend your checkpoint (size {old.size}): "
                                       f"entries logged before it were removed or rewritten ({e})")
            return "failed"
        return f"verified from size {old.size}"


class TimeCheck:
    """Timestamps and key windows for every signature verify accepts (see the module docstring).

    A token that does not verify (another signature's, an untrusted TSA's, a
    damaged one) is a failure of the member holding it. Without TSA roots the
    tokens are "not checked" and the signatures count as untimestamped.
    """

    def __init__(self, trust: TrustStore, roots: Sequence[x509.Certificate], fail: Callable[[str, str], None],
                 sources: Mapping[str, str]) -> None:
        self.trust, self.roots, self.fail, self.sources = trust, tuple(roots), fail, sources
        self.public_keys = trust.public_keys()
        self.stamps: list[TimestampReport] = []
        self.signed: dict[str, list[str]] = {}  # keyid -> what it signed while in force
        self.refused: dict[str, list[str]] = {}  # keyid -> what it signed outside its window or once revoked

    def check(self, what: str, token_member: str, key_member: str, signed: Sequence[tuple[str, bytes]],
              stamped: bytes, tokens: Sequence[bytes]) -> list[str]:
        """The keyids of ``signed`` (verified (keyid, signature) pairs) whose key was in force when they signed.

        ``tokens`` timestamp the signature ``stamped``; the earliest verified one
        is its trusted signing time. When no signer was in force, ``key_member``
        fails with the reasons.
        """
        times = self._verify_tokens(what, token_member, stamped, tokens)
        signed_at = min(times) if times else None
        good, problems = [], []
        for keyid, signature in signed:
            problem = self.trust.check_signature_time(keyid, signed_at if signature == stamped else None)
            (self.refused if problem else self.signed).setdefault(keyid, []).append(what)
            if problem is None:
                good.append(keyid)
            else:
                problems.append(problem)
        if problems and not good:
            unchecked = tokens and not self.roots
            self.fail(key_member, "; ".join(problems) + (" (the bundle carries a timestamp for it: pass --tsa-roots "
                                                         "to check it)" if unchecked else ""))
        return good

    def check_envelope(self, what: str, token_member: str, key_member: str, env: Envelope, good: Sequence[str],
                       stamped: bytes, tokens: Sequence[bytes]) -> list[str]:
        """:meth:`check` for ``good``, the verified signers of ``env``: a token dates only the signature it was
        made over, so a signer gets its time only if ``stamped`` is its own signature."""
        pairs = [(k, stamped if tokens and verify_signature(self.public_keys[k], stamped, env.pae) else b"")
                 for k in good]
        return self.check(what, token_member, key_member, pairs, stamped, tokens)

    def _verify_tokens(self, what: str, member: str, signature: bytes, tokens: Sequence[bytes]) -> list[datetime]:
        if not tokens:
            return []
        from affidavit.signing.tsa import TimestampError, verify_timestamp  # here: it loads X.509 and RFC 3161

        times = []
        for i, token in enumerate(tokens, 1):
            if not self.roots:
                self.stamps.append(TimestampReport(what, member, TIMESTAMPS_NOT_CHECKED))
                continue
            try:
                info = verify_timestamp(token, signature, self.roots)
            except TimestampError as e:
                which = f"timestamp token {i} of {len(tokens)}" if len(tokens) > 1 else "its timestamp token"
                self.fail(member, f"{which} does not prove when {what} was signed: {e}")
                self.stamps.append(TimestampReport(what, member, "failed", reason=str(e)))
                continue
            times.append(info.time)
            self.stamps.append(TimestampReport(what, member, "verified", info.time, info.tsa_subject))
        return times

    def keys(self) -> list[KeyReport]:
        """Every trusted key that made a verified signature here, with its window."""
        out = []
        for keyid in sorted({*self.signed, *self.refused}):
            k = self.trust.keys[keyid]
            out.append(KeyReport(keyid, self.sources.get(keyid, "trust file"), k.not_before, k.not_after,
                                 k.revoked_at, k.comment, tuple(self.signed.get(keyid, ())),
                                 tuple(self.refused.get(keyid, ()))))
        return out

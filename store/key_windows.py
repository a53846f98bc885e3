"""``verify STORE --trust``: was each stored run signed by a key in force when it signed?

The bundle verifier's rule (:class:`~affidavit.signing.verify_log.TimeCheck`)
applied to the store's attestations: a run's RFC 3161 tokens (kept in its
Sigstore bundle) verified against the trust file's TSA roots give its signing
time; a signature outside its key's window, or by a revoked key with no
trusted time before the revocation, is an error naming the attestation.
"""

from __future__ import annotations

import json

from affidavit.errors import StoreError
from affidavit.signing.bundle import timestamp_tokens
from affidavit.signing.dsse import verified_keyids
from affidavit.signing.sigstore import SigstoreFormatError, envelope_of
from affidavit.signing.trust import TrustStore
from affidavit.signing.verify_log import TimeCheck
from affidavit.store.base import FsckProblem
from affidavit.store.index import DSSE_SUFFIX
from affidavit.store.local import BUNDLE_SUFFIX, LocalStore


def key_window_problems(store: LocalStore, trust: TrustStore) -> list[FsckProblem]:
    """An error for every stored run no trusted key was in force to sign (fsck reports unreadable ones).

    The TSA roots are the trust store's (the CLI adds --tsa-roots to them)."""
    problems: list[FsckProblem] = []
    times = TimeCheck(trust, trust.tsa_roots,
                      lambda where, reason: problems.append(FsckProblem(where, reason)),
                      dict.fromkeys(trust.keys, "trust file"))
    keys = times.public_keys
    for path in store.attestation_files():
        try:
            att = store.read_attestation(path)
        except StoreError:
            continue  # fsck names it
        good = verified_keyids(att.envelope, keys)
        if not good:
            continue  # fsck names it: no trusted key's signature verifies
        bundle_path = path.with_name(path.name.removesuffix(DSSE_SUFFIX) + BUNDLE_SUFFIX)
        bundle_rel = str(bundle_path.relative_to(store.root))
        hint, tokens = None, []
        try:
            sigstore = json.loads(bundle_path.read_bytes())
            hint = envelope_of(sigstore)[1]
            tokens = timestamp_tokens(sigstore)
        except (OSError, ValueError, SigstoreFormatError):
            pass  # no bundle or no usable tokens (fsck names a broken one): the signature has no trusted time
        # a token dates the signature it was made over: the one the Sigstore bundle names
        times.check_envelope(f"run {att.run.run_id}", bundle_rel, str(path.relative_to(store.root)), att.envelope,
                             good, att.envelope.signature(hint), tokens)
    return problems

"""The transparency log's mathematics and formats, checked against independent implementations.

Proofs made by ``signing.tlog`` are verified here by a verifier written from the
text of RFC 9162 §2.1.3.2 and §2.1.4.2 (not by the module's own verifier), and
roots agree with ``pymerkle`` (RFC 6962 prefixes) and with the RFC's recursive
MTH definition. Checkpoints, Rekor dsse bodies and tlogEntries are checked for
the exact shapes signing.md gives.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence

import pytest
from pymerkle import InmemoryTree

from affidavit.signing.dsse import sign_envelope
from affidavit.signing.keys import LocalSigner, generate_private_key, keyid_of, public_pem
from affidavit.signing.tlog import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from affidavit.signing.tlog_entry import (
    TRUSTED_ROOT_MEDIA_TYPE,
    TlogEntryError,
    dsse_body,
    dsse_body_problem,
    parse_tlog_entry,
    tlog_entry,
    trusted_root,
)
from affidavit.signing.tlog_note import (
    Checkpoint,
    CheckpointError,
    log_id_of,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)

MAX_N = 64


# -- an independent RFC 9162 implementation (from the RFC's text) ------------------------------


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(entries: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1: MTH({}) = HASH(), MTH({d0}) = HASH(0x00 || d0), else split at k < n, the largest power of 2."""
    n = len(entries)
    if n == 0:
        return H(b"")
    if n == 1:
        return H(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return H(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def rfc_verify_inclusion(leaf_index: int, tree_size: int, hash_: bytes, inclusion_path: Sequence[bytes],
                         root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if leaf_index >= tree_size:  # 1
        return False
    fn, sn = leaf_index, tree_size - 1  # 2
    r = hash_  # 3
    for p in inclusion_path:  # 4
        if sn == 0:  # 4a
            return False
        if fn & 1 or fn == sn:  # 4b
            r = H(b"\x01" + p + r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = H(b"\x01" + r + p)
        fn >>= 1  # 4c
        sn >>= 1
    return sn == 0 and r == root_hash  # 5


def rfc_verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes,
                           consistency_path: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2, step by step (for 0 < first < second)."""
    path = list(consistency_path)
    if not path:  # 1
        return False
    if first & (first - 1) == 0:  # 2: first is an exact power of 2
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1  # 3
    if fn & 1:  # 4
        while fn & 1:
            fn >>= 1
            sn >>= 1
    fr = sr = path[0]  # 5
    for c in path[1:]:  # 6
        if sn == 0:  # 6a
            return False
        if fn & 1 or fn == sn:  # 6b
            fr = H(b"\x01" + c + fr)
            sr = H(b"\x01" + c + sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = H(b"\x01" + sr + c)
        fn >>= 1  # 6c
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0  # 7


ENTRIES = [f"entry {i}: {'x' * (i % 7)}".encode() for i in range(MAX_N)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def tree(n: int) -> MemoryTree:
    return MemoryTree.from_leaves(LEAVES[:n])


# -- hashing and roots ------------------------------------------------------------------------


def test_hashes_use_the_rfc_6962_prefixes() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    assert tree(0).root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_roots_agree_with_the_rfc_definition_and_pymerkle_for_sizes_1_to_64() -> None:
    reference = InmemoryTree(algorithm="sha256")  # RFC 6962 0x00 / 0x01 prefixes unless disable_security
    assert reference.security is True
    for n in range(1, MAX_N + 1):
        reference.append_entry(ENTRIES[n - 1])
        ours = tree(n).root()
        assert ours == mth(ENTRIES[:n]), n
        assert ours == reference.get_root(n), n
        assert tree(MAX_N).root(n) == ours  # the root of a prefix, computed inside a larger tree


def test_memory_tree_refuses_partial_hashes() -> None:
    with pytest.raises(ValueError, match="whole number"):
        MemoryTree(b"x" * 33)


# -- inclusion ---------------------------------------------------------------------------------


def test_every_inclusion_proof_verifies_with_the_rfc_verifier_and_ours() -> None:
    for n in range(1, MAX_N + 1):
        t = tree(n)
        root = t.root()
        for i in range(n):
            proof = t.inclusion_proof(i)
            assert rfc_verify_inclusion(i, n, LEAVES[i], proof, root), (i, n)
            verify_inclusion(LEAVES[i], i, n, proof, root)


def test_wrong_inclusion_proofs_fail_in_both_verifiers() -> None:
    t = tree(13)
    root, proof = t.root(), t.inclusion_proof(5)
    cases = [
        (LEAVES[6], 5, 13, proof, root),  # another leaf
        (LEAVES[5], 4, 13, proof, root),  # another index
        (LEAVES[5], 5, 6, proof, root),  # another size (sizes 12 and 13 share this path: the checkpoint binds them)
        (LEAVES[5], 5, 13, proof[:-1], root),  # a hash short
        (LEAVES[5], 5, 13, [*proof, proof[0]], root),  # a hash too many
        (LEAVES[5], 5, 13, [proof[0][::-1], *proof[1:]], root),  # a changed hash
        (LEAVES[5], 5, 13, proof, tree(12).root()),  # another root
    ]
    for leaf, index, size, path, r in cases:
        assert not rfc_verify_inclusion(index, size, leaf, path, r)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, path, r)
    for bad_index in (13, -1):
        with pytest.raises(ProofError, match="outside"):
            verify_inclusion(LEAVES[0], bad_index, 13, proof, root)
    with pytest.raises(ProofError, match="bytes, not 32"):
        verify_inclusion(LEAVES[5], 5, 13, [b"short", *proof[1:]], root)


# -- consistency -------------------------------------------------------------------------------


def test_every_consistency_proof_verifies_with_the_rfc_verifier_and_ours() -> None:
    big = tree(MAX_N)
    for n in range(1, MAX_N + 1):
        new_root = big.root(n)
        for m in range(0, n + 1):
            proof = big.consistency_proof(m, n)
            old_root = big.root(m)
            if 0 < m < n:
                assert rfc_verify_consistency(m, n, old_root, new_root, proof), (m, n)
            else:
                assert proof == []  # RFC 9162: nothing to prove from the empty tree or to itself
            verify_consistency(m, n, proof, old_root, new_root)


def forked(n: int, at: int) -> MemoryTree:
    leaves = list(LEAVES[:n])
    leaves[at] = leaf_hash(b"rewritten " + ENTRIES[at])
    return MemoryTree.from_leaves(leaves)


def test_consistency_fails_for_a_forked_or_truncated_history() -> None:
    for m, n, at in [(5, 13, 2), (8, 20, 7), (1, 2, 0), (32, 64, 31), (7, 7, 3)]:
        honest_old = tree(m).root()
        fork = forked(n, at)  # the same log, with entry `at` (< m) rewritten afterwards
        proof = fork.consistency_proof(m)
        if 0 < m < n:
            assert not rfc_verify_consistency(m, n, honest_old, fork.root(), proof)
        with pytest.raises(ProofError):
            verify_consistency(m, n, proof, honest_old, fork.root())
    t = tree(20)
    proof = t.consistency_proof(8)
    with pytest.raises(ProofError):  # a log that dropped its last entry is not an extension
        verify_consistency(8, 19, tree(19).consistency_proof(8), t.root(8), t.root())
    with pytest.raises(ProofError, match="cannot extend"):
        verify_consistency(9, 8, [], t.root(9), t.root(8))
    with pytest.raises(ProofError, match="empty proof"):
        verify_consistency(8, 20, [], t.root(8), t.root())
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(8, 8, proof, t.root(8), t.root(8))
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(0, 8, proof, EMPTY_ROOT, t.root(8))
    with pytest.raises(ProofError, match="needs"):
        verify_consistency(8, 20, proof[:-1], t.root(8), t.root())


def test_proof_generation_refuses_impossible_requests() -> None:
    t = tree(10)
    with pytest.raises(ValueError):
        t.inclusion_proof(10)
    with pytest.raises(ValueError):
        t.consistency_proof(11)
    with pytest.raises(ValueError):
        t.root(11)


# -- checkpoints -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_signer() -> LocalSigner:
    return LocalSigner(generate_private_key())


def test_checkpoint_is_a_c2sp_signed_note(log_signer: LocalSigner) -> None:
    root = tree(5).root()
    text = sign_checkpoint(Checkpoint("affidavit.local/prod", 5, root), log_signer)
    note, _, sig_line = text.partition("\n\n")
    assert note == f"affidavit.local/prod\n5\n{base64.b64encode(root).decode()}"
    assert sig_line.startswith("\u2014 affidavit.local/prod ") and sig_line.endswith("\n") and sig_line.count("\n") == 1
    blob = base64.b64decode(sig_line.split(" ")[2])
    log_id = log_id_of(log_signer.public_key)
    assert log_id == bytes.fromhex(keyid_of(log_signer.public_key))  # SHA-256 of the DER SPKI
    assert blob[:4] == log_id[:4]
    # the signature is ECDSA P-256 / SHA-256 over the note's bytes, newline included
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = log_signer.public_key
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(blob[4:], (note + "\n").encode(), ec.ECDSA(hashes.SHA256()))
    assert verify_checkpoint(text, log_signer.public_key) == Checkpoint("affidavit.local/prod", 5, root)


def test_checkpoint_signed_by_another_key_or_altered_fails(log_signer: LocalSigner) -> None:
    cp = Checkpoint("affidavit.local/prod", 5, tree(5).root())
    other = LocalSigner(generate_private_key())
    with pytest.raises(CheckpointError, match="signed by another key"):
        verify_checkpoint(sign_checkpoint(cp, other), log_signer.public_key)
    text = sign_checkpoint(cp, log_signer)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(text.replace("\n5\n", "\n6\n", 1), log_signer.public_key)
    with pytest.raises(CheckpointError, match="not the log's origin"):
        verify_checkpoint(text.replace("\u2014 affidavit.local/prod", "\u2014 other.example"), log_signer.public_key)


@pytest.mark.parametrize("text, needle", [
    ("affidavit.local/x\n5\nAAAA\n", "no blank line"),
    ("affidavit.local/x\n5\n\n\u2014 a AAAAAAAA\n", "lines"),
    ("affidavit.local/x\n05\n" + "A" * 43 + "=\n\n\u2014 a AAAAAAAA\n", "decimal"),
    ("affidavit.local/x\n5\n!!!!\n\n\u2014 a AAAAAAAA\n", "base64"),
    ("affidavit.local/x\n5\nAAAA\n\n\u2014 a AAAAAAAA\n", "bytes, not 32"),
    ("bad origin\n5\n" + "A" * 43 + "=\n\n\u2014 a AAAAAAAA\n", "origin"),
    ("affidavit.local/x\n5\n" + "A" * 43 + "=\n\n- a AAAAAAAA\n", "signature line"),
    ("affidavit.local/x\n5\n" + "A" * 43 + "=\n\n\u2014 a AAAAAAAA", "ending in a newline"),
    ("affidavit.local/x\n5\n" + "A" * 43 + "=\n\n\u2014 a AAAA\n", "too short"),
    ("affidavit.local/x\n5\n" + "A" * 43 + "=\n\n\u2014 a AAAAAAAA\n\u2014 b AAAAAAAA\n", "exactly one"),
])
def test_malformed_checkpoints_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(CheckpointError, match=needle):
        parse_checkpoint(text)


# -- Rekor dsse bodies and tlogEntries ----------------------------------------------------------


@pytest.fixture(scope="module")
def envelope() -> tuple[LocalSigner, dict[str, object]]:
    signer = LocalSigner(generate_private_key())
    return signer, sign_envelope(b'{"_type": "https://in-toto.io/Statement/v1"}\n', signer)


def test_dsse_body_is_the_rekor_0_0_1_shape(envelope: tuple[LocalSigner, dict[str, object]]) -> None:
    signer, env = envelope
    body = dsse_body(env, signer.public_key)
    obj = json.loads(body)
    assert body == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()  # canonical: RFC 8785
    assert obj == {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(
                json.dumps(env, sort_keys=True, separators=(",", ":")).encode()).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(
                b'{"_type": "https://in-toto.io/Statement/v1"}\n').hexdigest()},
            "signatures": [{"signature": env["signatures"][0]["sig"],  # type: ignore[index]
                            "verifier": base64.b64encode(public_pem(signer.public_key)).decode()}],
        },
    }


def test_dsse_body_problems_are_named(envelope: tuple[LocalSigner, dict[str, object]]) -> None:
    signer, env = envelope
    body = dsse_body(env, signer.public_key)
    payload = b'{"_type": "https://in-toto.io/Statement/v1"}\n'
    sig = str(env["signatures"][0]["sig"])  # type: ignore[index]
    assert dsse_body_problem(body, env, payload, sig, signer.keyid) is None
    other = LocalSigner(generate_private_key())
    other_env = sign_envelope(payload + b" ", other)
    assert "payloadHash" in str(dsse_body_problem(body, env, payload + b" ", sig, signer.keyid))
    assert "envelopeHash" in str(dsse_body_problem(body, other_env, payload, sig, signer.keyid))
    assert "signature is not" in str(dsse_body_problem(body, env, payload, "AAAA", signer.keyid))
    assert "not the run's signer" in str(dsse_body_problem(body, env, payload, sig, other.keyid))
    assert "not JSON" in str(dsse_body_problem(b"{", env, payload, sig, signer.keyid))
    spaced = json.dumps(json.loads(body), indent=1).encode()
    assert "canonical" in str(dsse_body_problem(spaced, env, payload, sig, signer.keyid))
    assert "Rekor" in str(dsse_body_problem(b'{"kind": "intoto"}', env, payload, sig, signer.keyid))


def test_tlog_entry_shape_and_parsing(log_signer: LocalSigner, envelope: tuple[LocalSigner, dict[str, object]]) -> None:
    signer, env = envelope
    body = dsse_body(env, signer.public_key)
    t = MemoryTree.from_leaves([*LEAVES[:6], leaf_hash(body)])
    cp = sign_checkpoint(Checkpoint("affidavit.local/t", 7, t.root()), log_signer)
    entry = tlog_entry(index=6, log_id=log_id_of(log_signer.public_key), integrated_time=1_790_000_000, body=body,
                       tree_size=7, root=t.root(), hashes=t.inclusion_proof(6), checkpoint=cp)
    assert entry["logIndex"] == "6" and entry["integratedTime"] == "1790000000"  # int64 as JSON strings
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert base64.b64decode(entry["logId"]["keyId"]) == log_id_of(log_signer.public_key)
    assert base64.b64decode(entry["canonicalizedBody"]) == body
    proof = entry["inclusionProof"]
    assert set(proof) == {"logIndex", "rootHash", "treeSize", "hashes", "checkpoint"}
    assert proof["checkpoint"] == {"envelope": cp} and proof["treeSize"] == "7"
    parsed = parse_tlog_entry(json.loads(json.dumps(entry)))
    assert (parsed.index, parsed.tree_size, parsed.body, parsed.checkpoint) == (6, 7, body, cp)
    assert rfc_verify_inclusion(6, 7, leaf_hash(parsed.body), parsed.hashes, parsed.root)


@pytest.mark.parametrize("mutate, needle", [
    (lambda e: e.pop("kindVersion"), "kindVersion is missing"),
    (lambda e: e.update(logIndex="-1"), "logIndex is not a non-negative int64"),
    (lambda e: e.update(logIndex=True), "logIndex is not an integer"),
    (lambda e: e.update(logIndex="9" * 20), "int64"),
    (lambda e: e.update(logId={"keyId": "AAAA"}), "logId.keyId has 3 bytes"),
    (lambda e: e.update(canonicalizedBody="%%%"), "canonicalizedBody is not valid base64"),
    (lambda e: e["inclusionProof"].update(hashes="x"), "hashes is not a list"),
    (lambda e: e["inclusionProof"].update(hashes=["AAAA"] * 65), "more than 64"),
    (lambda e: e["inclusionProof"].update(hashes=[7]), r"hashes\[0\] is not a base64 string"),
    (lambda e: e["inclusionProof"].update(checkpoint={"envelope": 5}), "envelope is not a string"),
    (lambda e: e["inclusionProof"].pop("rootHash"), "inclusionProof.rootHash is missing"),
])
def test_malformed_tlog_entries_name_the_field(mutate: object, needle: str, log_signer: LocalSigner) -> None:
    t = tree(3)
    entry = tlog_entry(index=1, log_id=log_id_of(log_signer.public_key), integrated_time=1, body=ENTRIES[1],
                       tree_size=3, root=t.root(), hashes=t.inclusion_proof(1), checkpoint="cp")
    mutate(entry)  # type: ignore[operator]
    with pytest.raises(TlogEntryError, match=needle):
        parse_tlog_entry(entry)
    with pytest.raises(TlogEntryError, match="is missing"):
        parse_tlog_entry("not an object")


def test_trusted_root_names_the_log(log_signer: LocalSigner) -> None:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import serialization

    doc = trusted_root(log_signer.public_key, origin="affidavit.local/prod",
                       log_start=datetime(2026, 1, 1, tzinfo=UTC))
    assert doc["mediaType"] == TRUSTED_ROOT_MEDIA_TYPE == "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
    assert doc["timestampAuthorities"] == [] and doc["certificateAuthorities"] == [] and doc["ctlogs"] == []
    (tlog,) = doc["tlogs"]
    assert "affidavit.local/prod" in tlog["baseUrl"]
    assert tlog["hashAlgorithm"] == "SHA2_256"
    assert base64.b64decode(tlog["logId"]["keyId"]) == log_id_of(log_signer.public_key)
    der = log_signer.public_key.public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    assert tlog["publicKey"] == {"rawBytes": base64.b64encode(der).decode(), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                 "validFor": {"start": "2026-01-01T00:00:00Z"}}
    assert trusted_root(None)["tlogs"] == []
    tsa = {"subject": {"commonName": "TSA"}, "uri": "http://tsa.test/", "certChain": {"certificates": []}}
    assert trusted_root(None, tsa_authorities=[tsa])["timestampAuthorities"] == [tsa]
    with pytest.raises(ValueError, match="origin"):
        trusted_root(log_signer.public_key)


def test_more_body_and_entry_shape_problems(envelope: tuple[LocalSigner, dict[str, object]]) -> None:
    signer, env = envelope
    payload = b'{"_type": "https://in-toto.io/Statement/v1"}\n'
    sig = str(env["signatures"][0]["sig"])  # type: ignore[index]
    body = json.loads(dsse_body(env, signer.public_key))

    def problem(change: object) -> str:
        b = json.loads(json.dumps(body))
        change(b)  # type: ignore[operator]
        return str(dsse_body_problem(json.dumps(b, sort_keys=True, separators=(",", ":")).encode(), env, payload,
                                     sig, signer.keyid))

    assert "has no spec" in problem(lambda b: b.update(spec=[]))
    assert "exactly one signature" in problem(lambda b: b["spec"].update(signatures=b["spec"]["signatures"] * 2))
    assert "not a public key PEM" in problem(lambda b: b["spec"]["signatures"][0].update(verifier="bm90IGEga2V5"))
    assert "not a public key PEM" in problem(lambda b: b["spec"]["signatures"][0].update(verifier=7))
    two = {**env, "signatures": [*env["signatures"], *env["signatures"]]}  # type: ignore[misc]
    with pytest.raises(ValueError, match="exactly one signature"):
        dsse_body(two, signer.public_key)
    entry = tlog_entry(index=0, log_id=b"\0" * 32, integrated_time=1, body=b"{}", tree_size=1, root=b"\0" * 32,
                       hashes=[], checkpoint="cp")
    entry["kindVersion"] = {"kind": 1, "version": "0.0.1"}
    with pytest.raises(TlogEntryError, match="kind / version are not strings"):
        parse_tlog_entry(entry)


def test_oversized_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError, match="at most 16384 bytes"):
        parse_checkpoint("a" * 20000)

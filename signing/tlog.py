"""Merkle tree hashing and proofs of RFC 6962 / RFC 9162 (the transparency log's mathematics).

leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right); a tree of
n leaves splits at k, the largest power of two below n. Proof generation follows
RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (SUBPROOF) over a *perfect-subtree oracle*:
``perfect(level, j)`` is the hash of the complete subtree of 2**level leaves
that starts at leaf ``j * 2**level``. A file-backed log answers it with one read
(see ``affidavit.store.tlog_store``), so a subtree hash, and hence a proof, costs
O(log n) reads. Verification chains the proof hashes from the leaf (or the old
tree's root) upwards, splitting each proof into the part below the point where
the paths to the leaf and to the tree's last leaf diverge ("inner") and the part
along the tree's right border ("border").

Nothing here reads files or knows about JSON; everything is bytes and integers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()

Perfect = Callable[[int, int], bytes]  # (level, index at that level) -> subtree hash


class ProofError(ValueError):
    """A proof does not verify; the message says which check failed."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(perfect: Perfect, start: int, end: int) -> bytes:
    """MTH of the leaves [start, end), from perfect subtrees (O(log n) calls for proof ranges)."""
    width = end - start
    if width <= 0:
        raise ValueError(f"empty or inverted leaf range [{start}, {end})")
    if width & (width - 1) == 0 and start % width == 0:
        return perfect(width.bit_length() - 1, start // width)
    k = split_point(width)
    return node_hash(range_hash(perfect, start, start + k), range_hash(perfect, start + k, end))


def root_hash(perfect: Perfect, size: int) -> bytes:
    return EMPTY_ROOT if size == 0 else range_hash(perfect, 0, size)


def inclusion_proof(perfect: Perfect, index: int, size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves, lowest level first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split_point(end - start)
        if m < k:
            path.append(range_hash(perfect, start + k, end))
            end = start + k
        else:
            path.append(range_hash(perfect, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(perfect: Perfect, old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(range_hash(perfect, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(perfect, start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(range_hash(perfect, start, end))
    proof.reverse()
    return proof


# -- verification ------------------------------------------------------------


def _decompose(index: int, size: int) -> tuple[int, int]:
    """(inner, border): how many proof hashes lie below the paths' divergence, and on the right border."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, hashes: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(hashes):
        seed = node_hash(h, seed) if (index >> i) & 1 else node_hash(seed, h)
    return seed


def _chain_inner_left_only(seed: bytes, hashes: Sequence[bytes], index: int) -> bytes:
    """Like _chain_inner, but only the siblings on the left (the old tree had nothing to the right)."""
    for i, h in enumerate(hashes):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border(seed: bytes, hashes: Sequence[bytes]) -> bytes:
    for h in hashes:
        seed = node_hash(h, seed)
    return seed


def _check_hashes(hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofError(f"proof hash {i} has {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` in a tree of ``size`` (ProofError if malformed)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    _check_hashes(proof)
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"the proof has {len(proof)} hashes; a leaf at index {index} of a tree of {size} "
                         f"needs {inner + border}")
    return _chain_border(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless ``proof`` shows ``leaf`` at ``index`` in the tree (``size``, ``root``)."""
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root of the tree of {size}")


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Raise ProofError unless ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    _check_hashes(proof)
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"a tree of {new_size} leaves cannot extend one of {old_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between trees of the same size must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}: the histories differ")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError(f"an empty proof cannot show that size {old_size} is a prefix of size {new_size}")
    inner, border = _decompose(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1  # trailing zeros: the old tree's last perfect subtree
    inner -= shift
    if old_size == 1 << shift:  # the old tree is itself a perfect subtree of the new one
        seed, rest = old_root, list(proof)
    else:
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        expected = inner + border + (0 if old_size == 1 << shift else 1)
        raise ProofError(f"the proof has {len(proof)} hashes; from size {old_size} to {new_size} it needs {expected}")
    mask = (old_size - 1) >> shift
    got_old = _chain_border(_chain_inner_left_only(seed, rest[:inner], mask), rest[inner:])
    if got_old != old_root:
        raise ProofError(f"the consistency proof does not lead to the old root (size {old_size}): "
                         "entries before it were removed or rewritten")
    got_new = _chain_border(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if got_new != new_root:
        raise ProofError(f"the consistency proof does not lead to the new root (size {new_size})")


class MemoryTree:
    """A tree over leaf hashes held in memory (a verifier's view of ``log/leaves.bin``).

    Each level is one bytes buffer (32 bytes per perfect subtree), so a large
    tree costs about twice its leaves in memory and no Python object per node.
    """

    def __init__(self, leaves: bytes) -> None:
        if len(leaves) % HASH_SIZE:
            raise ValueError(f"{len(leaves)} bytes is not a whole number of {HASH_SIZE}-byte leaf hashes")
        self.levels: list[bytes] = [bytes(leaves)]
        while len(self.levels[-1]) >= 2 * HASH_SIZE:
            below = memoryview(self.levels[-1])
            pairs = len(below) // (2 * HASH_SIZE)
            self.levels.append(b"".join(
                hashlib.sha256(b"\x01" + below[2 * i * HASH_SIZE:(2 * i + 2) * HASH_SIZE]).digest()
                for i in range(pairs)))

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes]) -> MemoryTree:
        return cls(b"".join(leaves))

    @property
    def size(self) -> int:
        return len(self.levels[0]) // HASH_SIZE

    def perfect(self, level: int, index: int) -> bytes:
        return self.levels[level][index * HASH_SIZE:(index + 1) * HASH_SIZE]

    def leaf(self, index: int) -> bytes:
        return self.perfect(0, index)

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self.perfect, self.size if size is None else self._bound(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self.perfect, index, self.size if size is None else self._bound(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(self.perfect, old_size, self.size if new_size is None else self._bound(new_size))

    def _bound(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree holds {self.size} leaves, not {size}")
        return size

"""Validating the trees of every commit a bundle brings, each distinct tree once.

paths.validate_tree checks one commit's whole tree. A bundle of N per-file commits has N root trees
that share almost all of their subtrees, so checking each commit's tree from scratch costs N times the
folder's size. Here a subtree already found valid reads as an empty tree the next time, so each tree
object is parsed and checked once: the work is proportional to the new objects, not to N × the tree.
A subtree validated below the root is valid anywhere below a root; a root is checked as a root again
(the folder marker is refused only at the top).
"""

from collections.abc import Iterable

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Tree

from ocsync_tui.vcs.paths import validate_tree

_EMPTY_TREE = (Tree.type_num, b"")


class _SkipValidatedSubtrees:
    """The read side validate_tree uses (get_raw), with already-validated subtrees read as empty."""

    def __init__(self, store: BaseObjectStore, validated_subtrees: set[bytes]) -> None:
        self._store = store
        self._validated_subtrees = validated_subtrees
        self.root: bytes = b""
        self.read: set[bytes] = set()

    def get_raw(self, object_id: bytes) -> tuple[int, bytes]:
        if object_id != self.root and object_id in self._validated_subtrees:
            return _EMPTY_TREE
        self.read.add(object_id)
        return self._store.get_raw(object_id)


def validate_commit_trees(store: BaseObjectStore, commit_ids: Iterable[bytes]) -> None:
    """Raise UnsafePathError unless every commit's tree may be written to a synced folder."""
    validated_subtrees: set[bytes] = set()
    validated_roots: set[bytes] = set()
    reader = _SkipValidatedSubtrees(store, validated_subtrees)
    for commit_id in commit_ids:
        root = store[commit_id].tree
        if root in validated_roots:
            continue
        reader.root, reader.read = root, set()
        validate_tree(reader, root)  # type: ignore[arg-type]  # only get_raw is used
        validated_roots.add(root)
        validated_subtrees.update(reader.read)

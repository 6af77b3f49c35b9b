"""Validating the trees of every commit a bundle brings, each distinct tree once per place.

paths.validate_tree checks one commit's whole tree. A bundle of N per-file commits has N root trees
that share almost all of their subtrees, so checking each commit's tree from scratch costs N times the
folder's size. One shared ValidatedTrees skips a subtree already found valid at a place no deeper and
with no longer a path, so the work is proportional to the new objects, not to N × the tree.
"""

from collections.abc import Iterable

from dulwich.object_store import BaseObjectStore

from ocsync_tui.vcs.paths import ValidatedTrees, validate_tree


def validate_commit_trees(store: BaseObjectStore, commit_ids: Iterable[bytes]) -> None:
    """Raise UnsafePathError unless every commit's tree may be written to a synced folder."""
    known_valid = ValidatedTrees()
    for commit_id in commit_ids:
        validate_tree(store, store[commit_id].tree, known_valid=known_valid)

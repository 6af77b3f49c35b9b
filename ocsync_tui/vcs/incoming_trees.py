"""Validating the trees of every commit a bundle brings, each distinct tree once per place.

paths.validate_tree checks one commit's whole tree. A bundle of N per-file commits has N root trees
that share almost all of their subtrees, so checking each commit's tree from scratch costs N times the
folder's size. One shared ValidatedTrees skips a subtree already found valid at a place no deeper and
with no longer a path, so the work is proportional to the new objects, not to N × the tree.
"""

import re
from collections.abc import Iterable

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Commit

from ocsync_tui.vcs.paths import ValidatedTrees, validate_tree

_LINK = re.compile(rb"(tree|parent) ([0-9a-f]{40})")


def commit_links(raw: bytes) -> tuple[bytes, list[bytes]] | None:
    """The tree and parent ids of a raw commit as git writes one, or None for any other shape.

    Building a dulwich Commit parses every header and the message: most of reading a bundle's commits.
    This reads the header lines only, and accepts just the shape in which every reader finds the same
    links: one tree line first, then the parent lines, and no tree or parent line (nor a continuation
    of one) anywhere else in the header.
    """
    lines = raw.split(b"\n\n", 1)[0].split(b"\n")
    links = [_LINK.fullmatch(line) for line in lines]
    if links[0] is None or links[0][1] != b"tree":
        return None
    count = 1
    while count < len(links) and links[count] is not None and links[count][1] == b"parent":
        count += 1
    rest = lines[count:]
    if rest and rest[0].startswith(b" ") or any(line.split(b" ", 1)[0] in (b"tree", b"parent") for line in rest):
        return None
    return links[0][2], [link[2] for link in links[1:count]]


def _tree_of(store: BaseObjectStore, commit_id: bytes) -> bytes:
    type_num, raw = store.get_raw(commit_id)
    links = commit_links(raw) if type_num == Commit.type_num else None
    return links[0] if links is not None else store[commit_id].tree


def validate_commit_trees(store: BaseObjectStore, commit_ids: Iterable[bytes]) -> None:
    """Raise UnsafePathError unless every commit's tree may be written to a synced folder."""
    validate_root_trees(store, (_tree_of(store, commit_id) for commit_id in commit_ids))


def validate_root_trees(store: BaseObjectStore, tree_ids: Iterable[bytes]) -> None:
    """The same for the commits' root trees, when the caller knows them already."""
    known_valid = ValidatedTrees()
    for tree_id in tree_ids:
        validate_tree(store, tree_id, known_valid=known_valid)

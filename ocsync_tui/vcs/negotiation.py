"""Negotiation of a pull, as git's protocol does it: the puller lists commits it has, the giver bundles
everything from its head back to the ones it also has.

`haves(folder)` is what the puller sends: its head, the heads it last recorded from its peers
(`refs/peers/*/main`), and first-parent ancestors of its head at distances 1, 2, 4, 8, … 1024, plus
the root when it is within that reach. `bundle_for(folder, haves, out)` is the giver's
side: the haves it knows become the bundle's boundary (its prerequisites are the newest of them on each
line of history); none known gives a full bundle; None when the puller already has the giver's head.
Both read the repository only; `bundle_for` writes the bundle file.
"""

import os
from pathlib import Path

from dulwich.objects import Commit

from ocsync_tui.vcs.bundle import BundleInfo, FolderLike, create_bundle

MAX_HAVES = 64
_PEER_REFS = b"refs/peers"
_MAX_PEER_HEADS = 32
# Reading a commit costs some 50 µs and every pull starts with this walk, so it stops 1024 commits down
# (11 samples, ~50 ms). The heads recorded from peers are what finds common history day to day; two
# replicas whose histories part deeper than that, with no such head in common, get a full bundle.
_MAX_WALK = 1024


def haves(folder: FolderLike) -> list[str]:
    """Commit ids (hex) this folder has, newest first, at most MAX_HAVES; empty before the first commit."""
    head = folder.head()
    if head is None:
        return []
    peer_heads = sorted(
        sha
        for name, sha in folder.repo.refs.as_dict(_PEER_REFS).items()
        if name.endswith(b"/main") and name.count(b"/") == 1
    )[:_MAX_PEER_HEADS]
    chosen: dict[bytes, None] = dict.fromkeys([head, *peer_heads, *_sampled_ancestors(folder, head)])
    return [sha.decode("ascii") for sha in list(chosen)[:MAX_HAVES]]


def _sampled_ancestors(folder: FolderLike, head: bytes) -> list[bytes]:
    """First-parent ancestors of `head` at distances 1, 2, 4, … up to _MAX_WALK, and the root within it."""
    store = folder.repo.object_store
    sampled: list[bytes] = []
    distance, next_sample, commit_id = 0, 1, head
    while distance < _MAX_WALK:
        try:
            parent = _first_parent(store.get_raw(commit_id)[1])
        except KeyError:
            return sampled  # a damaged history: what was sampled so far is still true
        if parent is None:
            if commit_id != head and (not sampled or sampled[-1] != commit_id):
                sampled.append(commit_id)  # the root: common to every replica of the folder
            return sampled
        commit_id, distance = parent, distance + 1
        if distance == next_sample:
            sampled.append(commit_id)
            next_sample *= 2
    return sampled


def _first_parent(raw_commit: bytes) -> bytes | None:
    """The first parent of a raw commit, read from its header without parsing the whole commit."""
    # A commit starts "tree <40 hex>\n", then its parents in order, one "parent <40 hex>\n" line each.
    start = len(b"tree ") + 40 + 1
    if raw_commit[start : start + 7] == b"parent ":
        return raw_commit[start + 7 : start + 47]
    return None


def _commits_we_have(folder: FolderLike, candidates: list[str]) -> list[str]:
    store = folder.repo.object_store
    known = []
    for sha in dict.fromkeys(candidates):
        try:
            type_num, _ = store.get_raw(sha.encode("ascii"))
        except (KeyError, ValueError, UnicodeEncodeError):
            continue
        if type_num == Commit.type_num:
            known.append(sha)
    return known


def bundle_for(folder: FolderLike, puller_haves: list[str], out: Path, *, durable: bool = True) -> BundleInfo | None:
    """Write at `out` the bundle of what the puller lacks; None (no file) when it has our head already,
    or when we have no commit at all. Raises BundleError as create_bundle does (`durable` too)."""
    head = folder.head()
    if head is None:
        return None
    common = _commits_we_have(folder, puller_haves)
    if head.decode("ascii") in common:
        return None
    info = create_bundle(folder, common, out, durable=durable)
    if info.commit_count == 0:
        # Our head is an ancestor of something the puller has: nothing to send.
        os.remove(out)
        return None
    return info

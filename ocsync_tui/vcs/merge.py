"""The merge every peer computes alike: a pure, symmetric function of two heads over an object store.

If two peers merging the same heads made different commits they would merge each other's merges
forever, so nothing here depends on which head is "ours", on the clock, or on the machine: the result
is a function of the two histories alone. Objects are only read; the trees and the merge commit come
back in MergeResult.new_objects for the caller to write.

Per path (base = the merge base, several bases merged recursively into a virtual one as git's
recursive strategy does): changed on one side only → that side; changed identically → it; deleted on
one side and modified on the other → the modified file; changed differently on both → a conflict.
A conflict keeps both versions: the one whose introducing commit has the greater (commit time, device
ID) stays at the path, the other moves to a conflict copy. Nothing is ever placed where a disk could not
hold it next to the rest: a file where the other side has a folder, or a name equal to another but for
case or Unicode normalisation, moves to a conflict copy too.
"""

import heapq
import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from dulwich.errors import ObjectFormatException
from dulwich.lru_cache import LRUCache
from dulwich.object_store import BaseObjectStore
from dulwich.objects import Commit, ShaFile, Tree

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.conflict_names import conflict_copy_names, conflict_copy_origin
from ocsync_tui.vcs.paths import DIRECTORY_MODE, ValidatedTrees, collision_key, validate_tree

MERGE_IDENTITY = b"ocsync <merge@ocsync.invalid>"

Entry = tuple[int, bytes]
"""A file version in a tree: (mode, blob id). Symlinks are files whose mode says so."""

BOTH_CHANGED = "changed on both sides"
FOLDER_OF_SAME_NAME = "a folder has the same name"
NAME_DIFFERS_ONLY_IN_CASE = "another name differs only in case or Unicode form"


class MergeError(OcsyncError):
    """The repository lacks what a merge needs (a commit, tree or parent)."""


@dataclass(frozen=True)
class Conflict:
    """One version moved aside so that another could stay at `path`.

    `copy_path` is where the moved version now is, named after the original even when `path` is itself
    a conflict copy; None when both sides edited the same conflict copy and the newer edit superseded
    the older one. `winner` and `loser` are the commits that introduced the kept and the moved version;
    `winner` is None when what stayed is a folder.
    """

    path: str
    copy_path: str | None
    winner: bytes | None
    loser: bytes
    reason: str


@dataclass(frozen=True)
class MergeResult:
    kind: Literal["up-to-date", "fast-forward", "merge"]
    head: bytes
    new_objects: list[ShaFile] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


_SHA_LENGTH = 20
_MAX_VIRTUAL_BASE_DEPTH = 16


def _unreadable(object_id: bytes, why: str) -> MergeError:
    return MergeError(f"cannot merge: object {object_id.decode()} {why}")


@contextmanager
def _reading(object_id: bytes) -> Iterator[None]:
    """Turn the store's errors for a missing or unparseable object into a MergeError."""
    try:
        yield
    except KeyError:
        raise _unreadable(object_id, "is missing from the repository") from None
    except (ObjectFormatException, ValueError):
        raise _unreadable(object_id, "is damaged") from None


def _has_serialized_entry(raw_tree: bytes, name: bytes, entry: Entry) -> bool:
    """Whether a serialized tree holds the entry `MODE NAME\\0ID`.

    A match counts only where an entry may start: at the beginning, or just after the NUL ending the
    previous entry's name and that entry's 20-byte id (a name like `x100644 a.txt` holds the bytes of
    an `a.txt` entry in its middle).
    """
    mode, sha = entry
    needle = b"%o %s\0%s" % (mode, name, bytes.fromhex(sha.decode("ascii")))
    at = raw_tree.find(needle)
    while at > 0 and (at <= _SHA_LENGTH or raw_tree[at - _SHA_LENGTH - 1] != 0):
        at = raw_tree.find(needle, at + 1)
    return at >= 0


class _Objects:
    """Read access to the store plus the objects this merge made (virtual merge bases), cached."""

    def __init__(self, store: BaseObjectStore) -> None:
        self.store = store
        self._made: dict[bytes, ShaFile] = {}
        # History walks read the same commits again and again; a flat folder's trees are large.
        self._cached: dict[type[ShaFile], LRUCache[bytes, ShaFile]] = {
            Commit: LRUCache(max_cache=20_000),
            Tree: LRUCache(max_cache=256),
        }

    def add(self, obj: ShaFile) -> None:
        self._made[obj.id] = obj

    def _get(self, object_id: bytes, kind: type[ShaFile]) -> ShaFile:
        cache = self._cached[kind]
        obj = cache.get(object_id) or self._made.get(object_id)
        if obj is None:
            with _reading(object_id):
                obj = self.store[object_id]
        if not isinstance(obj, kind):
            raise _unreadable(object_id, f"is not a {kind.__name__.lower()}")
        # A peer's commit without a tree, committer or time would otherwise crash the history walks.
        if isinstance(obj, Commit) and None in (obj.tree, obj.committer, obj.commit_time):
            raise _unreadable(object_id, "is damaged")
        cache[object_id] = obj
        return obj

    def commit(self, commit_id: bytes) -> Commit:
        return self._get(commit_id, Commit)

    def tree(self, tree_id: bytes) -> Tree:
        return self._get(tree_id, Tree)

    def _serialized_tree(self, tree_id: bytes) -> bytes:
        made = self._made.get(tree_id)
        if made is not None:
            return made.as_raw_string()
        with _reading(tree_id):
            type_num, raw = self.store.get_raw(tree_id)
        if type_num != Tree.type_num:
            raise _unreadable(tree_id, "is not a tree")
        return raw

    def _folder_tree(self, commit_id: bytes, folders: list[bytes]) -> bytes | None:
        """The id of the commit's tree at the folder path `folders`, or None if it has no such folder."""
        tree_id = self.commit(commit_id).tree
        for folder in folders:
            tree = self.tree(tree_id)
            if folder not in tree or tree[folder][0] != DIRECTORY_MODE:
                return None
            tree_id = tree[folder][1]
        return tree_id

    def holds(self, commit_id: bytes, path: str, entry: Entry) -> bool:
        """Whether the commit has this version of the file at `path`.

        History walks ask this once per commit. Parsing a flat folder's root tree of thousands of files
        costs milliseconds each time, so the file's directory is reached through parsed (small, cached)
        trees and the entry itself is found by its exact bytes in the directory's serialized tree.
        """
        *folders, name = path.encode("utf-8", "surrogateescape").split(b"/")
        tree_id = self._folder_tree(commit_id, folders)
        return tree_id is not None and _has_serialized_entry(self._serialized_tree(tree_id), name, entry)

    def places_of(self, commit_id: bytes, origin: str, entry: Entry) -> list[str]:
        """Where the commit has this version of the file: at `origin` or at a conflict copy of it."""
        directory, slash, _ = origin.rpartition("/")
        folders = directory.encode("utf-8", "surrogateescape").split(b"/") if slash else []
        tree_id = self._folder_tree(commit_id, folders)
        if tree_id is None:
            return []
        places = []
        for item in self.tree(tree_id).iteritems():
            place = directory + slash + item.path.decode("utf-8", "surrogateescape")
            if (item.mode, item.sha) == entry and origin in (place, conflict_copy_origin(place)):
                places.append(place)
        return places

    def files(self, commit_id: bytes) -> dict[str, Entry]:
        files: dict[str, Entry] = {}
        pending = [(self.commit(commit_id).tree, "")]
        while pending:
            tree_id, prefix = pending.pop()
            for item in self.tree(tree_id).iteritems():
                path = prefix + item.path.decode("utf-8", "surrogateescape")
                if item.mode == DIRECTORY_MODE:
                    pending.append((item.sha, path + "/"))
                else:
                    files[path] = (item.mode, item.sha)
        return files


def _device_id(commit: Commit) -> str:
    """The local part of the committer's email: ocsync commits are `Name <DEVICE-ID@ocsync.invalid>`."""
    email = commit.committer.rpartition(b"<")[2].partition(b">")[0]
    return email.rpartition(b"@")[0].decode("utf-8", "replace")


def _recency(objects: _Objects, commit_id: bytes) -> tuple[int, str]:
    commit = objects.commit(commit_id)
    return commit.commit_time, _device_id(commit)


def _is_ancestor_of_any(objects: _Objects, candidate: bytes, descendants: list[bytes]) -> bool:
    pending, seen = list(descendants), set()
    while pending:
        commit_id = pending.pop()
        for parent in objects.commit(commit_id).parents:
            if parent == candidate:
                return True
            if parent not in seen:
                seen.add(parent)
                pending.append(parent)
    return False


def _is_newer(objects: _Objects, first: bytes, second: bytes) -> bool:
    """Whether the commit `first` is newer than `second`: by (commit time, device ID), and for two
    commits of one device in one second by history (a device's own commits form a line, and an edit of
    a conflict copy supersedes the older one: it must be the one its device replaced)."""
    first_key, second_key = _recency(objects, first), _recency(objects, second)
    if first_key != second_key:
        return first_key > second_key
    if _is_ancestor_of_any(objects, second, [first]):
        return True
    if _is_ancestor_of_any(objects, first, [second]):
        return False
    return first > second


def _introduced_by(objects: _Objects, heads: list[bytes], path: str, entry: Entry) -> bytes:
    """The most recent commit, walking back from `heads`, that put this version of `path` there.

    A commit whose parent already had the version did not touch the path. A version that no parent of
    an ocsync merge commit had at `path` is a conflict copy that merge made: the walk follows it to
    the path the copy is named after or to another copy of that path, so the copy keeps the time and
    device of its real author.
    """
    pending = [(head, path) for head in heads if objects.holds(head, path, entry)]
    seen: set[tuple[bytes, str]] = set()
    introducers: list[bytes] = []
    while pending:
        commit_id, at = pending.pop()
        if (commit_id, at) in seen:
            continue
        seen.add((commit_id, at))
        commit = objects.commit(commit_id)
        inherited = [(parent, at) for parent in commit.parents if objects.holds(parent, at, entry)]
        origin = conflict_copy_origin(at)
        if not inherited and commit.committer == MERGE_IDENTITY and origin is not None:
            # A copy moved aside from a conflict copy is named after the original too: look at both.
            inherited = [
                (parent, place) for parent in commit.parents for place in objects.places_of(parent, origin, entry)
            ]
        if inherited:
            pending.extend(inherited)
        else:
            introducers.append(commit_id)
    return max(introducers, key=lambda commit_id: (_recency(objects, commit_id), commit_id))


def _held_before(objects: _Objects, commit_id: bytes, path: str, entry: Entry) -> bool:
    """Whether some commit before `commit_id` had this version of the file at `path`.

    Walks the whole history when none did; asked only for conflicts on conflict copies, which are rare.
    """
    pending, seen = list(objects.commit(commit_id).parents), set()
    while pending:
        ancestor = pending.pop()
        if ancestor in seen:
            continue
        seen.add(ancestor)
        if objects.holds(ancestor, path, entry):
            return True
        pending.extend(objects.commit(ancestor).parents)
    return False


def _merge_bases(objects: _Objects, a: bytes, b: bytes) -> list[bytes]:
    """git's merge bases: the common ancestors that are not ancestors of another common ancestor.

    Walks newest first (git's paint_down_to_common) and stops once every commit still queued is known
    to be below a common ancestor, so the walk stays near the tips. ocsync never commits below a
    parent's time; should a peer's clock have done so, the final check removes any base that is an
    ancestor of another.
    """
    reached_from_a, reached_from_b, stale = 1, 2, 4
    flags: dict[bytes, int] = defaultdict(int)
    flags[a] |= reached_from_a
    flags[b] |= reached_from_b
    queue = [(-objects.commit(c).commit_time, c) for c in {a, b}]
    heapq.heapify(queue)
    found: list[bytes] = []
    while any(not flags[c] & stale for _, c in queue):
        _, commit_id = heapq.heappop(queue)
        state = flags[commit_id]
        if state == reached_from_a | reached_from_b:
            found.append(commit_id)
            state |= stale
        for parent in objects.commit(commit_id).parents:
            if flags[parent] & state != state:
                flags[parent] |= state
                heapq.heappush(queue, (-objects.commit(parent).commit_time, parent))
    bases = sorted({c for c in found if not flags[c] & stale})
    return [c for c in bases if not _is_ancestor_of_any(objects, c, [o for o in bases if o != c])]


def _three_way(base: dict[str, Entry], a: dict[str, Entry], b: dict[str, Entry]) -> tuple[dict[str, Entry], list[str]]:
    """Per-path merge; returns the merged files and the paths changed differently on both sides."""
    merged: dict[str, Entry] = {}
    both_changed: list[str] = []
    for path in sorted(a.keys() | b.keys()):
        ours, theirs, before = a.get(path), b.get(path), base.get(path)
        if ours == theirs or theirs == before:
            result = ours
        elif ours == before:
            result = theirs
        elif ours is None or theirs is None:
            result = ours or theirs
        else:
            both_changed.append(path)
            continue
        if result is not None:
            merged[path] = result
    return merged, both_changed


def _directories(paths: list[str]) -> set[str]:
    """Every folder that holds one of `paths`, at any depth."""
    return {path[:i] for path in paths for i, char in enumerate(path) if char == "/"}


@dataclass(frozen=True)
class _Displaced:
    """A version that must leave `path` for a conflict copy."""

    path: str
    entry: Entry
    loser: bytes
    winner: bytes | None
    reason: str
    superseded: bool = False
    """A conflict copy both sides edited: the newer edit replaced this one, which is not copied again."""


class _Merge:
    """One three-way merge of two heads, neither of which contains the other.

    `depth` counts the virtual merge bases being built around this one.
    """

    def __init__(self, objects: _Objects, a: bytes, b: bytes, depth: int) -> None:
        self.objects = objects
        self.heads = sorted([a, b])
        self.depth = depth

    def _introduced_on_either_side(self, path: str, entry: Entry) -> bytes:
        return _introduced_by(self.objects, self.heads, path, entry)

    def _base_files(self) -> dict[str, Entry]:
        bases = _merge_bases(self.objects, *self.heads)
        if not bases:
            return {}
        virtual = bases[0]
        # A crafted history can nest criss-crosses without end. Past this depth one real base stands in
        # for the virtual one: more conflicts, never a lost version (any common ancestor is a safe base,
        # since a version it shares with one side was replaced on the other).
        if self.depth < _MAX_VIRTUAL_BASE_DEPTH:
            for other in bases[1:]:
                virtual = _merge(self.objects, virtual, other, self.depth + 1).head
        return self.objects.files(virtual)

    def _resolve_both_changed(
        self, path: str, base: dict[str, Entry], files: list[dict[str, Entry]]
    ) -> tuple[Entry, _Displaced]:
        """The version to keep at `path`, and the other one as displaced.

        On a conflict copy that both sides edited from the base's version, the older edit is superseded
        rather than copied again. Two versions that did not both come from the base's copy (added at the
        same copy name on two replicas: copy names go down to the second and the device) are both kept.
        """
        versions = [
            (_introduced_by(self.objects, [head], path, side[path]), side[path])
            for head, side in zip(self.heads, files)
        ]
        if not _is_newer(self.objects, versions[0][0], versions[1][0]):
            versions.reverse()
        (winner, winner_entry), (loser, loser_entry) = versions
        before = base.get(path)
        superseded = (
            conflict_copy_origin(path) is not None
            and before is not None
            and all(_held_before(self.objects, introducer, path, before) for introducer, _ in versions)
        )
        return winner_entry, _Displaced(path, loser_entry, loser, winner, BOTH_CHANGED, superseded)

    def _displace_clashing_names(self, merged: dict[str, Entry]) -> list[_Displaced]:
        """Files where the merged tree has a folder, and all but the first of names a disk sees as one."""
        displaced: list[_Displaced] = []
        folders = _directories(list(merged))
        folder_keys = {collision_key(folder) for folder in folders}
        by_key: dict[str, list[str]] = defaultdict(list)
        for path in sorted(merged):
            by_key[collision_key(path)].append(path)
        for key, paths in sorted(by_key.items()):
            kept = None if key in folder_keys else paths[0]
            for path in paths:
                if path == kept:
                    continue
                entry = merged.pop(path)
                reason = FOLDER_OF_SAME_NAME if kept is None else NAME_DIFFERS_ONLY_IN_CASE
                winner = None if kept is None else self._introduced_on_either_side(kept, merged[kept])
                loser = self._introduced_on_either_side(path, entry)
                displaced.append(_Displaced(path, entry, loser, winner, reason))
        return displaced

    def _place_copies(self, merged: dict[str, Entry], displaced: list[_Displaced]) -> list[Conflict]:
        """Put each displaced version at the first free conflict-copy name, in an order every peer shares.

        A version displaced from a conflict copy is named after the copy's original, never a copy of a
        copy; a superseded one is not copied at all.
        """
        # Free on a case-folding, normalising disk too, or the copy would clash there in turn.
        taken = {collision_key(name) for name in merged.keys() | _directories(list(merged))}
        conflicts = []
        for item in sorted(displaced, key=lambda d: (d.path, d.entry)):
            if item.superseded:
                conflicts.append(Conflict(item.path, None, item.winner, item.loser, item.reason))
                continue
            loser = self.objects.commit(item.loser)
            origin = conflict_copy_origin(item.path) or item.path
            for candidate in conflict_copy_names(origin, loser.commit_time, _device_id(loser), item.entry[1]):
                if collision_key(candidate) not in taken:
                    break
            taken.add(collision_key(candidate))
            merged[candidate] = item.entry
            conflicts.append(Conflict(item.path, candidate, item.winner, item.loser, item.reason))
        return conflicts

    def run(self) -> tuple[Commit, list[Tree], list[Conflict]]:
        files = [self.objects.files(head) for head in self.heads]
        base = self._base_files()
        merged, both_changed = _three_way(base, *files)
        displaced = []
        for path in both_changed:
            merged[path], loser = self._resolve_both_changed(path, base, files)
            displaced.append(loser)
        displaced += self._displace_clashing_names(merged)
        conflicts = self._place_copies(merged, displaced)
        trees = _trees_for(merged)
        commit = Commit()
        commit.tree = trees[-1].id
        commit.parents = self.heads
        commit.author = commit.committer = MERGE_IDENTITY
        commit.author_time = commit.commit_time = max(self.objects.commit(h).commit_time for h in self.heads)
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = _message(conflicts)
        return commit, trees, conflicts


def _trees_for(files: dict[str, Entry]) -> list[Tree]:
    """The distinct trees holding `files`, each after the trees inside it, the root last.

    Built without recursion: a peer's tree may nest folders thousands deep.
    """
    directories: dict[bytes, Tree] = {b"": Tree()}
    for path, (mode, sha) in files.items():
        parts = path.encode("utf-8", "surrogateescape").split(b"/")
        for depth in range(1, len(parts)):
            directories.setdefault(b"/".join(parts[:depth]), Tree())
        directories[b"/".join(parts[:-1])].add(parts[-1], mode, sha)
    deepest_first = sorted(directories, key=lambda directory: -directory.count(b"/") - bool(directory))
    for directory in deepest_first[:-1]:
        parent, _, name = directory.rpartition(b"/")
        directories[parent].add(name, DIRECTORY_MODE, directories[directory].id)
    return list({directories[directory].id: directories[directory] for directory in deepest_first}.values())


def _message(conflicts: list[Conflict]) -> bytes:
    lines = []
    for conflict in conflicts:
        # JSON quoting keeps one line per conflict whatever characters a file name holds.
        if conflict.copy_path is None:
            lines.append(f"{json.dumps(conflict.path, ensure_ascii=False)}: kept the newer version of a conflict copy")
        else:
            lines.append(
                f"{json.dumps(conflict.path, ensure_ascii=False)} -> "
                f"{json.dumps(conflict.copy_path, ensure_ascii=False)} ({conflict.reason})"
            )
    body = "".join(line + "\n" for line in lines)
    return ("merge\n" + ("\n" + body if body else "")).encode("utf-8", "surrogateescape")


def _merge(objects: _Objects, ours: bytes, theirs: bytes, depth: int = 0) -> MergeResult:
    if ours == theirs:
        return MergeResult("up-to-date", ours)
    bases = _merge_bases(objects, ours, theirs)
    if bases == [theirs]:
        return MergeResult("up-to-date", ours)
    if bases == [ours]:
        return MergeResult("fast-forward", theirs)
    commit, trees, conflicts = _Merge(objects, ours, theirs, depth).run()
    for obj in [*trees, commit]:
        objects.add(obj)
    return MergeResult("merge", commit.id, [*trees, commit], conflicts)


def merge_heads(object_store: BaseObjectStore, ours: bytes, theirs: bytes) -> MergeResult:
    """Merge commit `theirs` into `ours` without writing anything.

    Raises UnsafePathError if either head's tree holds a path that may not reach a disk, MergeError if
    an object the merge needs is missing. merge_heads(s, a, b) and merge_heads(s, b, a) give one head.
    """
    objects = _Objects(object_store)
    known_valid = ValidatedTrees()  # the two heads share most of their subtrees
    for head in (ours, theirs):
        validate_tree(object_store, objects.commit(head).tree, known_valid=known_valid)
    result = _merge(objects, ours, theirs)
    new_objects = [obj for obj in result.new_objects if obj.id not in object_store]
    return MergeResult(result.kind, result.head, new_objects, result.conflicts)

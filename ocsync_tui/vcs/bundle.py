"""Thin git bundles of a folder's history, and their quarantined import.

API (stable):

- ``create_bundle(folder, since, out) -> BundleInfo``: writes a v2 git bundle of every commit reachable
  from ``main`` and not from the ``since`` revisions (hex ids, abbreviations or ref names the sender
  knows; an unknown one is a ``BundleError``, and so is a damaged repository). Its prerequisites are the
  boundary commits: parents of sent commits that are not sent. Each blob or tree is stored as a delta
  against the object at the same path in the parent commit, which the receiver has (REF_DELTA: a thin
  pack) or which comes earlier in the pack (OFS_DELTA), so a one-byte edit of a large file costs bytes.
  The bundle carries ``refs/heads/main`` and ``HEAD``, so ``git clone`` checks it out. Written to a
  temporary file in the output's directory, fsynced and renamed. When the receiver already has ``main``
  (empty difference) the bundle is still valid: no objects, with ``main``'s commit as its only
  prerequisite, so the exchange handles "nothing new" like any other bundle and git accepts it. With
  ``since`` empty (a first sync) the bundle holds every object of the store, its pack entries copied
  as they lie on disk (``stored_entries``), deltas included, after a header padded to end on a 4 KiB
  boundary (``aligned_bundles``).
- ``quarantined_import(folder, bundle_path, consume=False)``: a context manager; call it under the
  folder lock. With ``consume`` the bundle file may be used up (an aligned pack is cut out of it in
  place, ``aligned_bundles``). It
  reads a v2 or v3 (sha1) bundle, refuses anything else with ``BundleError``, raises
  ``MissingPrerequisites`` when this repository lacks a prerequisite commit, streams the pack into a
  quarantine object store (``.git/ocsync-quarantine-*``, lookups falling through to the main store) in
  one pass (``pack_indexer``; a large object is never held whole), completes thin deltas against the
  main store, verifies the pack checksum, every object (ids are
  computed from content; an object twice in the completed pack means a delta loop and is refused;
  whatever dulwich raises on a broken pack becomes a ``BundleError``) and that the bundle's head
  (``refs/heads/main``, else ``HEAD``, else its only ref) and everything it reaches is present. It
  yields an ``ImportedBundle`` (``head``, ``prerequisites``, ``object_store`` across quarantine and main
  store and usable only inside the block, ``new_commits``: commits not in the main store yet, parents
  first; ``new_trees``: their root trees, in that order). Leaving the block normally moves the pack
  into the main store (fsynced, pack before index); an exception deletes the quarantine and leaves the
  main store untouched. A quarantine left by a crash is deleted by the next import.
"""

import hashlib
import os
import shutil
import stat
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache, partial
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Protocol

from dulwich.object_store import DiskObjectStore
from dulwich.object_format import SHA1
from dulwich.objects import S_ISGITLINK, Blob, Commit, Tree, parse_tree, sha_to_hex, valid_hexsha
from dulwich.objectspec import AmbiguousShortId, parse_commit
from dulwich.pack import apply_delta, extend_pack, write_pack_index_v2
from dulwich.repo import Repo
from dulwich.walk import ORDER_TOPO, Walker

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.aligned_bundles import align_header, take_pack_in_place
from ocsync_tui.vcs.delta import create_delta
from ocsync_tui.vcs.incoming_trees import commit_links
from ocsync_tui.vcs.pack import (
    MAX_DELTA_DEPTH,
    PackEntry,
    fsync_directory,
    install_pack,
    remove_stale_leftovers,
    write_pack,
)
from ocsync_tui.vcs.pack_indexer import ObjectLinks, PackIndexError, TruncatedPack, index_pack
from ocsync_tui.vcs.pack_reader import PackReadError, PreadObjectStore
from ocsync_tui.vcs.stored_entries import StoredEntryError, write_all_objects

MAIN_REF = b"refs/heads/main"
QUARANTINE_PREFIX = "ocsync-quarantine-"
_HEADER_V2 = b"# v2 git bundle\n"
_HEADER_V3 = b"# v3 git bundle\n"
# Longest header line we accept: a ref line is 41 bytes plus the ref name, a prerequisite line carries
# a commit subject; anything longer is not a bundle we wrote or git would.
_MAX_HEADER_LINE = 64 * 1024
_RECENT_CONTENTS_BYTES = 64 * 1024 * 1024
_PARSED_TREES_KEPT = 32


class BundleError(OcsyncError):
    """A bundle that cannot be written or read: the message names the file and what is wrong."""


class MissingPrerequisites(BundleError):
    """The bundle builds on commits this repository does not have (yet): negotiate again."""

    def __init__(self, bundle_path: Path, missing: list[str]) -> None:
        self.missing = missing
        shown = ", ".join(sha[:12] for sha in missing[:5]) + (" …" if len(missing) > 5 else "")
        super().__init__(
            f"{bundle_path}: this folder lacks {len(missing)} commit(s) the bundle builds on ({shown}); "
            "ask the sender for a bundle since a revision this folder has"
        )


class FolderLike(Protocol):
    """What this module needs of a FolderRepo."""

    repo: Repo
    path: Path
    git_dir: Path

    def head(self) -> bytes | None: ...


@dataclass
class BundleInfo:
    commit_count: int
    object_count: int
    size: int
    sha256: str
    prerequisites: list[str]
    head: str


@dataclass
class ImportedBundle:
    head: bytes
    prerequisites: list[bytes]
    object_store: DiskObjectStore
    new_commits: list[bytes]
    new_trees: list[bytes]  # the root tree of each new commit, in the same order


@dataclass(frozen=True, slots=True)
class _PlannedObject:
    sha: bytes
    type_num: int
    base: bytes | None  # the object at the same path in a parent commit, if of the same kind


def create_bundle(folder: FolderLike, since: list[str], out: Path, *, durable: bool = True) -> BundleInfo:
    """Write the commits on main that `since` lacks as a thin v2 bundle at `out`; see the module docstring.

    `durable=False` skips the fsyncs, for a bundle that is scratch (a crash loses nothing it can't remake)."""
    repo = folder.repo
    head = folder.head()
    if head is None:
        raise BundleError(f"{folder.path}: the folder has no commits yet, so there is nothing to bundle")
    excluded = [_resolve_revision(repo, revision) for revision in since]
    with _failures_as_bundle_error(partial(_unreadable_history_message, folder.path)):
        return _write_bundle(repo, head, excluded, Path(out).absolute(), durable)


def _unreadable_history_message(folder_path: Path, reason: str) -> str:
    return f"{folder_path}: cannot read the folder's history ({reason}); run git fsck in the folder"


def _write_bundle(repo: Repo, head: bytes, excluded: list[bytes], out: Path, durable: bool) -> BundleInfo:
    if not excluded:
        return _write_full_bundle(repo, head, out, durable)
    commits = _commits_to_send(repo.object_store, head, excluded)
    sent = {commit.id for commit in commits}
    boundary = sorted({parent for commit in commits for parent in commit.parents if parent not in sent})
    if not commits:
        boundary = [head]  # empty difference: the receiver proves it has main, and gets just the ref
    # Trees the plan reads are packed right after: keep the latest contents at hand for both.
    recent = _RecentContents(_RECENT_CONTENTS_BYTES)
    planned = _plan_objects(repo.object_store, commits, boundary, recent)
    object_count = len(commits) + len(planned)
    header = _bundle_header(repo.object_store, boundary, head)
    entries = _pack_entries(repo.object_store, commits, planned, recent)
    written = _write_atomically(out, header, lambda pack_out: write_pack(pack_out, entries, object_count), durable)
    return BundleInfo(
        commit_count=len(commits),
        object_count=object_count,
        size=written.size,
        sha256=written.sha256.hexdigest(),
        prerequisites=[commit_id.decode("ascii") for commit_id in boundary],
        head=head.decode("ascii"),
    )


def _write_full_bundle(repo: Repo, head: bytes, out: Path, durable: bool) -> BundleInfo:
    """Everything the store holds, its pack entries copied as they are (see stored_entries): the
    receiver has nothing, so there is nothing to plan, and nothing needs inflating or deflating again."""
    store = repo.object_store
    header = align_header(_bundle_header(store, [], head), head)
    counts = None

    def write_pack_of_everything(pack_out: BinaryIO) -> None:
        nonlocal counts
        try:
            counts = write_all_objects(store, pack_out, store.get_raw)
        except StoredEntryError as error:
            raise BundleError(str(error)) from error

    written = _write_atomically(out, header, write_pack_of_everything, durable)
    return BundleInfo(
        commit_count=counts.commits,
        object_count=counts.objects,
        size=written.size,
        sha256=written.sha256.hexdigest(),
        prerequisites=[],
        head=head.decode("ascii"),
    )


@dataclass(frozen=True, slots=True)
class _SentCommit:
    id: bytes
    tree: bytes
    parents: list[bytes]
    raw: bytes


def _commits_to_send(store, head: bytes, excluded: list[bytes]) -> list[_SentCommit]:
    """The commits reachable from head and not from `excluded`, parents first.

    With nothing excluded (a first sync) that is all of history, read from each commit's tree and
    parent lines: dulwich's Walker builds a whole Commit of each, twice the time.
    """
    if excluded:
        walk = Walker(store, [head], exclude=excluded, order=ORDER_TOPO, reverse=True)
        return [_SentCommit(c.id, c.tree, c.parents, c.as_raw_string()) for c in (entry.commit for entry in walk)]
    read: dict[bytes, _SentCommit] = {}
    pending = [head]
    while pending:
        commit_id = pending.pop()
        if commit_id in read:
            continue
        type_num, raw = store.get_raw(commit_id)
        links = commit_links(raw) if type_num == Commit.type_num else None
        if links is None:
            commit = store[commit_id]
            links = commit.tree, commit.parents
        read[commit_id] = _SentCommit(commit_id, *links, raw)
        pending.extend(links[1])
    return [read[commit_id] for commit_id in _parents_first({c.id: c.parents for c in read.values()})]


def _bundle_header(store, prerequisites: list[bytes], head: bytes) -> bytes:
    header = bytearray(_HEADER_V2)
    for commit_id in prerequisites:
        header += b"-" + commit_id + b" " + _subject(store[commit_id]) + b"\n"
    return bytes(header + head + b" " + MAIN_REF + b"\n" + head + b" HEAD\n\n")


def _write_atomically(
    out: Path, header: bytes, write_pack_to: Callable[[BinaryIO], object], durable: bool
) -> "_HashingWriter":
    """Header and pack (`write_pack_to(file)`) into a temporary file beside `out`, fsynced if `durable`,
    then renamed to `out`."""
    try:
        fd, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as error:
        raise BundleError(f"cannot write a bundle in {out.parent}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as raw_file:
            hashing = _HashingWriter(raw_file)
            hashing.write(header)
            write_pack_to(hashing)
            raw_file.flush()
            if durable:
                os.fsync(raw_file.fileno())
        os.replace(temporary, out)
        if durable:
            fsync_directory(out.parent)
    except BaseException as error:
        with suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise BundleError(f"cannot write the bundle {out}: {error.strerror}") from error
        raise
    return hashing


def _resolve_revision(repo: Repo, revision: str) -> bytes:
    try:
        return parse_commit(repo, revision).id
    except AmbiguousShortId as error:
        raise BundleError(f"revision {revision!r} is ambiguous in this folder: give more of the commit id") from error
    except (KeyError, ValueError) as error:
        raise BundleError(
            f"unknown revision {revision!r}: give a commit id (or an unambiguous prefix) of this folder"
        ) from error


def _subject(commit: Commit) -> bytes:
    return commit.message.split(b"\n", 1)[0].replace(b"\r", b"")


def _plan_objects(
    store, commits: list[_SentCommit], boundary: list[bytes], recent: "_RecentContents"
) -> list[_PlannedObject]:
    """Trees and blobs the receiver lacks, parents' first, each with its same-path base candidate.

    An entry equal to what some parent has at its path is already with the receiver or earlier in the
    pack (parents come first), so only entries that differ from every parent are sent; this is what
    keeps a bundle of per-file commits proportional to the changes, not to the folder. Every other
    entry is looked up among everything the boundary commits reach, so a rename, a revert to an
    earlier version or a swap of two files' contents sends nothing the receiver has. That is also
    what keeps deltas acyclic: an object the receiver has is the base of REF_DELTAs, and a copy of it
    in the pack, deltified against one of them, would close a loop (git refuses such a pack, dulwich
    hits DeltaCycle reading it).
    """
    if not commits:
        return []
    planned: list[_PlannedObject] = []
    seen: set[bytes] = set()
    receiver_has = _reachable_from_trees(store, [store[commit_id].tree for commit_id in boundary])

    def read_entries(tree_id: bytes) -> tuple[set[tuple[bytes, int, bytes]], dict[bytes, tuple[bytes, int, bytes]]]:
        """The tree's entries as a set, and by name."""
        raw = recent.get(tree_id)
        if raw is None:
            raw = store.get_raw(tree_id)[1]
            recent.put(tree_id, raw)
        entries = parse_tree(raw, SHA1.oid_length)
        return set(entries), dict(zip(map(itemgetter(0), entries), entries))

    # Each commit's trees are the next commit's parent trees: parse them once.
    entries_of = lru_cache(maxsize=_PARSED_TREES_KEPT)(read_entries)
    no_tree: tuple[set, dict] = (set(), {})

    def visit(tree_id: bytes, parent_tree_ids: list[bytes | None], base: bytes | None) -> None:
        if tree_id in seen:
            return
        seen.add(tree_id)
        planned.append(_PlannedObject(tree_id, Tree.type_num, base))
        entries, _ = entries_of(tree_id)
        parents = [entries_of(parent_id) if parent_id is not None else no_tree for parent_id in parent_tree_ids]
        # Set difference runs in C: a per-file commit rewrites trees of thousands of entries to change one.
        changed = sorted(entries.difference(*map(itemgetter(0), parents)))
        by_name = list(map(itemgetter(1), parents))
        for name, mode, sha in changed:
            if S_ISGITLINK(mode) or sha in receiver_has:
                continue  # a submodule commit is not ours to send; the receiver's objects need no sending
            at_path = [entries_by_name.get(name) for entries_by_name in by_name]
            if any(entry is not None and entry[2] == sha for entry in at_path):
                continue  # only the mode changed
            is_tree = stat.S_ISDIR(mode)
            same_kind = [
                entry[2] if entry is not None and stat.S_ISDIR(entry[1]) == is_tree else None for entry in at_path
            ]
            base = next((candidate for candidate in same_kind if candidate is not None), None)
            if is_tree:
                visit(sha, same_kind, base)
            elif sha not in seen:
                seen.add(sha)
                planned.append(_PlannedObject(sha, Blob.type_num, base))

    tree_of = {commit.id: commit.tree for commit in commits}
    for commit in commits:
        parent_trees = [tree_of.get(parent) or store[parent].tree for parent in commit.parents]
        if commit.tree not in parent_trees and commit.tree not in receiver_has:
            visit(commit.tree, list(parent_trees), parent_trees[0] if parent_trees else None)
    return planned


def _reachable_from_trees(store, tree_ids: list[bytes]) -> set[bytes]:
    """Ids of the given trees and of every tree and blob they reach."""
    reached: set[bytes] = set()
    pending = list(tree_ids)
    while pending:
        tree_id = pending.pop()
        if tree_id in reached:
            continue
        reached.add(tree_id)
        for _name, mode, sha in _tree_entries(store, tree_id):
            if stat.S_ISDIR(mode):
                pending.append(sha)
            elif not S_ISGITLINK(mode):
                reached.add(sha)
    return reached


def _tree_entries(store, tree_id: bytes) -> list[tuple[bytes, int, bytes]]:
    """(name, mode, hex id) of each entry, parsed in C without building a Tree object."""
    return parse_tree(store.get_raw(tree_id)[1], SHA1.oid_length)


def _pack_entries(
    store, commits: list[_SentCommit], planned: list[_PlannedObject], recent: "_RecentContents"
) -> Iterator[PackEntry]:
    """Commits whole, then each planned object as a delta of its base when that is worth it.

    A base must be written earlier in the pack or be absent from it (then the receiver has it): a
    base that comes later would make write_pack refuse the pack, so that object is sent whole.
    """
    for commit in commits:
        yield PackEntry(commit.id, Commit.type_num, commit.raw)
    sent_later = {item.sha for item in planned}
    depth: dict[bytes, int] = {}
    # A base is mostly the previous version of the same path, planned a little earlier: `recent`
    # saves unpacking it again.
    for item in planned:
        sent_later.discard(item.sha)
        raw = recent.get(item.sha)
        type_num, raw = (item.type_num, raw) if raw is not None else store.get_raw(item.sha)
        entry = PackEntry(item.sha, type_num, raw)
        if item.base is not None and item.base not in sent_later and depth.get(item.base, 0) < MAX_DELTA_DEPTH:
            base_raw = recent.get(item.base) or store.get_raw(item.base)[1]
            delta = create_delta(base_raw, raw)
            # Checked before it leaves: a wrong delta would be refused by every receiver forever.
            if delta is not None and b"".join(apply_delta(base_raw, delta)) == raw:
                entry = PackEntry(item.sha, type_num, raw, item.base, delta)
                depth[item.sha] = depth.get(item.base, 0) + 1
        recent.put(item.sha, raw)
        yield entry


class _RecentContents:
    """The most recently used object contents, up to a total size."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._size = 0
        self._contents: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, sha: bytes) -> bytes | None:
        content = self._contents.get(sha)
        if content is not None:
            self._contents.move_to_end(sha)
        return content

    def put(self, sha: bytes, content: bytes) -> None:
        if sha in self._contents or len(content) > self._capacity:
            return
        self._contents[sha] = content
        self._size += len(content)
        while self._size > self._capacity:
            _, evicted = self._contents.popitem(last=False)
            self._size -= len(evicted)


class _HashingWriter:
    """A write-only file that counts and SHA-256-hashes what passes through it."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._target.write(data)


@contextmanager
def quarantined_import(folder: FolderLike, bundle_path: Path, *, consume: bool = False) -> Iterator[ImportedBundle]:
    """Import a bundle's objects into a quarantine; see the module docstring. With `consume`, the
    bundle file may be used up (its pack moved into the store): for a received bundle that goes anyway."""
    bundle_path = Path(bundle_path)
    git_dir = Path(folder.git_dir)
    main_store = folder.repo.object_store
    _remove_stale_quarantines(git_dir)
    remove_stale_leftovers(main_store.pack_dir)
    try:
        bundle_file = open(bundle_path, "rb")
    except OSError as error:
        raise BundleError(f"{bundle_path}: cannot read the bundle ({error.strerror})") from error
    with bundle_file:
        prerequisites, head = _read_header(bundle_file, bundle_path)
        with _failures_as_bundle_error(partial(_unreadable_history_message, folder.path), passed=(OSError,)):
            missing = [sha for sha in prerequisites if not _is_commit(main_store, sha)]
        if missing:
            raise MissingPrerequisites(bundle_path, [sha.decode("ascii") for sha in missing])
        quarantine = Path(tempfile.mkdtemp(dir=git_dir, prefix=QUARANTINE_PREFIX))
        try:
            objects_dir = quarantine / "objects"
            (objects_dir / "pack").mkdir(parents=True)
            # Read with pread and a cache of delta bases: validation walks every tree version of the history.
            store = PreadObjectStore(str(objects_dir), alternates=[str(git_dir / "objects")])
            try:
                # Disk errors stay OSErrors: they say nothing about the bundle.
                with _failures_as_bundle_error(partial(_corrupt_pack_message, bundle_path), passed=(OSError,)):
                    received, links = _receive_pack(store, bundle_file, bundle_path, main_store, consume)
                    new_commits = _verify_reachable(received, links, main_store, head, bundle_path)
                new_trees = [links.commits[commit_id][0] for commit_id in new_commits]
                yield ImportedBundle(head, prerequisites, store, new_commits, new_trees)
            finally:
                for alternate in store.alternates:
                    alternate.close()
                store.close()
            if new_commits:
                _install_quarantined_packs(objects_dir / "pack", main_store)
        finally:
            shutil.rmtree(quarantine, ignore_errors=True)


def _remove_stale_quarantines(git_dir: Path) -> None:
    for stale in git_dir.glob(QUARANTINE_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _read_header(bundle_file: BinaryIO, bundle_path: Path) -> tuple[list[bytes], bytes]:
    """Prerequisite commit ids and the head commit id, leaving the file at the pack's first byte."""
    first = bundle_file.readline(_MAX_HEADER_LINE)
    if first not in (_HEADER_V2, _HEADER_V3):
        raise BundleError(f"{bundle_path}: not a git bundle this version reads (expected a v2 or v3 git bundle)")
    prerequisites: list[bytes] = []
    refs: dict[bytes, bytes] = {}
    while True:
        line = bundle_file.readline(_MAX_HEADER_LINE)
        if not line.endswith(b"\n"):
            raise BundleError(f"{bundle_path}: the bundle header is truncated or malformed")
        line = line[:-1]
        if not line:
            break
        if line.startswith(b"@"):
            if first != _HEADER_V3 or line not in (b"@object-format=sha1",):
                raise BundleError(f"{bundle_path}: unsupported bundle capability {line[1:].decode(errors='replace')!r}")
        elif line.startswith(b"-"):
            sha = line[1:41]
            if not valid_hexsha(sha) or line[41:42] not in (b"", b" "):
                raise BundleError(f"{bundle_path}: malformed prerequisite line in the bundle header")
            prerequisites.append(sha.lower())
        else:
            sha, _, ref = line.partition(b" ")
            if len(sha) != 40 or not valid_hexsha(sha) or not ref:
                raise BundleError(f"{bundle_path}: malformed ref line in the bundle header")
            refs[ref] = sha.lower()
    if MAIN_REF in refs:
        return prerequisites, refs[MAIN_REF]
    if b"HEAD" in refs:
        return prerequisites, refs[b"HEAD"]
    if len(refs) == 1:
        return prerequisites, next(iter(refs.values()))
    raise BundleError(f"{bundle_path}: the bundle names no refs/heads/main, no HEAD and not exactly one ref")


def _is_commit(store, sha: bytes) -> bool:
    try:
        type_num, _ = store.get_raw(sha)
    except KeyError:
        return False
    return type_num == Commit.type_num


def _receive_pack(
    store: PreadObjectStore, bundle_file: BinaryIO, bundle_path: Path, main_store, consume: bool
) -> tuple[set[bytes], ObjectLinks]:
    """Check, index and complete the bundle's pack inside the quarantine store; the ids it holds, and
    what its trees and commits name.

    One pass (pack_indexer): the checksum, every object inflated, resolved and parsed; then the thin
    deltas' outside bases from the main store appended, as git's index-pack --fix-thin does. A bundle
    to `consume` whose pack is block-aligned becomes the pack file itself (aligned_bundles); any other
    is copied.
    """
    in_place = take_pack_in_place(bundle_path, bundle_file.tell(), store.pack_dir) if consume else None
    if in_place is not None:
        bundle_file.close()  # its offsets moved with the cut; the pack file is read from its start
        temporary, mode = in_place, "r+b"
    else:
        fd, temporary = tempfile.mkstemp(dir=store.pack_dir, prefix="tmp_pack_")
        os.close(fd)
        mode = "w+b"
    with open(temporary, mode, buffering=0) as pack_file:
        read = pack_file.read if in_place is not None else bundle_file.read
        try:
            indexed = index_pack(read, pack_file, main_store.get_raw, in_place=in_place is not None)
        except TruncatedPack as error:
            raise BundleError(f"{bundle_path}: the bundle is truncated; fetch it again") from error
        except (PackIndexError, PackReadError) as error:
            raise BundleError(_corrupt_pack_message(bundle_path, str(error))) from error
        entries, checksum = indexed.entries, indexed.checksum
        if indexed.outside_bases:
            checksum, appended = extend_pack(pack_file, indexed.outside_bases, get_raw=main_store.get_raw,
                                             object_format=SHA1)
            entries = entries + appended
    entries.sort()
    ids = _ids_once_each([sha_to_hex(entry[0]) for entry in entries], bundle_path)
    name = os.path.join(store.pack_dir, "pack-" + checksum.hex())
    os.replace(temporary, name + ".pack")
    with open(name + ".idx", "wb") as index_file:
        write_pack_index_v2(index_file, entries, checksum)
    store.packs  # noqa: B018 -- the property rescans the pack directory, so lookups see the new pack
    store.know_pack(name + ".pack", {entry[0]: entry[1] for entry in entries})
    return ids, indexed.links


@contextmanager
def _failures_as_bundle_error(
    message: Callable[[str], str], passed: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Turn whatever dulwich raises on a broken pack or store into a BundleError with message(reason).

    It reports them with many exception types (DeltaCycle, UnresolvedDeltas, ChecksumMismatch,
    ApplyDeltaError, ObjectFormatException, zlib and struct errors, its own asserts...). BundleErrors
    and the `passed` types go through unchanged.
    """
    try:
        yield
    except (BundleError, *passed):
        raise
    except Exception as error:
        raise BundleError(message(_reason(error))) from error


def _reason(error: Exception) -> str:
    """The exception's type and the first line of its text, short enough for a one-line message."""
    kind = type(error).__name__
    if not type(error).__module__.startswith(("dulwich", "builtins")):
        kind = f"{type(error).__module__}.{kind}"  # zlib.error, struct.error
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{kind}: {text[:120]}" if text else kind


def _corrupt_pack_message(bundle_path: Path, reason: str) -> str:
    return f"{bundle_path}: the bundle's pack is corrupt ({reason}); fetch it again"


def _ids_once_each(ids: list[bytes], bundle_path: Path) -> set[bytes]:
    """The sorted ids of a completed pack as a set, refusing the pack if it holds one twice.

    dulwich completes a thin pack by appending every outside base its deltas used, even one the pack
    also carries. Such a pack has a REF_DELTA base that is itself a delta in the same pack, deltified
    (directly or not) against the referrer: indexing resolved the loop from the outside copy, but
    reads look the base up in the pack first and go round it (DeltaCycle), and git refuses the pack.
    """
    for first, second in zip(ids, ids[1:]):
        if first == second:
            raise BundleError(
                _corrupt_pack_message(bundle_path, f"object {first.decode()} is in it twice or in a delta loop")
            )
    return set(ids)


def _verify_reachable(
    received: set[bytes], links: ObjectLinks, main_store, head: bytes, bundle_path: Path
) -> list[bytes]:
    """The commits the bundle adds, parents first, after checking that every object they reach exists.

    `received` holds the ids in the completed quarantine pack; the indexer inflated, hashed and parsed
    each of them and noted what its trees and commits name (`links`). Every id named there is in the
    pack or in the main store, whose objects were complete when they landed: then everything the new
    commits reach exists (the new trees' place and kind are checked by validate_root_trees). The walk
    over commits stops at the main store (at commits even if the bundle carries them again: they are
    not new).
    """
    in_main_store = _membership(main_store)
    for sha in sorted(links.referenced.difference(received)):
        if not in_main_store(sha):
            raise BundleError(f"{bundle_path}: the bundle lacks object {sha.decode()}; fetch it again")
    parents_of: dict[bytes, list[bytes]] = {}
    pending, queued = [head], {head}
    while pending:
        commit_id = pending.pop()
        if in_main_store(commit_id):
            continue
        if commit_id not in links.commits:
            if commit_id in received:
                raise BundleError(f"{bundle_path}: {commit_id.decode()} should be a commit")
            raise BundleError(f"{bundle_path}: the bundle lacks commit {commit_id.decode()}")
        commit = links.commits[commit_id]
        if commit is None:
            raise BundleError(f"{bundle_path}: commit {commit_id.decode()} does not begin with its tree and parents")
        parents_of[commit_id] = commit[1]
        for parent in commit[1]:
            if parent not in queued:
                queued.add(parent)
                pending.append(parent)
    return _parents_first(parents_of)


def _membership(store: DiskObjectStore) -> Callable[[bytes], bool]:
    """Whether a hex id is in the store, its packs listed once: dulwich's `in` lists the pack directory
    again for every id (10,000 commits: half a second). Call under the folder lock (no pack lands)."""
    packs = list(store.packs)

    def contains(sha: bytes) -> bool:
        return (any(sha in pack for pack in packs) or store.contains_loose(sha)
                or any(sha in alternate for alternate in store.alternates))

    return contains


def _parents_first(parents_of: dict[bytes, list[bytes]]) -> list[bytes]:
    """The commits in an order where each comes after those of its parents that are among them."""
    ordered: list[bytes] = []
    placed: set[bytes] = set()
    for start in parents_of:
        stack = [start]
        while stack:
            commit_id = stack[-1]
            if commit_id in placed:
                stack.pop()
                continue
            waiting = [parent for parent in parents_of[commit_id] if parent in parents_of and parent not in placed]
            if waiting:
                stack.extend(waiting)
            else:
                placed.add(commit_id)
                ordered.append(commit_id)
                stack.pop()
    return ordered


def _install_quarantined_packs(quarantine_pack_dir: Path, main_store: DiskObjectStore) -> None:
    """Move the quarantine's packs into the main store; call with the quarantine store closed."""
    os.makedirs(main_store.pack_dir, exist_ok=True)
    for index_path in sorted(quarantine_pack_dir.glob("*.idx")):
        pack_path = index_path.with_suffix(".pack")
        install_pack(str(pack_path), str(index_path), main_store.pack_dir, index_path.stem)
    main_store.packs  # noqa: B018 -- the property rescans the pack directory, so lookups see the new pack

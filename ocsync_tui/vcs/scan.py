"""Finding what changed in a folder since the last commit: a walk with the stat cache, then safe reads.

The walk (`walk_folder`) lstat's every entry and compares it with the stat cache; only new, changed or
racy files become candidates. `read_candidate` then reads one candidate between two stats and refuses a
read the file changed under (a torn read is never committed: the file stays a candidate for the next
scan). Symlinks are read as links, never followed; devices, sockets and FIFOs are skipped with a warning.
A directory the walk cannot list makes its tracked files unknown, never deleted.
"""

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ocsync_tui.vcs.checkout import is_temp_name
from ocsync_tui.vcs.ignore import IgnoreRules
from ocsync_tui.vcs.paths import (
    EXECUTABLE_FILE_MODE,
    FOLDER_MARKER,
    REGULAR_FILE_MODE,
    SYMLINK_MODE,
    UnsafePathError,
    validate_tree_path,
)
from ocsync_tui.vcs.statcache import StatCache, rows_blob, stat_bytes

_MARKER = os.fsencode(FOLDER_MARKER)
_HASHED_PIECE = 1 << 20
_GIT_DIR_NAMES = frozenset({b".git", b"git~1"})


@dataclass(frozen=True)
class Candidate:
    """A file or symlink whose content must be read: untracked, changed stat, or racy."""

    relpath: bytes
    git_mode: int


@dataclass
class WalkResult:
    candidates: list[Candidate] = field(default_factory=list)
    missing: list[bytes] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ReadFile:
    """A stable read: the content and the stat bytes to cache for it."""

    git_mode: int
    data: bytes
    stat: bytes


@dataclass(frozen=True)
class HashedFile:
    """A stable read that kept only the content's binary blob id, and the stat bytes to cache for it."""

    git_mode: int
    blob: bytes
    stat: bytes


def blob_hasher(size: int):
    """A SHA-1 primed with git's header for a blob of `size` bytes: feed it the content."""
    return hashlib.sha1(b"blob %d\0" % size)


def git_mode_of(st_mode: int) -> int | None:
    """The git mode a file of this st_mode is stored with, or None for what we do not store."""
    if stat.S_ISREG(st_mode):
        return EXECUTABLE_FILE_MODE if st_mode & stat.S_IXUSR else REGULAR_FILE_MODE
    if stat.S_ISLNK(st_mode):
        return SYMLINK_MODE
    return None


def shown(relpath: bytes) -> str:
    return os.fsdecode(relpath)


_NO_ROWS = (rows_blob([]), 0, 0)
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_U32 = 0xFFFFFFFF


class _Walk:
    def __init__(self, root: bytes, cache: StatCache, rules: IgnoreRules) -> None:
        self.root = root
        self.cache = cache
        self.rules = rules
        self.result = WalkResult()
        self.visited: set[bytes] = set()
        self.unknown_dirs: list[bytes] = []
        self._tracked_dirs: set[bytes] | None = None

    def tracked_dirs(self) -> set[bytes]:
        """Every directory with a tracked file somewhere below it."""
        if self._tracked_dirs is None:
            self._tracked_dirs = set()
            for directory in self.cache.directory_rows:
                while directory and directory not in self._tracked_dirs:
                    self._tracked_dirs.add(directory)
                    directory = directory.rpartition(b"/")[0]
        return self._tracked_dirs

    def skip(self, relpath: bytes, reason: str) -> None:
        self.result.skipped.append((shown(relpath), reason))

    def walk_directory(self, top: bytes) -> None:
        """Visit every entry below directory `top` (b"" for the root).

        The hot loop of a no-change scan: one lstat per file, and per directory one comparison of its
        sorted (name, *quick key) rows with the cached ones. Only a directory whose rows differ, or whose
        newest file is racy, is compared file by file."""
        directory_rows = self.cache.directory_rows
        written_ns = self.cache.written_ns
        stack = [top]
        while stack:
            directory = stack.pop()
            self.visited.add(directory)
            prefix = directory + b"/" if directory else b""
            try:
                # Listed through a descriptor, so each lstat resolves one name, not the whole path; and
                # a directory swapped for a symlink since its parent was listed is not followed.
                fd = os.open(self.root + b"/" + directory if directory else self.root, _DIRECTORY_FLAGS)
            except OSError as error:
                self.directory_unreadable(directory, error)
                continue
            try:
                with os.scandir(fd) as listing:
                    entries = list(listing)
                subdirectories = []
                rows = []
                append = rows.append
                u32 = _U32
                try:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            subdirectories.append(entry.name)
                            continue
                        st = entry.stat(follow_symlinks=False)  # kept in the entry for compare_entries
                        append((entry.name, st.st_mtime_ns, st.st_ctime_ns, st.st_size & u32, st.st_ino & u32))
                except FileNotFoundError:
                    rows = None  # gone mid-scan: compare_entries says which
                cached_rows, newest_ns, _ = directory_rows.get(directory, _NO_ROWS)
                if rows is not None and newest_ns < written_ns and rows_blob(rows) == cached_rows:
                    for name in map(os.fsencode, subdirectories):
                        if self.wants_directory(prefix + name, name, directory):
                            stack.append(prefix + name)
                else:
                    stack.extend(self.compare_entries(directory, prefix, entries))
            except OSError as error:
                self.directory_unreadable(directory, error)
            finally:
                os.close(fd)

    def compare_entries(self, directory: bytes, prefix: bytes, entries: list[os.DirEntry[str]]) -> list[bytes]:
        """Compare each entry of a directory with the stat cache; return the subdirectories to walk."""
        known = self.cache.tracked_in(directory)
        written_ns = self.cache.written_ns
        subdirectories = []
        found = []
        for entry in entries:
            name = os.fsencode(entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if self.wants_directory(prefix + name, name, directory):
                        subdirectories.append(prefix + name)
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                if name in known:
                    found.append(name)  # gone mid-scan: the next scan decides, not this one
                self.skip(prefix + name, "vanished during the scan")
                continue
            key = known.get(name)
            if key is None:
                self.visit_untracked(prefix + name, name, directory, st)
                continue
            found.append(name)
            if _unchanged(key, st, written_ns):
                continue
            self.visit_tracked(prefix + name, st)
        if len(found) != len(known):
            present = set(found)
            self.result.missing.extend(prefix + name for name in known if name not in present)
        return subdirectories

    def wants_directory(self, relpath: bytes, name: bytes, parent: bytes) -> bool:
        if name.lower() in _GIT_DIR_NAMES:
            if parent:
                self.skip(relpath, "git metadata of a nested repository is not synced")
            return False
        if not parent and is_temp_name(name):
            return False
        if self.rules.active and self.rules.prunes_directory(relpath) and relpath not in self.tracked_dirs():
            return False
        return True

    def visit_tracked(self, relpath: bytes, st: os.stat_result) -> None:
        git_mode = git_mode_of(st.st_mode)
        if git_mode is None:
            self.skip(relpath, "not a regular file or symbolic link (tracked; left as it was)")
        else:
            self.result.candidates.append(Candidate(relpath, git_mode))

    def visit_untracked(self, relpath: bytes, name: bytes, parent: bytes, st: os.stat_result) -> None:
        if is_temp_name(name) or (not parent and name == _MARKER):
            return
        if self.rules.active and self.rules.ignores_file(relpath):
            return
        git_mode = git_mode_of(st.st_mode)
        if git_mode is None:
            self.skip(relpath, "not a regular file or symbolic link")
            return
        try:
            validate_tree_path(relpath, git_mode)
        except UnsafePathError as error:
            self.skip(relpath, str(error))
            return
        self.result.candidates.append(Candidate(relpath, git_mode))

    def visit_path(self, relpath: bytes) -> None:
        """Visit one path given by a caller: a file, a directory, or something now missing."""
        parent, _, name = relpath.rpartition(b"/")
        parents = parent.split(b"/") if parent else []
        for depth in range(1, len(parents) + 1):
            try:
                mode = os.lstat(self.root + b"/" + b"/".join(parents[:depth])).st_mode
            except FileNotFoundError:
                mode = None
            except OSError as error:
                self.directory_unreadable(b"/".join(parents[:depth]), error)
                return
            if mode is None or not stat.S_ISDIR(mode):
                self.missing_file(parent, name)
                return
        try:
            st = os.lstat(self.root + b"/" + relpath)
        except FileNotFoundError:
            self.missing_file(parent, name)
            return
        except OSError as error:
            self.directory_unreadable(relpath, error)
            return
        if stat.S_ISDIR(st.st_mode):
            self.missing_file(parent, name)  # a tracked file may have become this directory
            if self.wants_directory(relpath, name, parent):
                self.walk_directory(relpath)
        elif name in self.cache.tracked_in(parent):
            # A path named by the watcher (or an apply) that the stat cache shows unchanged and not
            # racy is as a full scan would find it: an apply's own writes are not read back again.
            if not _unchanged(self.cache.tracked_in(parent)[name], st, self.cache.written_ns):
                self.visit_tracked(relpath, st)
        else:
            self.visit_untracked(relpath, name, parent, st)

    def missing_file(self, parent: bytes, name: bytes) -> None:
        if name in self.cache.tracked_in(parent):
            self.result.missing.append(parent + b"/" + name if parent else name)

    def directory_unreadable(self, directory: bytes, error: OSError) -> None:
        self.unknown_dirs.append(directory)
        reason = "vanished during the scan" if error.errno == errno.ENOENT else f"cannot be read ({error.strerror})"
        self.skip(directory or b".", reason)

    def missing_below_unvisited(self, scope: list[bytes] | None) -> None:
        """Tracked files in directories the walk never entered (gone, or now a file), within `scope`."""
        unknown = tuple(directory + b"/" for directory in self.unknown_dirs if directory)
        if b"" in self.unknown_dirs:
            return
        within = None if scope is None else tuple(path + b"/" for path in scope)
        for directory in self.cache.directory_rows:
            if directory in self.visited or directory in self.unknown_dirs:
                continue
            if unknown and (directory + b"/").startswith(unknown):
                continue
            if within is not None and directory not in scope and not directory.startswith(within):
                continue
            known = self.cache.tracked_in(directory)
            self.result.missing.extend(directory + b"/" + name if directory else name for name in known)


def _unchanged(key: tuple[int, int, int, int], st: os.stat_result, written_ns: int) -> bool:
    """The file is as the stat cache recorded it: same quick key, and modified before the cache was
    written (an edit in the same timestamp tick as the write would not show in the key: racy)."""
    return key == (st.st_mtime_ns, st.st_ctime_ns, st.st_size & _U32, st.st_ino & _U32) and st.st_mtime_ns < written_ns


def walk_folder(
    root: str | os.PathLike[str], cache: StatCache, rules: IgnoreRules, paths: list[bytes] | None = None
) -> WalkResult:
    """Compare the folder (or only `paths`, relative, with their subtrees) with the stat cache."""
    walk = _Walk(os.fsencode(root), cache, rules)
    if paths is None:
        walk.walk_directory(b"")
    else:
        for relpath in paths:
            walk.visit_path(relpath)
    walk.missing_below_unvisited(paths)
    walk.result.missing = sorted(set(walk.result.missing))
    return walk.result


def read_candidate(root: str | os.PathLike[str], candidate: Candidate) -> ReadFile | str:
    """Read a candidate between two stats; return the read, or why it was skipped this time."""
    path = os.fsencode(root) + b"/" + candidate.relpath
    try:
        if candidate.git_mode == SYMLINK_MODE:
            return _read_symlink(path)
        return _read_regular(path)
    except OSError as error:
        return _why_not_read(error)


def _why_not_read(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "vanished during the scan"
    if error.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
        return "changed while being read; it will be committed once it settles"
    return f"cannot be read ({error.strerror})"


def _same_version(before: os.stat_result, after: os.stat_result) -> bool:
    return (
        before.st_ino == after.st_ino
        and before.st_size == after.st_size
        and before.st_mtime_ns == after.st_mtime_ns
        and before.st_ctime_ns == after.st_ctime_ns
        and before.st_mode == after.st_mode
    )


_BEING_WRITTEN = "is being written (it changed while it was read); it will be committed once it settles"


def _read_regular(path: bytes) -> ReadFile | str:
    chunks: list[bytes] = []
    read = _stable_read(path, chunks.append, piece_limit=None)
    if isinstance(read, str):
        return read
    git_mode, before = read
    data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    return ReadFile(git_mode, data, stat_bytes(before, git_mode))


def _stable_read(
    path: bytes, consume: Callable[[bytes], object], piece_limit: int | None
) -> tuple[int, os.stat_result] | str:
    """Feed the regular file's content to `consume` between two stats (in pieces of at most
    `piece_limit` bytes; None: the whole file in one read): its git mode and first stat, or why the read
    does not count."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        git_mode = git_mode_of(before.st_mode)
        if git_mode is None or git_mode == SYMLINK_MODE:
            return "changed while being read; it will be committed once it settles"
        size = 0
        remaining = before.st_size
        while True:
            wanted = max(remaining + 1, 65536)
            chunk = os.read(fd, wanted if piece_limit is None else min(wanted, piece_limit))
            if not chunk:
                break
            consume(chunk)
            size += len(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if size != before.st_size or not _same_version(before, after):
        return _BEING_WRITTEN
    # A file renamed over this one meanwhile is not a torn read: what we read is whole, and the stat we
    # record names its inode, so the next scan reads the new one.
    return git_mode, before


def hash_candidate(root: str | os.PathLike[str], candidate: Candidate) -> HashedFile | str:
    """Like read_candidate, but only the content's blob id is kept: the file is read a piece at a time."""
    path = os.fsencode(root) + b"/" + candidate.relpath
    try:
        if candidate.git_mode == SYMLINK_MODE:
            read = _read_symlink(path)
            if isinstance(read, str):
                return read
            hasher = blob_hasher(len(read.data))
            hasher.update(read.data)
            return HashedFile(read.git_mode, hasher.digest(), read.stat)
        size = os.lstat(path).st_size
        hasher = blob_hasher(size)
        stable = _stable_read(path, hasher.update, piece_limit=_HASHED_PIECE)
    except OSError as error:
        return _why_not_read(error)
    if isinstance(stable, str):
        return stable
    git_mode, before = stable
    if before.st_size != size:
        return _BEING_WRITTEN
    return HashedFile(git_mode, hasher.digest(), stat_bytes(before, git_mode))


def _read_symlink(path: bytes) -> ReadFile | str:
    before = os.lstat(path)
    if not stat.S_ISLNK(before.st_mode):
        return "changed while being read; it will be committed once it settles"
    target = os.readlink(path)
    after = os.lstat(path)
    if not _same_version(before, after) or len(target) != before.st_size:
        return _BEING_WRITTEN
    return ReadFile(SYMLINK_MODE, target, stat_bytes(before, SYMLINK_MODE))

"""Finding what changed in a folder since the last commit: a walk with the stat cache, then safe reads.

The walk (`walk_folder`) lstat's every entry and compares it with the stat cache; only new, changed or
racy files become candidates. `read_candidate` then reads one candidate between two stats and refuses a
read the file changed under (a torn read is never committed: the file stays a candidate for the next
scan). Symlinks are read as links, never followed; devices, sockets and FIFOs are skipped with a warning.
A directory the walk cannot list makes its tracked files unknown, never deleted.
"""

import errno
import os
import stat
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
from ocsync_tui.vcs.statcache import StatCache, stat_bytes

_MARKER = os.fsencode(FOLDER_MARKER)
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


def git_mode_of(st_mode: int) -> int | None:
    """The git mode a file of this st_mode is stored with, or None for what we do not store."""
    if stat.S_ISREG(st_mode):
        return EXECUTABLE_FILE_MODE if st_mode & stat.S_IXUSR else REGULAR_FILE_MODE
    if stat.S_ISLNK(st_mode):
        return SYMLINK_MODE
    return None


def shown(relpath: bytes) -> str:
    return os.fsdecode(relpath)


class _Walk:
    def __init__(self, root: bytes, cache: StatCache, rules: IgnoreRules) -> None:
        self.root = root
        self.cache = cache
        self.rules = rules
        self.result = WalkResult()
        self.present: set[bytes] = set()
        self.unknown_dirs: list[bytes] = []
        self._tracked_dirs: set[bytes] | None = None

    def tracked_dirs(self) -> set[bytes]:
        if self._tracked_dirs is None:
            self._tracked_dirs = set()
            for path in self.cache.entries:
                while b"/" in path:
                    path = path.rsplit(b"/", 1)[0]
                    self._tracked_dirs.add(path)
        return self._tracked_dirs

    def skip(self, relpath: bytes, reason: str) -> None:
        self.result.skipped.append((shown(relpath), reason))

    def walk_directory(self, top: bytes) -> None:
        """Visit every entry below directory `top` (b"" for the root)."""
        entries = self.cache.entries
        written_ns = self.cache.written_ns
        candidates = self.result.candidates
        present = self.present
        stack = [top]
        while stack:
            directory = stack.pop()
            prefix = directory + b"/" if directory else b""
            try:
                listing = os.scandir(self.root + b"/" + directory if directory else self.root)
            except OSError as error:
                self.directory_unreadable(directory, error)
                continue
            with listing:
                for entry in listing:
                    name = entry.name
                    relpath = prefix + name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if self.wants_directory(relpath, name, directory):
                                stack.append(relpath)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        if relpath in entries:
                            present.add(relpath)  # gone mid-scan: decided by the next scan, not this one
                        self.skip(relpath, "vanished during the scan")
                        continue
                    cached = entries.get(relpath)
                    if cached is not None:
                        present.add(relpath)
                        git_mode = git_mode_of(st.st_mode)
                        if git_mode is None:
                            self.skip(relpath, "not a regular file or symbolic link (tracked; left as it was)")
                        elif cached[0] != stat_bytes(st, git_mode) or st.st_mtime_ns >= written_ns:
                            candidates.append(Candidate(relpath, git_mode))
                        continue
                    self.visit_untracked(relpath, name, directory, st)

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
        parents = relpath.split(b"/")[:-1]
        for depth in range(1, len(parents) + 1):
            try:
                mode = os.lstat(self.root + b"/" + b"/".join(parents[:depth])).st_mode
            except FileNotFoundError:
                return  # missing: deletions of what was tracked there follow from `present`
            except OSError as error:
                self.directory_unreadable(b"/".join(parents[:depth]), error)
                return
            if not stat.S_ISDIR(mode):
                return
        try:
            st = os.lstat(self.root + b"/" + relpath)
        except FileNotFoundError:
            return
        except OSError as error:
            self.directory_unreadable(relpath, error)
            return
        name = relpath.rsplit(b"/", 1)[-1]
        if stat.S_ISDIR(st.st_mode):
            if self.wants_directory(relpath, name, b"/".join(parents)):
                self.walk_directory(relpath)
            return
        cached = self.cache.entries.get(relpath)
        if cached is None:
            self.visit_untracked(relpath, name, b"/".join(parents), st)
            return
        self.present.add(relpath)
        git_mode = git_mode_of(st.st_mode)
        if git_mode is None:
            self.skip(relpath, "not a regular file or symbolic link (tracked; left as it was)")
        else:
            self.result.candidates.append(Candidate(relpath, git_mode))

    def directory_unreadable(self, directory: bytes, error: OSError) -> None:
        self.unknown_dirs.append(directory)
        reason = "vanished during the scan" if error.errno == errno.ENOENT else f"cannot be read ({error.strerror})"
        self.skip(directory or b".", reason)

    def missing(self, scope: list[bytes] | None) -> list[bytes]:
        """Tracked paths the walk did not find, within `scope` (None: the whole folder)."""
        unknown = tuple(d + b"/" for d in self.unknown_dirs if d)
        whole_folder_unknown = b"" in self.unknown_dirs
        prefixes = None if scope is None else tuple(p + b"/" for p in scope)
        found = []
        for path in self.cache.entries:
            if path in self.present:
                continue
            if prefixes is not None and path not in scope and not path.startswith(prefixes):
                continue
            if whole_folder_unknown or path in self.unknown_dirs or (unknown and path.startswith(unknown)):
                continue
            found.append(path)
        return found


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
    if paths is None and len(walk.present) == len(cache.entries):
        walk.result.missing = []
    else:
        walk.result.missing = walk.missing(paths)
    return walk.result


def read_candidate(root: str | os.PathLike[str], candidate: Candidate) -> ReadFile | str:
    """Read a candidate between two stats; return the read, or why it was skipped this time."""
    path = os.fsencode(root) + b"/" + candidate.relpath
    try:
        if candidate.git_mode == SYMLINK_MODE:
            return _read_symlink(path)
        return _read_regular(path)
    except FileNotFoundError:
        return "vanished during the scan"
    except OSError as error:
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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        git_mode = git_mode_of(before.st_mode)
        if git_mode is None or git_mode == SYMLINK_MODE:
            return "changed while being read; it will be committed once it settles"
        chunks = []
        remaining = before.st_size
        while True:
            chunk = os.read(fd, max(remaining + 1, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    if len(data) != before.st_size or not _same_version(before, after):
        return _BEING_WRITTEN
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return "vanished during the scan"
    if not _same_version(before, now):
        return _BEING_WRITTEN  # replaced by rename while we read the old one
    return ReadFile(git_mode, data, stat_bytes(before, git_mode))


def _read_symlink(path: bytes) -> ReadFile | str:
    before = os.lstat(path)
    if not stat.S_ISLNK(before.st_mode):
        return "changed while being read; it will be committed once it settles"
    target = os.readlink(path)
    after = os.lstat(path)
    if not _same_version(before, after) or len(target) != before.st_size:
        return _BEING_WRITTEN
    return ReadFile(SYMLINK_MODE, target, stat_bytes(before, SYMLINK_MODE))

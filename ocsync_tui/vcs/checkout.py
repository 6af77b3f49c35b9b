"""Writing tree content into a folder without ever following a symlink or leaving the folder.

Every directory is opened relative to its parent with O_NOFOLLOW (openat style), starting from a
descriptor of the folder root, so a symlinked directory — including one written a moment ago from the
same tree — is never entered. Files are replaced by a temp file in the same directory, made durable,
then renamed. Many files are written as a batch: every temp file first, one `syncfs` (an fsync per
file costs ~2 ms each, most of an initial sync), then each rename, after checking once more that the
file on disk is still what it was when the write was decided.

A file is only replaced or deleted when what is on disk is exactly what the old tree recorded (or
nothing): anything else is the user's, and stays where it is for the committer to pick up; the new
version then goes to a conflict copy beside it.

A tree path that cannot be placed on this disk — its name collides with another one on a disk that
folds case or normalises Unicode, or a directory or a non-directory is in its way — is written under a
conflict-copy name instead (candidates from the caller); the caller commits that as a local add and delete,
so every peer converges on the same tree and nothing is lost.
"""

import ctypes
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Blob, object_header

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.disk_naming import CASE_SENSITIVE, DiskNaming
from ocsync_tui.vcs.pack import object_id
from ocsync_tui.vcs.pack_reader import object_chunks

FILE_MODE = 0o100644
EXECUTABLE_MODE = 0o100755
SYMLINK_MODE = 0o120000

_TEMP_PREFIX = b".ocsync-tmp-"
_READ_CHUNK = 1 << 20
# Stands for the content of a file that changed while it was read: equal to no tree's blob.
_BEING_WRITTEN = b"being-written"


def _sync_filesystem(fd: int) -> bool:
    """syncfs(2) on the filesystem holding `fd`; False where the C library does not offer it."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    if syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


@dataclass(frozen=True)
class _Staged:
    """A temp file written beside `path`, to be renamed over it if the disk still holds `seen` there."""

    path: bytes
    seen: "DiskState"


class CheckoutError(OcsyncError):
    """The folder itself cannot be written (missing, unreadable): nothing a conflict copy can solve."""


@dataclass(frozen=True)
class TreeFile:
    """One tree entry as the folder holds it: its git mode and blob id (hex)."""

    mode: int
    sha: bytes


@dataclass(frozen=True)
class _Blocked:
    """Something at a path we may not replace: a directory, a device, or a path through a non-directory."""


BLOCKED = _Blocked()
DiskState = TreeFile | _Blocked | None


@dataclass
class CheckoutResult:
    """What a checkout did; `settled` are the paths whose disk content now equals the new tree."""

    written: list[bytes] = field(default_factory=list)
    deleted: list[bytes] = field(default_factory=list)
    settled: list[bytes] = field(default_factory=list)
    kept_local: list[bytes] = field(default_factory=list)
    relocated: dict[bytes, bytes] = field(default_factory=dict)


def temp_name(name: bytes) -> bytes:
    """The temp file a write of `name` goes through; fixed per name, so a crashed write can be cleaned up."""
    return _TEMP_PREFIX + hashlib.sha1(name).hexdigest()[:16].encode("ascii")


def is_temp_name(name: bytes) -> bool:
    return name.startswith(_TEMP_PREFIX)


def flatten_tree(store: BaseObjectStore, tree_id: bytes | None) -> dict[bytes, TreeFile]:
    if tree_id is None:
        return {}
    return {entry.path: TreeFile(entry.mode, entry.sha) for entry in store.iter_tree_contents(tree_id)}


def _split(relpath: bytes) -> tuple[list[bytes], bytes]:
    *parents, name = relpath.split(b"/")
    return parents, name


def _is_empty_directory(name: bytes, dir_fd: int) -> bool:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        return not os.listdir(fd)
    finally:
        os.close(fd)


def _is_directory(name: bytes, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


class FolderFiles:
    """Openat-style access to the files of one folder; every path is relative to the folder root."""

    def __init__(self, root: Path) -> None:
        try:
            self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            raise CheckoutError(f"cannot open folder {root}: {error.strerror}") from None
        self._name_max = os.fpathconf(self._root_fd, "PC_NAME_MAX")
        self._open_dirs: list[tuple[bytes, int]] = []
        self._touched_dirs: set[tuple[bytes, ...]] = set()
        self._staged: list[_Staged] = []

    def close(self) -> None:
        self._drop_open_dirs(0)
        os.close(self._root_fd)

    def __enter__(self) -> "FolderFiles":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drop_open_dirs(self, keep: int) -> None:
        while len(self._open_dirs) > keep:
            os.close(self._open_dirs.pop()[1])

    def _directory(self, parents: list[bytes], *, create: bool) -> int | None:
        """A descriptor of the directory `parents` names, or None if a component is missing (and not
        created) or is not a real directory. Descriptors along the last path used are kept open, as
        sorted paths mostly share their parents."""
        shared = 0
        while shared < min(len(parents), len(self._open_dirs)) and self._open_dirs[shared][0] == parents[shared]:
            shared += 1
        if shared == len(parents):
            # A prefix of the open chain (blocked_prefix walks up before each write): keep the deeper ones.
            return self._open_dirs[shared - 1][1] if shared else self._root_fd
        self._drop_open_dirs(shared)
        for component in parents[shared:]:
            parent_fd = self._open_dirs[-1][1] if self._open_dirs else self._root_fd
            try:
                fd = os.open(component, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(component, 0o777, dir_fd=parent_fd)
                self._touched_dirs.add(tuple(name for name, _ in self._open_dirs))
                fd = os.open(component, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG):
                    return None
                raise
            self._open_dirs.append((component, fd))
        return self._open_dirs[-1][1] if self._open_dirs else self._root_fd

    def blocked_prefix(self, relpath: bytes) -> int | None:
        """How many leading components of `relpath`'s parents are real directories, if one is not
        (a symlink, a file, a device, a name too long for this disk); None if every parent that exists
        is a directory."""
        parents, _ = _split(relpath)
        for depth in range(len(parents)):
            if len(parents[depth]) > self._name_max:
                return depth
            fd = self._directory(parents[:depth], create=False)
            if fd is None:
                return None
            try:
                mode = os.stat(parents[depth], dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                return None
            if not stat.S_ISDIR(mode):
                return depth
        return None

    def read(self, relpath: bytes) -> DiskState:
        """What is at `relpath`: None (nothing), a TreeFile, or BLOCKED."""
        parents, name = _split(relpath)
        if len(name) > self._name_max:
            return BLOCKED
        dir_fd = self._directory(parents, create=False)
        if dir_fd is None:
            return None if self.blocked_prefix(relpath) is None else BLOCKED
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return TreeFile(SYMLINK_MODE, object_id(Blob.type_num, os.readlink(name, dir_fd=dir_fd)))
        if stat.S_ISDIR(info.st_mode) and _is_empty_directory(name, dir_fd):
            return None  # holds nothing of the user's; write() replaces it
        if not stat.S_ISREG(info.st_mode):
            return BLOCKED
        mode = EXECUTABLE_MODE if info.st_mode & stat.S_IXUSR else FILE_MODE
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as handle:
            expected_size = os.fstat(handle.fileno()).st_size
            hasher = hashlib.sha1(object_header(Blob.type_num, expected_size))
            size = 0
            while chunk := handle.read(_READ_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        if size != expected_size:
            return TreeFile(mode, _BEING_WRITTEN)
        return TreeFile(mode, hasher.hexdigest().encode("ascii"))

    def write(self, relpath: bytes, entry: TreeFile, content: Iterable[bytes]) -> None:
        """Replace whatever file or symlink is at `relpath` by `content` (in pieces; a symlink's target for
        SYMLINK_MODE), creating parent directories; through a temp file, fsync and rename."""
        dir_fd = self._write_temp(relpath, entry, content, durable=True)
        self._rename_into_place(relpath, dir_fd)

    def stage(self, relpath: bytes, entry: TreeFile, content: Iterable[bytes], seen: DiskState) -> None:
        """Write `content` to a temp file beside `relpath`; `finish_staged` makes it durable and puts it
        in place if the disk still holds `seen` there."""
        self._write_temp(relpath, entry, content, durable=False)
        self._staged.append(_Staged(relpath, seen))

    def finish_staged(self) -> list[bytes]:
        """Make every staged temp file durable (one syncfs), then rename each into place; return the
        paths whose file changed since the write was decided (their temp file is removed instead)."""
        staged, self._staged = self._staged, []
        if staged and not _sync_filesystem(self._root_fd):
            for item in staged:
                self._fsync_temp(item.path)
        changed = []
        for item in staged:
            parents, name = _split(item.path)
            dir_fd = self._directory(parents, create=False)
            if dir_fd is None:
                changed.append(item.path)
                continue
            # read() opens the same parents, so the open chain, and dir_fd, stay as they are.
            if self.read(item.path) != item.seen:
                _remove_if_present(temp_name(name), dir_fd)
                changed.append(item.path)
                continue
            self._rename_into_place(item.path, dir_fd)
        return changed

    def _write_temp(self, relpath: bytes, entry: TreeFile, content: Iterable[bytes], *, durable: bool) -> int:
        parents, name = _split(relpath)
        dir_fd = self._directory(parents, create=True)
        if dir_fd is None:
            raise CheckoutError(f"{os.fsdecode(relpath)}: a parent is not a directory")
        temp = temp_name(name)
        _remove_if_present(temp, dir_fd)
        if entry.mode == SYMLINK_MODE:
            os.symlink(b"".join(content), temp, dir_fd=dir_fd)
        else:
            file_mode = 0o777 if entry.mode == EXECUTABLE_MODE else 0o666
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode, dir_fd=dir_fd)
            try:
                for piece in content:
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return dir_fd

    def _fsync_temp(self, relpath: bytes) -> None:
        parents, name = _split(relpath)
        dir_fd = self._directory(parents, create=False)
        if dir_fd is None:
            return
        try:
            fd = os.open(temp_name(name), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                return  # a symlink: its target text is in the directory, which is fsynced later
            raise
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rename_into_place(self, relpath: bytes, dir_fd: int) -> None:
        parents, name = _split(relpath)
        if _is_directory(name, dir_fd):
            os.rmdir(name, dir_fd=dir_fd)
        os.rename(temp_name(name), name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self._touched_dirs.add(tuple(parents))

    def remove(self, relpath: bytes) -> None:
        """Delete the file or symlink at `relpath`, then every parent left empty (never the root)."""
        parents, name = _split(relpath)
        dir_fd = self._directory(parents, create=False)
        if dir_fd is None:
            return
        _remove_if_present(name, dir_fd)
        self._touched_dirs.add(tuple(parents))
        while parents:
            self._drop_open_dirs(0)
            parent_fd = self._directory(parents[:-1], create=False)
            if parent_fd is None:
                return
            try:
                os.rmdir(parents[-1], dir_fd=parent_fd)
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                    return
                raise
            parents = parents[:-1]
            self._touched_dirs.add(tuple(parents))

    def remove_stale_temp(self, relpath: bytes) -> None:
        """Delete the temp file an interrupted write of `relpath` may have left."""
        parents, name = _split(relpath)
        dir_fd = self._directory(parents, create=False)
        if dir_fd is not None:
            _remove_if_present(temp_name(name), dir_fd)

    def sync_touched_directories(self) -> None:
        """Make every rename, creation and deletion durable: fsync each directory they changed."""
        self._drop_open_dirs(0)
        for parents in sorted(self._touched_dirs):
            fd = self._directory(list(parents), create=False)
            if fd is not None:
                os.fsync(fd)
        self._drop_open_dirs(0)
        self._touched_dirs.clear()


def _remove_if_present(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


ConflictCopyNames = Callable[[bytes, int], Iterator[bytes]]
"""Given a tree path and the index of the component that cannot be placed, candidate disk paths."""


def collisions_on_disk(
    new_files: Mapping[bytes, TreeFile], old_files: Mapping[bytes, TreeFile], naming: DiskNaming
) -> dict[bytes, int]:
    """Tree paths this disk would store as the same file as another one, mapped to the index of the
    first component that collides. Paths kept from the old tree keep their place; among new ones the
    first in sorted order does."""
    if not naming.collides:
        return {}
    owner_of_key: dict[bytes, bytes] = {}

    def first_colliding_component(path: bytes) -> int | None:
        parts = path.split(b"/")
        for depth in range(1, len(parts) + 1):
            prefix = b"/".join(parts[:depth])
            if owner_of_key.setdefault(naming.key(prefix), prefix) != prefix:
                return depth - 1
        return None

    for path in sorted(p for p in new_files if p in old_files):
        first_colliding_component(path)
    collisions = {}
    for path in sorted(p for p in new_files if p not in old_files):
        component = first_colliding_component(path)
        if component is not None:
            collisions[path] = component
    return collisions


def _free_in_tree(candidate: bytes, new_files: Mapping[bytes, TreeFile]) -> bool:
    if candidate in new_files:
        return False
    parts = candidate.split(b"/")
    if any(b"/".join(parts[:depth]) in new_files for depth in range(1, len(parts))):
        return False
    # A tree path under the candidate would make it a directory.
    return not any(path.startswith(candidate + b"/") for path in new_files)


def checkout_changes(
    root: Path,
    store: BaseObjectStore,
    old_files: Mapping[bytes, TreeFile],
    new_files: Mapping[bytes, TreeFile],
    paths: Iterable[bytes],
    *,
    conflict_copy_names: ConflictCopyNames,
    naming: DiskNaming = CASE_SENSITIVE,
) -> CheckoutResult:
    """Bring `paths` on disk from `old_files` to `new_files`, never overwriting the user's content.

    Running it again after a crash at any point finishes the job: a path already as the new tree says
    is settled, a stale temp file is removed."""
    result = CheckoutResult()
    paths = sorted(set(paths))
    collisions = collisions_on_disk(new_files, old_files, naming)
    deletions = sorted((p for p in paths if p not in new_files), key=lambda p: -p.count(b"/"))
    with FolderFiles(root) as files:
        current = b""
        try:
            for current in paths:
                files.remove_stale_temp(current)
            for current in deletions:
                _delete(files, current, old_files.get(current), result)
            for current in (p for p in paths if p in new_files):
                blocked_at = collisions.get(current, files.blocked_prefix(current))
                on_disk = files.read(current) if blocked_at is None else BLOCKED
                if on_disk is BLOCKED:
                    moved = current.count(b"/") if blocked_at is None else blocked_at
                    _write_conflict_copy(files, store, current, moved, conflict_copy_names, new_files, result)
                elif not _write(files, store, current, new_files[current], old_files.get(current), on_disk, result):
                    _keep_local(files, store, current, conflict_copy_names, new_files, result)
            current = b""
            for current in files.finish_staged():
                # The user wrote the file while the batch was being written: theirs stays.
                result.written.remove(current)
                result.settled.remove(current)
                _keep_local(files, store, current, conflict_copy_names, new_files, result)
            current = b""
            files.sync_touched_directories()
        except OSError as error:
            where = f"{root / os.fsdecode(current)}" if current else str(root)
            raise CheckoutError(
                f"cannot update {where}: {error.strerror}; fix that and run the command again"
            ) from None
    return result


def _keep_local(
    files: FolderFiles,
    store: BaseObjectStore,
    path: bytes,
    conflict_copy_names: ConflictCopyNames,
    new_files: Mapping[bytes, TreeFile],
    result: CheckoutResult,
) -> None:
    """The user changed the file since the last commit: theirs stays, the new version becomes a
    conflict copy beside it, so neither is lost."""
    result.kept_local.append(path)
    _write_conflict_copy(files, store, path, path.count(b"/"), conflict_copy_names, new_files, result)


def _delete(files: FolderFiles, path: bytes, old: TreeFile | None, result: CheckoutResult) -> None:
    on_disk = files.read(path)
    if on_disk is None:
        result.settled.append(path)
    elif on_disk == old:
        files.remove(path)
        result.deleted.append(path)
        result.settled.append(path)
    else:
        result.kept_local.append(path)


def _write(
    files: FolderFiles,
    store: BaseObjectStore,
    path: bytes,
    wanted: TreeFile,
    old: TreeFile | None,
    on_disk: TreeFile | None,
    result: CheckoutResult,
) -> bool:
    """Put `wanted` at `path` unless the disk holds something the old tree did not record; False then."""
    if on_disk == wanted:
        result.settled.append(path)
    elif on_disk is None or on_disk == old:
        files.stage(path, wanted, object_chunks(store, wanted.sha), on_disk)
        result.written.append(path)
        result.settled.append(path)
    else:
        return False
    return True


def _write_conflict_copy(
    files: FolderFiles,
    store: BaseObjectStore,
    path: bytes,
    component: int,
    conflict_copy_names: ConflictCopyNames,
    new_files: Mapping[bytes, TreeFile],
    result: CheckoutResult,
) -> None:
    wanted = new_files[path]
    for candidate in conflict_copy_names(path, component):
        if not _free_in_tree(candidate, new_files) or files.blocked_prefix(candidate) is not None:
            continue
        on_disk = files.read(candidate)
        if on_disk == wanted:
            result.relocated[path] = candidate
            return
        if on_disk is None:
            files.write(candidate, wanted, object_chunks(store, wanted.sha))
            result.written.append(candidate)
            result.relocated[path] = candidate
            return
    raise CheckoutError(f"{os.fsdecode(path)} cannot be placed on this disk and no conflict-copy name is free")

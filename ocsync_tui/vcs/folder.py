"""A shared folder and its repository: `FOLDER/.git` on branch main, plus the folder marker.

The marker `.ocsync-folder` holds the folder's random ID and is never committed. Its ID is also kept in
the repository's config, so a folder whose marker went missing (an unmounted disk shows an empty mount
point) can still be opened and read, and the marker restored by `ocsync init`; committing deletions is
refused until it is back, so an unmounted disk never becomes "every file deleted" on every peer.
A git repository that ocsync did not create is never taken over, and ocsync folders never nest.
"""

import base64
import os
import secrets
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path

from typing import TYPE_CHECKING

from dulwich.config import ConfigFile
from dulwich.refs import DiskRefsContainer

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdentity
from ocsync_tui.vcs.checkout import temp_name
from ocsync_tui.vcs.committer import CommitReport, commit_pending
from ocsync_tui.vcs.lock import FolderLock
from ocsync_tui.vcs.pack import fsync_directory
from ocsync_tui.vcs.paths import FOLDER_MARKER

if TYPE_CHECKING:
    from dulwich.repo import Repo

MARKER_NAME = FOLDER_MARKER
BRANCH = b"refs/heads/main"
_CONFIG_SECTION = (b"ocsync",)
_CONFIG_KEY = b"folderid"
_MARKER_HEADER = "# ocsync folder marker: keep this file; ocsync stops syncing a folder without it"
_INIT_TEMP = ".ocsync-tmp-init.git"  # a checkout temp name, so scans skip a leftover of a killed init


class NotAFolderError(OcsyncError):
    pass


class ForeignRepositoryError(OcsyncError):
    pass


class NestedFolderError(OcsyncError):
    pass


class MarkerMismatchError(OcsyncError):
    pass


class FolderIdMismatchError(OcsyncError):
    pass


class HeadMovedError(OcsyncError):
    pass


def new_folder_id() -> str:
    """Random, 80 bits, shown as four groups of four base32 letters."""
    text = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def _ocsync_folder_id(git_dir: Path) -> str | None:
    """The folder ID in a repository's config, or None if ocsync did not make it."""
    try:
        config = ConfigFile.from_path(str(git_dir / "config"), expand_includes=False)
        return config.get(_CONFIG_SECTION, _CONFIG_KEY).decode("utf-8")
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return None


def _read_marker(root: Path) -> str | None:
    try:
        text = (root / MARKER_NAME).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    for line in text.splitlines():
        if line.startswith("folder-id:"):
            return line.split(":", 1)[1].strip()
    return ""


def write_marker(root: Path, folder_id: str) -> None:
    temp = root / os.fsdecode(temp_name(os.fsencode(MARKER_NAME)))
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(f"{_MARKER_HEADER}\nfolder-id: {folder_id}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, root / MARKER_NAME)
    fsync_directory(root)


class FolderRepo:
    """An open ocsync folder: `path` (absolute root), `git_dir`, `repo` (dulwich), `folder_id`."""

    def __init__(self, path: Path, folder_id: str, marker_present: bool) -> None:
        self.path = path
        self.folder_id = folder_id
        self.marker_present = marker_present
        self._repo: "Repo | None" = None
        self._refs: DiskRefsContainer | None = None

    @property
    def repo(self) -> "Repo":
        """The dulwich repository, opened on first use: a scan that finds nothing to commit never needs
        it (nor the import of dulwich.repo). Its packs are read with pread (pack_reader.PreadObjectStore)."""
        if self._repo is None:
            from dulwich.config import ConfigFile
            from dulwich.repo import Repo

            from ocsync_tui.vcs.pack_reader import PreadObjectStore

            config = ConfigFile.from_path(str(self.git_dir / "config"))
            store = PreadObjectStore.from_config(str(self.git_dir / "objects"), config)
            self._repo = Repo(str(self.path), object_store=store)
            # Close the packs at the latest at interpreter exit, while dulwich's __del__ can still run cleanly.
            weakref.finalize(self, self._repo.close)
        return self._repo

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> "FolderRepo":
        path = Path(root).resolve()
        if not path.is_dir():
            raise NotAFolderError(f"{path} is not a directory")
        if (path / ".git").exists() and not (path / ".git").is_dir():
            raise ForeignRepositoryError(f"{path / '.git'} is a git link file, not an ocsync repository")
        if not (path / ".git").is_dir():
            raise NotAFolderError(f"{path} is not an ocsync folder; make it one with `ocsync init {path}`")
        folder_id = _ocsync_folder_id(path / ".git")
        if folder_id is None:
            raise ForeignRepositoryError(
                f"{path} is a git repository that ocsync did not create; ocsync will not take it over"
            )
        marker_id = _read_marker(path)
        if marker_id is not None and marker_id != folder_id:
            raise MarkerMismatchError(
                f"{path / MARKER_NAME} names folder {marker_id or '(none)'} but the repository is folder "
                f"{folder_id}; was the marker copied from another folder? Delete it and run `ocsync init {path}`"
            )
        return cls(path, folder_id, marker_id is not None)

    def head(self) -> bytes | None:
        """The hex commit id of main, or None before the first commit."""
        if self._repo is not None:
            refs = self._repo.refs
        else:
            if self._refs is None:
                self._refs = DiskRefsContainer(self.git_dir)
            refs = self._refs
        try:
            return refs[BRANCH]
        except KeyError:
            return None

    def set_head(self, new: bytes, expected_old: bytes | None) -> None:
        """Move main to `new` if it still is `expected_old` (atomically, lock file and rename)."""
        refs = self.repo.refs
        moved = refs.add_if_new(BRANCH, new) if expected_old is None else refs.set_if_equals(BRANCH, expected_old, new)
        if not moved:
            raise HeadMovedError(
                f"main of {self.path} moved while ocsync was writing it (expected "
                f"{expected_old.decode('ascii') if expected_old else 'no commit'}); run the command again"
            )

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()


def _enclosing_folder(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if (candidate / MARKER_NAME).is_file() or (
            (candidate / ".git").is_dir() and _ocsync_folder_id(candidate / ".git") is not None
        ):
            return candidate
    return None


def _contained_folder(root: Path) -> Path | None:
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        if here != root and (
            MARKER_NAME in files or (".git" in subdirs and _ocsync_folder_id(here / ".git") is not None)
        ):
            return here
        if ".git" in subdirs:
            subdirs.remove(".git")
    return None


def _create_repository(root: Path, folder_id: str) -> None:
    """Create root/.git in one rename, so a killed init leaves either no repository or a whole one."""
    from dulwich.repo import Repo

    temp = root / _INIT_TEMP
    if temp.exists():
        shutil.rmtree(temp)
    repo = Repo.init_bare(str(temp), mkdir=True, default_branch=b"main")
    try:
        config = repo.get_config()
        config.set((b"core",), b"bare", False)
        config.set((b"core",), b"logallrefupdates", True)
        config.set(_CONFIG_SECTION, _CONFIG_KEY, folder_id.encode("utf-8"))
        config.write_to_path()
    finally:
        repo.close()
    # What ocsync never commits, so `git status` in the folder stays clean too.
    (temp / "info").mkdir(exist_ok=True)
    (temp / "info" / "exclude").write_text(f"/{MARKER_NAME}\n.ocsync-tmp-*\n")
    for directory, _, files in os.walk(temp):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(directory)
    try:
        os.rename(temp, root / ".git")
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        raise NotAFolderError(
            f"{root / '.git'} appeared while ocsync was creating it; is another `ocsync init` running?"
        ) from None
    fsync_directory(root)


def init_folder(
    root: str | os.PathLike[str],
    identity: DeviceIdentity,
    *,
    progress: Callable[[int, int], None] | None = None,
    folder_id: str | None = None,
) -> CommitReport:
    """Make `root` an ocsync folder and commit every file in it, one commit each.

    On a folder that already is one, restore a missing marker and commit what is pending. `folder_id`
    joins a folder a peer offered (its ID, not a new one); a folder that already has another ID is refused."""
    path = Path(root).absolute()
    if path.exists() and not path.is_dir():
        raise NotAFolderError(f"{path} is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    enclosing = _enclosing_folder(path.parent)
    if enclosing is not None:
        raise NestedFolderError(f"{path} is inside the ocsync folder {enclosing}; ocsync folders cannot nest")
    notes = []
    if (path / ".git").exists():
        folder = FolderRepo.open(path)
        if folder_id is not None and folder.folder_id != folder_id:
            raise FolderIdMismatchError(
                f"{path} already is the ocsync folder {folder.folder_id}, not {folder_id}; choose another path"
            )
        notes.append(f"{path} already is an ocsync folder (ID {folder.folder_id}); committed pending changes")
    else:
        contained = _contained_folder(path)
        if contained is not None:
            raise NestedFolderError(f"{path} contains the ocsync folder {contained}; ocsync folders cannot nest")
        _create_repository(path, folder_id or new_folder_id())
        folder = FolderRepo.open(path)
    try:
        if not folder.marker_present:
            write_marker(path, folder.folder_id)
            folder.marker_present = True
            if notes:
                notes.append(f"restored the missing folder marker {path / MARKER_NAME}")
        with FolderLock(folder.git_dir):
            report = commit_pending(folder, identity, progress=progress)
    finally:
        folder.close()
    report.notes[:0] = notes
    return report


def locate_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The enclosing ocsync folder of `path` and the POSIX path of the file inside it."""
    given = Path(path).absolute()
    parent = given.parent.resolve()
    root = _enclosing_folder(parent)
    if root is None:
        raise NotAFolderError(f"{given} is not inside an ocsync folder")
    relpath = (parent / given.name).relative_to(root).as_posix()
    if relpath in ("", ".") or given.resolve() == root:
        raise NotAFolderError(f"{given} is the folder itself; name a file inside it")
    if relpath == ".git" or relpath.startswith(".git/"):
        raise NotAFolderError(f"{given} is inside the folder's repository, not a synced file")
    return root, relpath

"""Test devices: a home with an identity and one real synced folder, driven through the real code."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ocsync_tui.identity import DeviceIdentity, load_or_create_identity, rename_device
from ocsync_tui.vcs.apply import ApplyReport, apply_bundle
from ocsync_tui.vcs.bundle import create_bundle
from ocsync_tui.vcs.committer import commit_pending
from ocsync_tui.vcs.disk_naming import DiskNaming
from ocsync_tui.vcs.folder import FolderRepo, init_folder
from ocsync_tui.vcs.writer import folder_writer


@dataclass
class Device:
    name: str
    identity: DeviceIdentity
    root: Path
    disk_naming: DiskNaming | None = None  # what apply assumes of the disk; None: probe it

    @property
    def folder(self) -> FolderRepo:
        return FolderRepo.open(self.root)

    def head(self) -> bytes | None:
        return self.folder.head()

    def write(self, relpath: str, content: bytes) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    def delete(self, relpath: str) -> None:
        (self.root / relpath).unlink()

    def commit(self):
        with folder_writer(self.root) as folder:
            return commit_pending(folder, self.identity)

    def known_head_of(self, sender: "Device") -> bytes | None:
        """What this device last recorded from `sender`: refs/peers/SENDER/main."""
        return self.folder.repo.refs.as_dict().get(f"refs/peers/{sender.name}/main".encode())

    def bundle_for(self, receiver: "Device", out: Path) -> Path:
        known = receiver.known_head_of(self)
        create_bundle(self.folder, [known.decode()] if known else [], out)
        verify_bundle(receiver.root, out)
        return out

    def apply(self, bundle: Path, sender: "Device", **kwargs) -> ApplyReport:
        kwargs.setdefault("disk_naming", self.disk_naming)
        with folder_writer(self.root) as folder:
            return apply_bundle(folder, self.identity, bundle, peer_name=sender.name, **kwargs)

    def pull_from(self, sender: "Device", scratch: Path) -> ApplyReport:
        scratch.mkdir(parents=True, exist_ok=True)
        bundle = sender.bundle_for(self, scratch / f"{sender.name}-to-{self.name}-{os.urandom(4).hex()}.bundle")
        return self.apply(bundle, sender)

    def files(self) -> dict[str, bytes]:
        """The working tree as {relative path: content}; symlinks as 'link:' + target."""
        found = {}
        for directory, dirnames, filenames in os.walk(self.root):
            if directory == str(self.root):
                dirnames.remove(".git")
            for name in filenames:
                path = Path(directory, name)
                relpath = str(path.relative_to(self.root))
                if relpath != ".ocsync-folder":
                    link = path.is_symlink()
                    found[relpath] = b"link:" + os.fsencode(os.readlink(path)) if link else path.read_bytes()
        return found

    def git_status(self) -> str:
        """`git status --porcelain`: empty when the stat cache (git's index), HEAD and disk agree."""
        result = subprocess.run(["git", "-C", str(self.root), "status", "--porcelain"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def head_files(self) -> dict[str, bytes]:
        """HEAD's tree as {relative path: content}, comparable with files()."""
        repo = self.folder.repo
        head = self.head()
        if head is None:
            return {}
        found = {}
        for entry in repo.object_store.iter_tree_contents(repo[head].tree):
            content = repo.object_store[entry.sha].as_raw_string()
            found[entry.path.decode()] = b"link:" + content if entry.mode == 0o120000 else content
        return found


def make_device(
    base: Path, name: str, files: dict[str, bytes] | None = None, disk_naming: DiskNaming | None = None
) -> Device:
    home = base / f"home-{name}"
    load_or_create_identity(home)
    identity = rename_device(home, name)
    root = base / name
    root.mkdir(parents=True)
    for relpath, content in (files or {}).items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(content)
    init_folder(root, identity)
    return Device(name, identity, root, disk_naming)


def verify_bundle(repo: Path, bundle: Path) -> None:
    """Fail unless the real git CLI accepts the bundle in `repo` (which must hold its prerequisites)."""
    result = subprocess.run(["git", "-C", str(repo), "bundle", "verify", str(bundle)], capture_output=True, text=True)
    assert result.returncode == 0, f"git bundle verify failed:\n{result.stdout}{result.stderr}"


def run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`ocsync --home HOME ARGS...` in a fresh interpreter, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )

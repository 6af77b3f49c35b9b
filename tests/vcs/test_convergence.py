"""Three replicas, random edits, random exchanges: everyone ends on one head and no live version is lost.

The model tracks file versions by content (every write is unique). A version is *superseded* when a
replica that has it on disk overwrites, deletes or renames over it; every other version that ever
existed must be somewhere in the final tree, at its path or as a conflict copy. Some edits are left
uncommitted when a peer's change arrives, as a user's unsaved work would be.
"""

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tests.conftest import git_fsck_strict
from ocsync_tui.vcs.disk_naming import DiskNaming
from tests.vcs.devices import Device, make_device

NAMES = ["r0", "r1", "r2"]
FOLDING = DiskNaming(folds_case=True, normalizes_unicode=False)
PATHS = ["a.txt", "A.txt", "dir/b.txt", "Dir/sub/c"]
MAX_SETTLE_ROUNDS = 6


class Replicas(RuleBasedStateMachine):
    folding_replica: str | None = None
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="ocsync-convergence-"))
        self.devices: dict[str, Device] = {}
        self.counter = 0
        self.versions: set[bytes] = set()
        self.superseded: set[bytes] = set()
        self.bundles = self.base / "bundles"
        self.bundles.mkdir()

    def new_version(self, device: Device, path: str) -> bytes:
        self.counter += 1
        version = f"{device.name} v{self.counter} of {path}\n".encode()
        self.versions.add(version)
        return version

    def impossible_on(self, device: Device, path: str) -> bool:
        """Would `path` name a different existing file or folder on this device's disk?"""
        if device.disk_naming is None:
            return False
        taken = {}
        for existing in device.files():
            parts = existing.split("/")
            for depth in range(1, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                taken[device.disk_naming.key(prefix.encode())] = prefix
        parts = path.split("/")
        prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
        return any(taken.get(device.disk_naming.key(p.encode()), p) != p for p in prefixes)

    def supersede(self, device: Device, path: str) -> None:
        current = device.root / path
        if current.is_file():
            self.superseded.add(current.read_bytes())

    @initialize()
    def start_from_one_shared_folder(self) -> None:
        first = make_device(self.base, NAMES[0])
        for path in PATHS[:2]:
            first.write(path, self.new_version(first, path))
        first.commit()
        self.devices[first.name] = first
        for name in NAMES[1:]:
            device = make_device(self.base, name, disk_naming=FOLDING if name == self.folding_replica else None)
            device.pull_from(first, self.bundles)
            self.devices[name] = device

    @rule(name=st.sampled_from(NAMES), path=st.sampled_from(PATHS))
    def write(self, name: str, path: str) -> None:
        device = self.devices[name]
        if self.impossible_on(device, path):
            return
        self.supersede(device, path)
        device.write(path, self.new_version(device, path))
        device.commit()

    @rule(name=st.sampled_from(NAMES), path=st.sampled_from(PATHS))
    def write_without_committing(self, name: str, path: str) -> None:
        """An edit still unsaved when a peer's change arrives: the apply must commit it first."""
        device = self.devices[name]
        if self.impossible_on(device, path):
            return
        self.supersede(device, path)
        device.write(path, self.new_version(device, path))

    @rule(name=st.sampled_from(NAMES), pick=st.integers(0, 1000))
    def delete(self, name: str, pick: int) -> None:
        device = self.devices[name]
        existing = sorted(device.files())
        if not existing:
            return
        path = existing[pick % len(existing)]
        self.supersede(device, path)
        device.delete(path)
        device.commit()

    @rule(name=st.sampled_from(NAMES), destination=st.sampled_from(PATHS), pick=st.integers(0, 1000))
    def rename(self, name: str, destination: str, pick: int) -> None:
        device = self.devices[name]
        existing = sorted(p for p in device.files() if p != destination)
        if not existing or self.impossible_on(device, destination):
            return
        source = existing[pick % len(existing)]
        self.supersede(device, destination)
        target = device.root / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        (device.root / source).rename(target)
        device.commit()

    @rule(sender=st.sampled_from(NAMES), receiver=st.sampled_from(NAMES))
    def exchange(self, sender: str, receiver: str) -> None:
        if sender != receiver:
            self.pull(self.devices[receiver], self.devices[sender])

    def pull(self, receiver: Device, sender: Device) -> None:
        if sender.head() in (None, receiver.known_head_of(sender)):
            return
        report = receiver.pull_from(sender, self.bundles)
        event(f"apply: {report.kind}")
        sent = sender.files()
        if any(".sync-conflict-" in path.decode() and path.decode() not in sent for path in report.updated_paths):
            event("apply: relocated a name this disk cannot hold")
        if report.conflicts:
            event("apply: with conflicts")

    def settle(self) -> None:
        for device in self.devices.values():
            device.commit()
        for _ in range(MAX_SETTLE_ROUNDS):
            for receiver in self.devices.values():
                for sender in self.devices.values():
                    if sender is not receiver:
                        self.pull(receiver, sender)
            if len({device.head() for device in self.devices.values()}) == 1:
                return
        raise AssertionError(f"no common head after {MAX_SETTLE_ROUNDS} rounds of full exchange")

    def teardown(self) -> None:
        try:
            if len(self.devices) == len(NAMES):
                self.settle()
                self.check_final_state()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def check_final_state(self) -> None:
        devices = list(self.devices.values())
        trees = [device.files() for device in devices]
        assert all(tree == trees[0] for tree in trees), "replicas hold different files"
        assert all(device.head_files() == device.files() for device in devices), "a working tree is not HEAD"
        final_contents = set(trees[0].values())
        lost = self.versions - self.superseded - final_contents
        assert not lost, f"versions lost: {sorted(lost)}"
        for path in trees[0]:
            for name in path.split("/"):
                assert name.count(".sync-conflict-") <= 1, f"a conflict copy of a conflict copy: {path}"
        for device in devices:
            assert device.git_status() == "", f"{device.name}: git's index disagrees with HEAD or the disk"
            git_fsck_strict(device.root)
        repo = devices[0].folder.repo
        for entry in repo.get_walker():
            commit = entry.commit
            if len(commit.parents) <= 1:
                parent_tree = repo[commit.parents[0]].tree if commit.parents else None
                changes = list(repo.object_store.tree_changes(parent_tree, commit.tree))
                assert len(changes) == 1, f"commit {commit.id.decode()} changes {len(changes)} paths"


class ReplicasWithAFoldingDisk(Replicas):
    """r2 applies bundles as if its disk folded case: names that differ only in case become conflict
    copies there, which it commits, and every replica must still converge."""

    folding_replica = "r2"


# Which version wins a conflict depends on commit times (the real clock), so a replayed example can
# take another path: rules pick existing files by index, never by drawing from what is on disk, and
# shrinking (minutes of replays, each a real exchange) is left out.
for machine in (Replicas, ReplicasWithAFoldingDisk):
    machine.TestCase.settings = settings(
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        max_examples=int(os.environ.get("OCSYNC_CONVERGENCE_EXAMPLES", "15")),
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
TestConvergence = Replicas.TestCase
TestConvergenceWithAFoldingDisk = ReplicasWithAFoldingDisk.TestCase

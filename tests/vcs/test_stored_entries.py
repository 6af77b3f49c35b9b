"""A first sync's bundle copies the store's pack entries as they are: real devices, real git."""

import os
import random
import subprocess
from pathlib import Path

import pytest

from ocsync_tui.vcs.bundle import BundleError, create_bundle
from tests.vcs.devices import Device, make_device, verify_bundle


def pack_bytes(device: Device) -> int:
    return sum(path.stat().st_size for path in (device.root / ".git" / "objects" / "pack").glob("*.pack"))


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def cloned_tree_matches(bundle: Path, device: Device, scratch: Path) -> None:
    """git clones the bundle, and the clone's HEAD tree is the device's."""
    clone = scratch / f"clone-{os.urandom(3).hex()}"
    subprocess.run(["git", "clone", "-q", str(bundle), str(clone)], check=True, capture_output=True)
    git(clone, "fsck", "--strict", "--no-dangling")
    assert git(clone, "rev-parse", "HEAD^{tree}") == git(device.root, "rev-parse", "HEAD^{tree}")


@pytest.fixture
def grown(tmp_path: Path) -> Device:
    """A device whose history came in several commit runs (one pack each), with tree deltas."""
    rng = random.Random(3)
    files = {f"dir{index % 4}/file{index}.bin": rng.randbytes(rng.randint(100, 5000)) for index in range(60)}
    device = make_device(tmp_path, "alice", files)
    for run in range(3):
        for index in range(run, 60, 7):
            device.write(f"dir{index % 4}/file{index}.bin", rng.randbytes(300))
        device.commit()
    return device


def test_full_bundle_copies_the_stored_entries_and_git_accepts_it(grown: Device, tmp_path: Path) -> None:
    out = tmp_path / "full.bundle"
    info = create_bundle(grown.folder, [], out)

    verify_bundle(grown.root, out)
    cloned_tree_matches(out, grown, tmp_path)
    commits = int(git(grown.root, "rev-list", "--count", "HEAD"))
    assert info.commit_count == commits
    # Copied, not inflated and deltified again: the bundle's pack is the store's packs, give or take headers.
    bundle_pack = info.size - out.read_bytes().index(b"\n\n") - 2
    assert abs(bundle_pack - pack_bytes(grown)) < 0.02 * pack_bytes(grown)


def test_full_bundle_of_a_device_that_received_thin_bundles(grown: Device, tmp_path: Path) -> None:
    """Imported thin packs hold deltas against bases appended after them; older packs have those bases."""
    bob = make_device(tmp_path, "bob")
    bob.pull_from(grown, tmp_path / "scratch")
    grown.write("dir1/file1.bin", b"edited once more")
    grown.commit()
    bob.pull_from(grown, tmp_path / "scratch")
    bob.write("dir2/new.txt", b"bob's own")
    bob.commit()

    out = tmp_path / "from-bob.bundle"
    create_bundle(bob.folder, [], out)
    verify_bundle(bob.root, out)
    cloned_tree_matches(out, bob, tmp_path)
    carol = make_device(tmp_path, "carol")
    carol.apply(out, bob)
    assert carol.files() == bob.files()


def test_loose_objects_and_a_git_made_pack_go_too(grown: Device, tmp_path: Path) -> None:
    """git commands run in the folder leave loose objects (and git's own packs, REF_DELTAs included)."""
    (grown.root / "by-git.txt").write_text("committed by the git CLI\n")
    git(grown.root, "add", "by-git.txt")
    subprocess.run(["git", "-C", str(grown.root), "-c", "user.name=T", "-c", "user.email=t@ocsync.invalid",
                    "commit", "-q", "-m", "by git"], check=True)
    out = tmp_path / "loose.bundle"
    create_bundle(grown.folder, [], out)
    cloned_tree_matches(out, grown, tmp_path)

    # Commits alike enough that git's repack stores some as deltas of others: each still counts.
    for number in range(30):
        (grown.root / "by-git.txt").write_text(f"version {number}\n")
        subprocess.run(["git", "-C", str(grown.root), "-c", "user.name=T", "-c", "user.email=t@ocsync.invalid",
                        "commit", "-q", "-am", "the same long message for every one of these commits " * 3],
                       check=True)
    git(grown.root, "repack", "-a", "-d", "-f", "-q", "--window=250", "--depth=50")
    packs = [str(index) for index in (grown.root / ".git" / "objects" / "pack").glob("*.idx")]
    listing = git(grown.root, "verify-pack", "-v", *packs).splitlines()
    assert any(line.split()[1:2] == ["commit"] and len(line.split()) >= 7 for line in listing), "no commit delta"
    out = tmp_path / "repacked.bundle"
    info = create_bundle(grown.folder, [], out)
    cloned_tree_matches(out, grown, tmp_path)
    assert info.commit_count == int(git(grown.root, "rev-list", "--count", "HEAD"))


def test_a_damaged_stored_entry_is_refused_not_sent(grown: Device, tmp_path: Path) -> None:
    pack = max((grown.root / ".git" / "objects" / "pack").glob("*.pack"), key=lambda path: path.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x40
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))

    out = tmp_path / "damaged.bundle"
    with pytest.raises(BundleError, match="CRC-32.*git fsck"):
        create_bundle(grown.folder, [], out)
    assert not out.exists()
    assert not list(tmp_path.glob(".damaged.bundle.*"))

"""A first sync's bundle is padded so that its pack starts on a block boundary, and a receiver that may
use the bundle up keeps that pack in place instead of copying it."""

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from ocsync_tui.vcs.aligned_bundles import PACK_ALIGNMENT, align_header, take_pack_in_place
from ocsync_tui.vcs.bundle import create_bundle
from tests.vcs.devices import Device, make_device, verify_bundle

HEAD = b"0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("length", [20, 100, 4000, 4030, 4096, 4097, 9000])
def test_the_padded_header_ends_on_a_block_boundary(length: int) -> None:
    header = b"# v2 git bundle\n" + b"x" * (length - 18) + b"\n\n"
    padded = align_header(header, HEAD)
    assert len(padded) % PACK_ALIGNMENT == 0 and padded.startswith(header[:-1]) and padded.endswith(b"\n\n")
    line = padded[len(header) - 1 : -1]
    assert line.startswith(HEAD + b" refs/ocsync/padding/") and line.count(b"\n") == 1
    ref = line[41:-1]
    assert all(0 < len(part) <= 200 for part in ref.split(b"/"))
    subprocess.run(["git", "check-ref-format", ref.decode()], check=True)


@pytest.fixture
def alice(tmp_path: Path) -> Device:
    rng = random.Random(11)
    return make_device(tmp_path, "alice", {f"d{index % 3}/f{index}.bin": rng.randbytes(20_000) for index in range(30)})


def pack_inodes(device: Device) -> set[int]:
    return {path.stat().st_ino for path in (device.root / ".git" / "objects" / "pack").glob("*.pack")}


def collapse_supported(directory: Path) -> bool:
    probe = directory / "probe"
    probe.write_bytes(b"\0" * (3 * PACK_ALIGNMENT))
    (directory / "probe-dir").mkdir()
    taken = take_pack_in_place(probe, PACK_ALIGNMENT, str(directory / "probe-dir"))
    return taken is not None and os.path.getsize(taken) == 2 * PACK_ALIGNMENT


def test_git_reads_the_padded_bundle_and_clones_main(alice: Device, tmp_path: Path) -> None:
    out = tmp_path / "full.bundle"
    create_bundle(alice.folder, [], out)
    verify_bundle(alice.root, out)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(out), str(clone)], check=True, capture_output=True)
    branches = subprocess.run(["git", "-C", str(clone), "branch", "-a"], capture_output=True, text=True).stdout
    assert "main" in branches and "padding" not in branches
    assert (clone / "d0" / "f0.bin").read_bytes() == (alice.root / "d0" / "f0.bin").read_bytes()


def test_a_consumed_bundle_becomes_the_pack_without_a_copy(alice: Device, tmp_path: Path) -> None:
    if not collapse_supported(tmp_path):
        pytest.skip("this filesystem cannot cut blocks off the start of a file")
    out = tmp_path / "full.bundle"
    create_bundle(alice.folder, [], out)
    inode = out.stat().st_ino
    bob = make_device(tmp_path, "bob")

    bob.apply(out, alice, consume=True)

    assert not out.exists()
    assert inode in pack_inodes(bob)
    assert bob.files() == alice.files()
    subprocess.run(["git", "-C", str(bob.root), "fsck", "--strict"], check=True, capture_output=True)


def test_a_bundle_not_to_consume_is_left_as_it_was(alice: Device, tmp_path: Path) -> None:
    out = tmp_path / "full.bundle"
    create_bundle(alice.folder, [], out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    bob = make_device(tmp_path, "bob")

    bob.apply(out, alice)

    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    assert bob.files() == alice.files()


def test_an_unaligned_bundle_to_consume_is_copied(alice: Device, tmp_path: Path) -> None:
    """A thin bundle (not padded) whose pack the receiver completes with its own objects."""
    bob = make_device(tmp_path, "bob")
    bob.pull_from(alice, tmp_path / "scratch")
    alice.write("d1/f1.bin", b"changed")
    alice.commit()
    out = alice.bundle_for(bob, tmp_path / "thin.bundle")

    bob.apply(out, alice, consume=True)

    assert bob.files() == alice.files()
    subprocess.run(["git", "-C", str(bob.root), "fsck", "--strict"], check=True, capture_output=True)

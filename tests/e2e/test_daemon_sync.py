"""Live propagation between real daemons: adds, edits, deletes and renames both ways between two
devices, through a third, and three devices editing one file at once."""

import threading
from pathlib import Path

import pytest

from tests.e2e.daemons import (
    check_repository,
    conflict_copies,
    pair,
    share_folder,
    wait_converged,
)


def write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_adds_edits_deletes_and_renames_propagate_both_ways(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    seed = tmp_path / "alice-docs"
    write(seed / "before-sharing.txt", b"committed by folder add\n")
    paths = share_folder(alice, "docs", seed, bob)
    a, b = paths[alice], paths[bob]
    expected = {"before-sharing.txt": b"committed by folder add\n"}
    wait_converged(paths, expected=expected)

    write(a / "from-alice.txt", b"alice 1\n")
    write(a / "deep/dir/alice-nested.txt", b"nested\n")
    expected |= {"from-alice.txt": b"alice 1\n", "deep/dir/alice-nested.txt": b"nested\n"}
    wait_converged(paths, expected=expected)

    write(b / "from-bob.txt", b"bob 1\n")
    expected["from-bob.txt"] = b"bob 1\n"
    wait_converged(paths, expected=expected)

    write(a / "from-bob.txt", b"bob's file, edited by alice\n")
    expected["from-bob.txt"] = b"bob's file, edited by alice\n"
    wait_converged(paths, expected=expected)
    write(b / "from-alice.txt", b"alice's file, edited by bob\n")
    expected["from-alice.txt"] = b"alice's file, edited by bob\n"
    wait_converged(paths, expected=expected)

    (a / "deep/dir/alice-nested.txt").rename(a / "renamed-by-alice.txt")
    expected["renamed-by-alice.txt"] = expected.pop("deep/dir/alice-nested.txt")
    wait_converged(paths, expected=expected)
    (b / "moved").mkdir()
    (b / "from-bob.txt").rename(b / "moved/by-bob.txt")
    expected["moved/by-bob.txt"] = expected.pop("from-bob.txt")
    wait_converged(paths, expected=expected)

    (b / "before-sharing.txt").unlink()
    del expected["before-sharing.txt"]
    wait_converged(paths, expected=expected)
    (a / "moved/by-bob.txt").unlink()
    del expected["moved/by-bob.txt"]
    wait_converged(paths, expected=expected)

    for folder in (a, b):
        check_repository(folder)


@pytest.mark.slow
def test_three_devices_sync_through_a_star_and_one_file_edited_on_all_at_once_keeps_three_versions(cluster, tmp_path: Path) -> None:
    # A star: bob and carol each pair with alice only, so their changes reach each other through her.
    alice, bob, carol = cluster.device("alice"), cluster.device("bob"), cluster.device("carol")
    pair(alice, bob)
    pair(alice, carol)
    seed = tmp_path / "alice-notes"
    write(seed / "shared.txt", b"original\n")
    paths = share_folder(alice, "notes", seed, bob, carol)
    wait_converged(paths, expected={"shared.txt": b"original\n"})

    # Plain propagation across the star first: bob -> alice -> carol and carol -> alice -> bob.
    write(paths[bob] / "bob.txt", b"from bob\n")
    write(paths[carol] / "carol.txt", b"from carol\n")
    wait_converged(paths, expected={"shared.txt": b"original\n", "bob.txt": b"from bob\n",
                                    "carol.txt": b"from carol\n"})
    # Edits, renames and deletes across the star too.
    write(paths[carol] / "bob.txt", b"from bob, edited by carol\n")
    (paths[bob] / "moved").mkdir()
    (paths[bob] / "carol.txt").rename(paths[bob] / "moved" / "carol.txt")
    write(paths[alice] / "doomed.txt", b"short-lived\n")
    base = {"shared.txt": b"original\n", "bob.txt": b"from bob, edited by carol\n",
            "moved/carol.txt": b"from carol\n", "doomed.txt": b"short-lived\n"}
    wait_converged(paths, expected=base)
    (paths[carol] / "doomed.txt").unlink()
    del base["doomed.txt"]
    wait_converged(paths, expected=base)

    versions = {device: f"{device.name}'s version\n".encode() for device in (alice, bob, carol)}
    barrier = threading.Barrier(len(versions))

    def edit(device) -> None:
        barrier.wait()
        (paths[device] / "shared.txt").write_bytes(versions[device])

    writers = [threading.Thread(target=edit, args=(device,)) for device in versions]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    tree = wait_converged(paths, timeout=45)
    copies = conflict_copies(tree, "shared.txt")
    assert len(copies) == 2, f"expected two conflict copies of shared.txt, found {sorted(copies)} in {sorted(tree)}"
    kept = sorted([tree["shared.txt"], *copies.values()])
    assert kept == sorted(versions.values()), f"versions kept: {kept}"
    assert {path: tree[path] for path in base if path != "shared.txt"} == {
        path: content for path, content in base.items() if path != "shared.txt"
    }
    assert set(tree) == set(base) | set(copies)
    for folder in paths.values():
        check_repository(folder)

"""A folder whose marker is gone (an unmounted disk, a wiped directory) stops syncing on that device and
says so; none of the vanished files are deleted on the peer, not even after a restart; once the disk is
back the folder resumes and catches up."""

from pathlib import Path

import pytest

from tests.e2e.daemons import (
    MARKER_NAME,
    assert_stays,
    pair,
    read_tree,
    share_folder,
    wait_converged,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_a_missing_marker_stops_the_folder_sends_no_deletions_and_a_remount_resumes_it(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    seed = tmp_path / "alice-disk"
    seed.mkdir()
    files = {f"file{index:02}.txt": b"content %d\n" % index for index in range(12)}
    for name, content in files.items():
        (seed / name).write_bytes(content)
    paths = share_folder(alice, "disk", seed, bob)
    wait_converged(paths, expected=files)

    # What an unmount looks like from inside: the marker and every file vanish at once.
    marker = (paths[alice] / MARKER_NAME).read_bytes()
    (paths[alice] / MARKER_NAME).unlink()
    for name in files:
        (paths[alice] / name).unlink()

    def stopped_and_reported() -> bool:
        listing = alice.ocsync("folder", "list").stdout
        return any("disk" in line and "stopped" in line.lower() for line in listing.splitlines())

    wait_until(stopped_and_reported, "alice's `ocsync folder list` to report the folder 'disk' as stopped",
               cluster, timeout=20, interval=0.3)
    # bob changes something, so both sides have a reason to exchange: still nothing is deleted on bob.
    (paths[bob] / "from-bob.txt").write_bytes(b"bob keeps working\n")
    on_bob = {**files, "from-bob.txt": b"bob keeps working\n"}
    assert_stays({bob: paths[bob]}, {bob: on_bob}, seconds=4, what="a deletion reached the peer")
    assert read_tree(paths[alice]) == {}, "alice's stopped folder was written to"

    alice.kill()
    alice.start()
    wait_until(stopped_and_reported, "the folder to be stopped again after a restart", cluster, timeout=20,
               interval=0.3)
    assert_stays({bob: paths[bob]}, {bob: on_bob}, seconds=3, what="a deletion reached the peer after a restart")

    # The disk is mounted again: files and marker are back, the folder resumes and catches up with bob.
    for name, content in files.items():
        (paths[alice] / name).write_bytes(content)
    (paths[alice] / MARKER_NAME).write_bytes(marker)
    wait_until(lambda: not stopped_and_reported(), "the folder to resume once its marker is back", cluster,
               timeout=30, interval=0.5)
    wait_converged(paths, expected=on_bob)

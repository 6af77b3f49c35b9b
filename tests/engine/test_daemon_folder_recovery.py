"""A folder stopped because its marker vanished (an unmounted disk) syncs again once the marker is back."""

import shutil
from pathlib import Path

from tests.e2e.daemons import MARKER_NAME, pair, share_folder, wait_converged, wait_until


def test_a_remounted_folder_resumes_syncing(cluster, tmp_path: Path) -> None:
    alice, bob = cluster.device("alice"), cluster.device("bob")
    pair(alice, bob)
    seed = tmp_path / "alice-disk"
    seed.mkdir()
    (seed / "kept.txt").write_bytes(b"kept")
    paths = share_folder(alice, "disk", seed, bob)
    wait_converged(paths, expected={"kept.txt": b"kept"})

    # Unmount: the whole folder goes away, then comes back as it was.
    parked = tmp_path / "parked"
    shutil.move(paths[alice], parked)
    wait_until(lambda: "stopped" in alice.ocsync("status").stdout, "alice to report the folder stopped", cluster)
    shutil.move(parked, paths[alice])
    assert (paths[alice] / MARKER_NAME).is_file()

    wait_until(lambda: "stopped" not in alice.ocsync("status").stdout, "alice to sync the folder again", cluster)
    (paths[alice] / "after.txt").write_bytes(b"written after the remount")
    wait_converged(paths, expected={"kept.txt": b"kept", "after.txt": b"written after the remount"})

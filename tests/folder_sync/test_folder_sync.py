"""FolderSync on real folders: real watchfiles events, real repositories, real bundles between two folders."""

import os
import shutil
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ocsync_tui.engine.folder_sync import BURST_WAIT_SECONDS, FolderStoppedError, FolderSync
from ocsync_tui.identity import load_or_create_identity
from ocsync_tui.store.database import Folder
from ocsync_tui.vcs.apply import apply_bundle
from ocsync_tui.vcs.bundle import create_bundle
from ocsync_tui.vcs.folder import MARKER_NAME, FolderRepo, NotAFolderError, init_folder
from ocsync_tui.vcs.journal import ApplyJournal, write_journal
from tests.conftest import git_fsck_strict


@dataclass
class Observed:
    """What a FolderSync reported through its callbacks."""

    commits: list[tuple[str, list]] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    held: list[list[str]] = field(default_factory=list)

    def committed(self, head, records):
        self.commits.append((head, records))

    def stopped(self, reason):
        self.stops.append(reason)

    def held_deletions(self, paths):
        self.held.append(paths)


def make_folder(root: Path, identity, files: dict[str, bytes] | None = None) -> Folder:
    root.mkdir(parents=True)
    for name, content in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    init_folder(root, identity)
    folder = FolderRepo.open(root)
    folder.close()
    return Folder(folder.folder_id, root.name, folder.path, "ok")


def folder_sync(folder: Folder, identity, observed: Observed, **options) -> FolderSync:
    return FolderSync(
        folder,
        identity,
        on_committed=observed.committed,
        on_stopped=observed.stopped,
        on_held_deletions=observed.held_deletions,
        **options,
    )


@asynccontextmanager
async def running(*syncs: FolderSync):
    async with trio.open_nursery() as nursery:
        for sync in syncs:
            await nursery.start(sync.run)
        yield nursery
        nursery.cancel_scope.cancel()


def subjects(root: Path) -> list[str]:
    """Commit subjects on main, oldest first."""
    result = subprocess.run(
        ["git", "-C", str(root), "log", "--reverse", "--format=%s", "main"], capture_output=True, text=True
    )
    return result.stdout.splitlines() if result.returncode == 0 else []


def head(root: Path) -> str | None:
    folder = FolderRepo.open(root)
    try:
        current = folder.head()
        return current.decode("ascii") if current else None
    finally:
        folder.close()


async def wait_until(condition, timeout: float = 2.0) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {condition.__doc__ or condition}")
        await trio.sleep(0.01)
    return time.monotonic() - start


@pytest.mark.trio
async def test_add_edit_delete_and_rename_are_separate_commits_within_a_second(tmp_path, identity):
    root = tmp_path / "docs"
    folder = make_folder(root, identity, {"b.txt": b"bee\n"})
    observed = Observed()
    async with running(folder_sync(folder, identity, observed)):
        (root / "a.txt").write_bytes(b"one\n")
        assert await wait_until(lambda: subjects(root)[-1:] == ["add a.txt"]) < 1.0
        (root / "a.txt").write_bytes(b"two\n")
        assert await wait_until(lambda: subjects(root)[-1:] == ["modify a.txt"]) < 1.0
        (root / "a.txt").unlink()
        assert await wait_until(lambda: subjects(root)[-1:] == ["delete a.txt"]) < 1.0
        os.rename(root / "b.txt", root / "c.txt")
        assert await wait_until(lambda: subjects(root)[-2:] == ["add c.txt", "delete b.txt"]) < 1.0
        (root / "sub").mkdir()
        (root / "sub" / "deep.txt").write_bytes(b"deep\n")
        assert await wait_until(lambda: subjects(root)[-1:] == ["add sub/deep.txt"]) < 1.0
        # An editor's save: a new file renamed over the old one.
        (root / ".c.txt.swp").write_bytes(b"saved by an editor\n")
        os.rename(root / ".c.txt.swp", root / "c.txt")
        assert await wait_until(lambda: subjects(root)[-1:] == ["modify c.txt"]) < 1.0
    assert subjects(root) == [
        "add b.txt", "add a.txt", "modify a.txt", "delete a.txt", "add c.txt", "delete b.txt", "add sub/deep.txt",
        "modify c.txt",
    ]
    assert observed.commits[-1][0] == head(root)
    assert [record.path for _, records in observed.commits for record in records] == [
        "a.txt", "a.txt", "a.txt", "c.txt", "b.txt", "sub/deep.txt", "c.txt"
    ]
    assert observed.stops == []
    git_fsck_strict(root)


@pytest.mark.trio
async def test_a_renamed_directory_commits_each_add_before_its_delete(tmp_path, identity):
    root = tmp_path / "moving"
    folder = make_folder(root, identity, {"old/a.txt": b"a\n", "old/b.txt": b"b\n"})
    observed = Observed()
    async with running(folder_sync(folder, identity, observed)):
        os.rename(root / "old", root / "new")
        await wait_until(lambda: len(subjects(root)) == 6)
    assert subjects(root)[2:] == ["add new/a.txt", "add new/b.txt", "delete old/a.txt", "delete old/b.txt"]
    git_fsck_strict(root)


@pytest.mark.trio
async def test_a_commit_follows_a_write_within_about_150_ms(tmp_path, identity):
    root = tmp_path / "fast"
    folder = make_folder(root, identity)
    observed = Observed()
    async with running(folder_sync(folder, identity, observed)):
        await trio.sleep(0.3)  # the watcher is up
        delays = []
        for number in range(5):
            (root / f"f{number}.txt").write_bytes(b"x")
            delays.append(await wait_until(lambda: len(observed.commits) == number + 1))
            await trio.sleep(0.05)
    delays.sort()
    assert delays[2] < 0.3, delays


@pytest.mark.trio
async def test_a_file_written_slowly_is_committed_once_and_complete(tmp_path, identity):
    root = tmp_path / "slow"
    folder = make_folder(root, identity)
    observed = Observed()
    pieces = [bytes([65 + number]) * 1000 for number in range(12)]
    async with running(folder_sync(folder, identity, observed)):
        with open(root / "slow.bin", "wb") as handle:
            for piece in pieces:
                handle.write(piece)
                handle.flush()
                await trio.sleep(0.04)
        await wait_until(lambda: observed.commits)
        await trio.sleep(0.5)  # any later, second commit would show now
    assert subjects(root) == ["add slow.bin"]
    shown = subprocess.run(["git", "-C", str(root), "show", "main:slow.bin"], capture_output=True, check=True)
    assert shown.stdout == b"".join(pieces)


@pytest.mark.trio
async def test_changes_made_while_stopped_are_committed_before_started(tmp_path, identity):
    root = tmp_path / "offline"
    folder = make_folder(root, identity, {"keep.txt": b"keep\n", "edit.txt": b"v1\n", "gone.txt": b"bye\n"})
    (root / "edit.txt").write_bytes(b"v2, edited while the daemon was stopped\n")
    (root / "gone.txt").unlink()
    (root / "new.txt").write_bytes(b"new\n")
    observed = Observed()
    async with trio.open_nursery() as nursery:
        await nursery.start(folder_sync(folder, identity, observed).run)
        # Checked the moment run reports started, with no wait: nothing of this may reach a peer first.
        assert subjects(root)[3:] == ["modify edit.txt", "add new.txt", "delete gone.txt"]
        assert observed.commits[0][0] == head(root)
        nursery.cancel_scope.cancel()
    git_fsck_strict(root)


@pytest.mark.trio
async def test_an_interrupted_apply_is_finished_before_the_start_scan(tmp_path, identity):
    root = tmp_path / "killed-mid-apply"
    folder = make_folder(root, identity, {"a.txt": b"v1\n"})
    (root / "a.txt").write_bytes(b"v2, the peer's version\n")
    init_folder(root, identity)
    repo = FolderRepo.open(root)
    first, second = repo.repo.get_parents(repo.head())[0], repo.head()
    # As a kill leaves it: the journal written, the file already updated, main not yet moved.
    repo.set_head(first, second)
    write_journal(repo, ApplyJournal(old_head=first, new_head=second, paths=(b"a.txt",)))
    repo.close()
    observed = Observed()
    async with running(folder_sync(folder, identity, observed)):
        pass
    assert head(root) == second.decode()
    assert observed.commits == []  # the peer's content was not taken for a local edit
    assert not (root / ".git" / "ocsync-journal").exists()


@pytest.mark.trio
async def test_a_changed_ignore_file_rescans_the_folder(tmp_path, identity):
    root = tmp_path / "ignoring"
    folder = make_folder(root, identity, {".ocsyncignore": b"*.log\n"})
    observed = Observed()
    async with running(folder_sync(folder, identity, observed)):
        (root / "x.log").write_bytes(b"ignored for now\n")
        await trio.sleep(0.4)
        assert subjects(root) == ["add .ocsyncignore"]
        (root / ".ocsyncignore").write_bytes(b"")
        await wait_until(lambda: len(subjects(root)) == 3)
    assert sorted(subjects(root)[1:]) == ["add x.log", "modify .ocsyncignore"]


@pytest.mark.trio
async def test_an_apply_through_write_makes_no_local_commit(tmp_path, identity):
    other_identity = load_or_create_identity(tmp_path / "other-home")
    files = {f"dir{number % 3}/file{number}.txt": f"content {number}\n".encode() for number in range(30)}
    giver = make_folder(tmp_path / "giver", identity, files)
    taker = make_folder(tmp_path / "taker", other_identity)
    giver_seen, taker_seen = Observed(), Observed()
    giver_sync = folder_sync(giver, identity, giver_seen)
    taker_sync = folder_sync(taker, other_identity, taker_seen)
    bundle = tmp_path / "giver.bundle"
    async with running(giver_sync, taker_sync):
        await trio.sleep(0.3)  # both watchers are up, so the apply's writes are seen as events
        info = await giver_sync.write(lambda repo: create_bundle(repo, [], bundle))
        report = await taker_sync.write(
            lambda repo: apply_bundle(repo, other_identity, bundle, peer_name="giver")
        )
        assert report.kind == "fast-forward"
        await trio.sleep(1.0)  # the watch events of the apply's files settle and are looked at
        (tmp_path / "taker" / "dir0" / "file0.txt").write_bytes(b"a real local edit\n")
        await wait_until(lambda: taker_seen.commits)
    assert [record.path for _, records in taker_seen.commits for record in records] == ["dir0/file0.txt"]
    assert subjects(tmp_path / "taker")[:-1] == subjects(tmp_path / "giver")
    assert subjects(tmp_path / "taker")[-1] == "modify dir0/file0.txt"
    assert info.head == subprocess.run(
        ["git", "-C", str(tmp_path / "taker"), "rev-parse", "main~1"], capture_output=True, text=True
    ).stdout.strip()
    assert giver_seen.commits == []
    git_fsck_strict(tmp_path / "taker")


@pytest.mark.trio
async def test_writes_run_one_at_a_time_in_the_order_asked(tmp_path, identity):
    folder = make_folder(tmp_path / "order", identity)
    sync = folder_sync(folder, identity, Observed())
    events = []

    def job(number):
        def write(repo):
            events.append(("start", number))
            time.sleep(0.02)
            events.append(("end", number))
            return number

        return write

    results = []

    async def ask(number):
        results.append(await sync.write(job(number)))

    async with running(sync) as nursery:
        for number in range(5):
            nursery.start_soon(ask, number)
            await trio.sleep(0)  # asked in this order
        await wait_until(lambda: len(results) == 5)
    assert results == [0, 1, 2, 3, 4]
    assert events == [(kind, number) for number in range(5) for kind in ("start", "end")]


@pytest.mark.trio
async def test_an_error_of_a_write_reaches_its_caller_and_the_folder_keeps_going(tmp_path, identity):
    root = tmp_path / "erring"
    folder = make_folder(root, identity)
    observed = Observed()
    sync = folder_sync(folder, identity, observed)

    def failing(repo):
        raise NotAFolderError("/elsewhere/x is not inside an ocsync folder")

    async with running(sync):
        with pytest.raises(NotAFolderError):
            await sync.write(failing)
        (root / "after.txt").write_bytes(b"still synced\n")
        await wait_until(lambda: subjects(root) == ["add after.txt"])
    assert not sync.stopped and observed.stops == []


@pytest.mark.trio
async def test_a_missing_marker_stops_the_folder_without_deleting(tmp_path, identity):
    root = tmp_path / "unmounted"
    folder = make_folder(root, identity, {f"f{number}.txt": b"x" for number in range(4)})
    before = head(root)
    observed = Observed()
    sync = folder_sync(folder, identity, observed)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await trio.sleep(0.3)
        (root / MARKER_NAME).unlink()
        with trio.fail_after(2):
            await wait_until(lambda: sync.stopped)
        # run returns by itself once the folder stopped: the nursery closes without a cancel
    (root / "f0.txt").unlink()
    (root / "f1.txt").unlink()
    await trio.sleep(0.3)
    assert len(observed.stops) == 1 and MARKER_NAME in observed.stops[0]
    assert head(root) == before
    assert observed.commits == []
    with pytest.raises(FolderStoppedError):
        await sync.write(lambda repo: None)


@pytest.mark.trio
async def test_a_missing_marker_at_start_stops_before_committing(tmp_path, identity):
    root = tmp_path / "unmounted-at-start"
    folder = make_folder(root, identity, {"a.txt": b"a", "b.txt": b"b"})
    before = head(root)
    (root / MARKER_NAME).unlink()
    (root / "a.txt").unlink()
    (root / "c.txt").write_bytes(b"c")
    observed = Observed()
    sync = folder_sync(folder, identity, observed)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
    assert sync.stopped and len(observed.stops) == 1
    assert head(root) == before


@pytest.mark.trio
async def test_a_vanished_folder_directory_stops_the_folder(tmp_path, identity):
    root = tmp_path / "vanishing"
    folder = make_folder(root, identity, {"a.txt": b"a"})
    observed = Observed()
    sync = folder_sync(folder, identity, observed)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await trio.sleep(0.3)
        shutil.rmtree(root)
        with trio.fail_after(2):
            await wait_until(lambda: sync.stopped)
    assert len(observed.stops) == 1
    assert observed.commits == []


@pytest.mark.trio
async def test_a_folder_directory_missing_at_start_stops_the_folder(tmp_path, identity):
    root = tmp_path / "never-mounted"
    folder = make_folder(root, identity, {"a.txt": b"a"})
    shutil.rmtree(root)
    observed = Observed()
    sync = folder_sync(folder, identity, observed)
    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            await nursery.start(sync.run)
    assert sync.stopped and len(observed.stops) == 1
    assert not root.exists()


@pytest.mark.trio
async def test_a_folder_registered_through_a_symlink_is_watched(tmp_path, identity):
    real = tmp_path / "real"
    folder = make_folder(real, identity)
    (tmp_path / "link").symlink_to(real)
    observed = Observed()
    linked = Folder(folder.folder_id, folder.name, tmp_path / "link", "ok")
    async with running(folder_sync(linked, identity, observed)):
        (tmp_path / "link" / "through.txt").write_bytes(b"x")
        assert await wait_until(lambda: subjects(real) == ["add through.txt"]) < 1.0


@pytest.mark.trio
async def test_a_mass_deletion_is_held_and_reported(tmp_path, identity):
    root = tmp_path / "mass"
    folder = make_folder(root, identity, {f"f{number:02}.txt": b"%d" % number for number in range(20)})
    before = head(root)
    observed = Observed()
    sync = folder_sync(folder, identity, observed)
    async with running(sync):
        for number in range(15):
            (root / f"f{number:02}.txt").unlink()
        await wait_until(lambda: observed.held)
        await trio.sleep(0.3)
        assert head(root) == before
        assert observed.held[-1] == [f"f{number:02}.txt" for number in range(15)]
        report = await sync.commit_now(confirm_deletions=True)
        assert len(report.committed) == 15
    assert subjects(root)[-1] == "delete f14.txt"
    git_fsck_strict(root)


UNZIP = """
import sys
from pathlib import Path
root, count = Path(sys.argv[1]), int(sys.argv[2])
for number in range(count):
    directory = root / f"d{number % 20}"
    directory.mkdir(exist_ok=True)
    (directory / f"f{number}.txt").write_bytes(b"%d\\n" % number)
"""


@pytest.mark.trio
async def test_a_burst_of_files_is_committed_in_a_few_batches(tmp_path, identity):
    root = tmp_path / "burst"
    folder = make_folder(root, identity)
    observed = Observed()
    count = 3000
    async with running(folder_sync(folder, identity, observed)):
        started = time.monotonic()
        await trio.run_process([sys.executable, "-c", UNZIP, str(root), str(count)])
        burst_seconds = time.monotonic() - started
        await wait_until(lambda: sum(len(records) for _, records in observed.commits) >= count, timeout=30)
    assert sum(len(records) for _, records in observed.commits) == count
    # While files keep arriving, at most one committer run per BURST_WAIT_SECONDS; then the rest.
    batches = [len(records) for _, records in observed.commits]
    assert len(batches) <= burst_seconds / BURST_WAIT_SECONDS + 2, (burst_seconds, batches)
    assert len(batches) <= count / 100, (burst_seconds, batches)  # far from one run per file
    assert len(subjects(root)) == count
    git_fsck_strict(root)


@pytest.mark.trio
async def test_watchers_do_not_use_up_the_worker_threads(tmp_path, identity):
    # Each watcher waits in a worker thread for as long as its folder runs; with trio's default of 40
    # threads, 40 folders would leave none for anything else. Here the default is 2, and 3 folders run.
    trio.to_thread.current_default_thread_limiter().total_tokens = 2
    syncs = [folder_sync(make_folder(tmp_path / f"f{number}", identity), identity, Observed()) for number in range(3)]
    async with running(*syncs):
        limiter = trio.to_thread.current_default_thread_limiter()
        assert limiter.total_tokens - limiter.borrowed_tokens == 2
        for _ in range(5):
            with trio.fail_after(0.2):
                await trio.to_thread.run_sync(time.sleep, 0.01)
        (tmp_path / "f2" / "x.txt").write_bytes(b"x")
        await wait_until(lambda: subjects(tmp_path / "f2") == ["add x.txt"])


@pytest.mark.trio
async def test_cancelling_a_running_folder_sync_is_fast(tmp_path, identity):
    folder = make_folder(tmp_path / "quick", identity, {"a.txt": b"a"})
    async with trio.open_nursery() as nursery:
        await nursery.start(folder_sync(folder, identity, Observed()).run)
        await trio.sleep(0.5)  # the watcher thread is waiting inside watchfiles
        started = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - started < 0.3


@pytest.mark.trio
async def test_the_periodic_scan_commits_what_events_missed(tmp_path, identity):
    root = tmp_path / "scanned"
    folder = make_folder(root, identity, {"linked.txt": b"v1\n"})
    # A write through a hard link outside the folder raises no event in the folder's watch.
    outside = tmp_path / "outside-link.txt"
    os.link(root / "linked.txt", outside)
    observed = Observed()
    async with running(folder_sync(folder, identity, observed, scan_interval=1.0)):
        with open(outside, "r+b") as handle:
            handle.write(b"v2\n")
        await trio.sleep(0.6)
        assert observed.commits == []  # the watcher did not see it
        await wait_until(lambda: subjects(root)[-1:] == ["modify linked.txt"], timeout=2)

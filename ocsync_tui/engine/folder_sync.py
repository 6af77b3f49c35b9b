"""One shared folder inside the daemon: its watcher, its committer and its one writer.

Filesystem events (watchfiles) mark paths as touched; a path is committed once it is stable: no event
for SETTLE_SECONDS and the same (size, mtime_ns) as when last seen, so a file still being written is
never committed torn. Whatever is stable at that moment goes to commit_pending as one batch, so a burst
of thousands of files is a few committer runs, not one per file. A full scan at start and every
`scan_interval` seconds catches what the events missed.

Every git write for the folder (these commits, and the exchange's bundle applies and bundle creations
through `write`) runs one at a time, in FIFO order, in a worker thread, under `folder_writer` (the
folder lock, after finishing any interrupted apply). Start follows "commit before you merge": the
journal is finished and everything changed while the daemon was stopped is committed before `run`
reports started, so nothing reaches a peer before this device's own edits are history.

A missing folder marker, a vanished folder directory or a repository that is not this folder stops the
folder: nothing more is committed or written, `on_stopped` says why once, and `stopped` is True.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio
from watchfiles import awatch

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdentity
from ocsync_tui.vcs.checkout import is_temp_name
from ocsync_tui.vcs.committer import CommitRecord, CommitReport, MarkerMissingError, commit_pending
from ocsync_tui.vcs.folder import FolderRepo, ForeignRepositoryError, MarkerMismatchError, NotAFolderError
from ocsync_tui.vcs.ignore import IGNORE_FILE
from ocsync_tui.vcs.journal import JournalError
from ocsync_tui.vcs.lock import FolderLockedError
from ocsync_tui.vcs.paths import FOLDER_MARKER
from ocsync_tui.vcs.writer import folder_writer

if TYPE_CHECKING:
    from ocsync_tui.store.database import Folder

log = logging.getLogger("ocsync.folder_sync")

# A path is committed once it saw no event for this long and its (size, mtime_ns) did not change.
SETTLE_SECONDS = 0.1
# While other paths are still being touched, settled ones wait at most this long for them to settle too.
BURST_WAIT_SECONDS = 1.0
# watchfiles hands over a set of changes once no new one arrived for WATCH_STEP_MS, and at the latest
# after WATCH_DEBOUNCE_MS while changes keep coming; its thread wakes every WATCH_TIMEOUT_MS when idle.
WATCH_STEP_MS = 20
WATCH_DEBOUNCE_MS = 200
WATCH_TIMEOUT_MS = 1000
# Another process holds the folder lock (`ocsync init`, a CLI run without the daemon): try again after.
LOCKED_RETRY_SECONDS = 0.5
# Any other failure of a commit run (a full disk, an unreadable repository) is retried this long after.
FAILED_RETRY_SECONDS = 5.0
# Touched in .git until the watcher reports it, proving that events are delivered.
WATCH_PROBE = "ocsync-watch-probe"
WATCH_PROBE_SECONDS = 0.05

_GIT_DIR_NAMES = frozenset({".git", "git~1"})
_STOPPING_ERRORS = (MarkerMissingError, NotAFolderError, ForeignRepositoryError, MarkerMismatchError, JournalError)

T = TypeVar("T")
StatKey = tuple[int, int] | None


class FolderStoppedError(OcsyncError):
    """The folder stopped syncing (missing marker, vanished directory); nothing is written to it."""


class _FolderUnusable(Exception):
    """Raised in the writer thread: the folder must stop (it is gone, unmarked, or another folder)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Touched:
    last_event: float  # trio time of the last event or the last time its stat was seen to change
    stat: StatKey


def _stat_key(path: str) -> StatKey:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_size, st.st_mtime_ns)


class FolderSync:
    """Watches one folder, commits its changes, and is the only writer of its repository.

    Callbacks run in the trio thread and must not block:
    - `on_committed(head, records)` after each committer run that made commits (head: hex id of main);
    - `on_stopped(reason)` once, when the folder stops (a one-line reason);
    - `on_held_deletions(paths)` when a run held a mass deletion (more than half of the files, and more
      than 10) instead of committing it; again only when the held set changes. `commit_now(
      confirm_deletions=True)` commits them.
    """

    def __init__(
        self,
        folder: Folder,
        identity: DeviceIdentity,
        *,
        on_committed: Callable[[str, list[CommitRecord]], None],
        clock: Callable[[], float] = time.time,
        scan_interval: float = 3600,
        on_stopped: Callable[[str], None] | None = None,
        on_held_deletions: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.folder_id = folder.folder_id
        self.name = folder.name
        self.path = Path(folder.path).resolve()  # watchfiles reports paths under the one it watches
        self.identity = identity
        self.clock = clock
        self.scan_interval = scan_interval
        self.on_committed = on_committed
        self.on_stopped = on_stopped
        self.on_held_deletions = on_held_deletions
        self.stopped = False
        self.stop_reason: str | None = None
        self._writer = trio.StrictFIFOLock()  # writes run in the order they were asked for
        self._stopped_event = trio.Event()
        self._touched: dict[str, _Touched] = {}
        self._touched_changed = trio.Event()
        self._watching = trio.Event()
        self._held: list[str] = []
        self._root_text = str(self.path)

    # -- the one writer --------------------------------------------------------------------------

    async def write(self, fn: Callable[[FolderRepo], T]) -> T:
        """Run `fn(folder_repo)` in a worker thread as the folder's only writer (FIFO) and return its
        result; what `fn` raises is raised here. Raises FolderStoppedError if the folder is stopped, or
        stops now (FolderLockedError if another process holds the folder's lock)."""
        async with self._writer:
            if self.stopped:
                raise FolderStoppedError(f"folder {self.name!r} is stopped: {self.stop_reason}")
            try:
                return await trio.to_thread.run_sync(self._under_writer, fn)
            except _FolderUnusable as unusable:
                self._stop(unusable.reason)
                raise FolderStoppedError(f"folder {self.name!r} is stopped: {unusable.reason}") from None

    def _under_writer(self, fn: Callable[[FolderRepo], T]) -> T:
        with ExitStack() as stack:
            try:
                folder = stack.enter_context(folder_writer(self.path))
                stack.callback(folder.close)
                self._check_folder(folder)
            except _STOPPING_ERRORS as error:
                raise _FolderUnusable(str(error)) from None
            try:
                return fn(folder)
            except MarkerMissingError as error:  # the committer found tracked files gone with the marker
                raise _FolderUnusable(str(error)) from None

    def _check_folder(self, folder: FolderRepo) -> None:
        if folder.folder_id != self.folder_id:
            raise MarkerMismatchError(
                f"{self.path} now holds folder {folder.folder_id}, not folder {self.folder_id}; "
                "was another folder moved there?"
            )
        if not folder.marker_present:
            raise MarkerMissingError(
                f"{self.path / FOLDER_MARKER} is missing: is the folder's disk unmounted? If the folder is "
                f"really there, restore the marker with `ocsync init {self.path}`"
            )

    def _stop(self, reason: str) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.stop_reason = reason
        log.warning("folder %s stopped: %s", self.name, reason)
        self._stopped_event.set()
        if self.on_stopped is not None:
            self.on_stopped(reason)

    # -- committing --------------------------------------------------------------------------------

    async def commit_now(self, *, confirm_deletions: bool = False) -> CommitReport:
        """Commit every pending change now (a full scan); `confirm_deletions` commits held deletions.
        Raises FolderStoppedError if the folder is stopped, FolderLockedError if another process holds
        its lock."""
        return await self._commit(None, confirm_deletions=confirm_deletions)

    async def _commit(self, paths: list[str] | None, *, confirm_deletions: bool = False) -> CommitReport:
        def run(folder: FolderRepo) -> CommitReport:
            return commit_pending(
                folder, self.identity, paths=paths, confirm_deletions=confirm_deletions, clock=self.clock
            )

        report = await self.write(run)
        if report.committed:
            self.on_committed(report.committed[-1].commit_id, report.committed)
        if report.held_deletions != self._held and (report.held_deletions or paths is None):
            self._held = report.held_deletions
            if report.held_deletions and self.on_held_deletions is not None:
                self.on_held_deletions(report.held_deletions)
        return report

    async def _commit_until_done(self, paths: list[str] | None) -> None:
        """Commit, retrying while the folder is locked by another process or a run fails, until done or
        the folder stopped."""
        while not self.stopped:
            try:
                await self._commit(paths)
                return
            except FolderStoppedError:
                return
            except FolderLockedError as error:
                log.info("folder %s: %s", self.name, error)
                await trio.sleep(LOCKED_RETRY_SECONDS)
            except (OcsyncError, OSError) as error:
                log.error(
                    "folder %s: committing failed, trying again in %gs: %s", self.name, FAILED_RETRY_SECONDS, error
                )
                await trio.sleep(FAILED_RETRY_SECONDS)
            except Exception:
                # A bug in one folder's commit must not take down the daemon and every other folder.
                log.exception("folder %s: committing failed, trying again in %gs", self.name, FAILED_RETRY_SECONDS)
                await trio.sleep(FAILED_RETRY_SECONDS)

    # -- running -----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start watching, finish any interrupted apply and commit what changed while stopped, report
        started, then commit what changes until cancelled or until the folder stops (then return)."""
        async with trio.open_nursery() as nursery:
            # The watcher is up before the start's scan, so nothing written after that scan goes unseen.
            nursery.start_soon(self._watch)
            await self._until_watching()
            if not self.stopped:
                await self._commit_until_done(None)
            task_status.started()
            if not self.stopped:
                nursery.start_soon(self._commit_settled)
                nursery.start_soon(self._scan_periodically)
                await self._stopped_event.wait()
            nursery.cancel_scope.cancel()

    async def _until_watching(self) -> None:
        """Wait until watchfiles delivers events: it reports its first one, a touch of a probe file in .git."""
        probe = self.path / ".git" / WATCH_PROBE
        while not self._watching.is_set() and not self.stopped:
            try:
                probe.touch()
            except OSError:
                pass  # then the watcher's first idle timeout says it is up
            with trio.move_on_after(WATCH_PROBE_SECONDS):
                await self._watching.wait()

    async def _watch(self) -> None:
        # watchfiles waits in a worker thread that holds one of trio's default worker-thread tokens for
        # as long as the folder runs (it takes no limiter): add one, so forty folders do not starve every
        # other to_thread call of the daemon.
        limiter = trio.to_thread.current_default_thread_limiter()
        limiter.total_tokens += 1
        try:
            await self._watch_until_cancelled()
        finally:
            limiter.total_tokens -= 1

    async def _watch_until_cancelled(self) -> None:
        # A trio cancellation cannot interrupt watchfiles' thread: only its stop_event ends the wait at
        # once (else it lasts until the next event or WATCH_TIMEOUT_MS), so it is set the moment this
        # task is cancelled.
        stop_watching = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_when_cancelled, stop_watching)
            try:
                async for changes in awatch(
                    self._root_text,
                    watch_filter=None,
                    debounce=WATCH_DEBOUNCE_MS,
                    step=WATCH_STEP_MS,
                    stop_event=stop_watching,
                    rust_timeout=WATCH_TIMEOUT_MS,
                    yield_on_timeout=True,
                    ignore_permission_denied=True,  # the committer's walk reports unreadable directories
                ):
                    self._watching.set()  # its first yield: events are being delivered from now on
                    self._note_changes(path for _, path in changes)
            except OSError as error:  # watchfiles cannot watch a directory that is not there
                self._stop(f"cannot watch {self.path}: {error.strerror or error}")
            nursery.cancel_scope.cancel()

    def _note_changes(self, paths: Iterable[str]) -> None:
        now = trio.current_time()
        check_folder = rescan = False
        for path in paths:
            relpath = self._relative(path)
            if relpath is None:
                check_folder = True  # the folder itself changed: removed, or replaced
                continue
            parts = relpath.split("/")
            if any(part.lower() in _GIT_DIR_NAMES for part in parts):
                continue
            if any(is_temp_name(os.fsencode(part)) for part in parts):
                continue  # ours: a checkout's file before its rename, or a leftover of a killed init
            if relpath == FOLDER_MARKER:
                check_folder = True
                continue
            if relpath == IGNORE_FILE:
                rescan = True  # files the old rules ignored may be wanted now
            if "\ufffd" in relpath:
                # watchfiles reports names that are not UTF-8 lossily; the parent directory is exact.
                relpath = relpath.rsplit("/", 1)[0] if "/" in relpath else ""
                if not relpath or "\ufffd" in relpath:
                    rescan = True
                    continue
            self._touched[relpath] = _Touched(now, _stat_key(os.path.join(self._root_text, relpath)))
            self._touched_changed.set()
        if check_folder:
            self._touched[""] = _Touched(now, None)  # settles like any path: a check with no commit
            self._touched_changed.set()
        if rescan:
            self._touched["."] = _Touched(now, None)
            self._touched_changed.set()

    def _relative(self, path: str) -> str | None:
        root = self._root_text
        if path.startswith(root + os.sep):
            return path[len(root) + 1 :].replace(os.sep, "/")
        return None

    async def _commit_settled(self) -> None:
        ready: dict[str, None] = {}  # settled paths in the order they settled
        ready_since = 0.0
        while True:
            if not self._touched and not ready:
                await self._touched_changed.wait()
                self._touched_changed = trio.Event()
                continue
            now = trio.current_time()
            if not ready:
                ready_since = now
            ready.update(dict.fromkeys(self._take_settled(now)))
            # While events keep coming (an unzip, a copy), settled paths wait for more to join them, up
            # to BURST_WAIT_SECONDS: a burst becomes a few committer runs, not one per tick.
            busy = bool(self._touched)
            if ready and (not busy or now - ready_since >= BURST_WAIT_SECONDS):
                await self._commit_ready(list(ready))
                ready.clear()
                continue
            wake = min(touched.last_event for touched in self._touched.values()) + SETTLE_SECONDS
            if ready:
                wake = min(wake, ready_since + BURST_WAIT_SECONDS)
            await trio.sleep_until(wake)

    async def _commit_ready(self, settled: list[str]) -> None:
        # A file the committer finds changing while it reads it is skipped, not committed torn; that
        # change raises an event of its own, so the file is touched again and committed once it settles.
        full_scan = "." in settled or "" in settled
        await self._commit_until_done(None if full_scan else sorted(settled))

    def _take_settled(self, now: float) -> list[str]:
        """Remove and return the touched paths that are stable now; a path whose stat changed since it
        was last seen is still being written and waits another SETTLE_SECONDS."""
        settled = []
        for relpath, touched in list(self._touched.items()):
            if touched.last_event + SETTLE_SECONDS > now:
                continue
            stat = None if relpath in ("", ".") else _stat_key(os.path.join(self._root_text, relpath))
            del self._touched[relpath]
            if stat == touched.stat:
                settled.append(relpath)
            else:
                self._touched[relpath] = _Touched(now, stat)
        return settled

    async def _scan_periodically(self) -> None:
        while True:
            await trio.sleep(self.scan_interval)
            await self._commit_until_done(None)


async def _set_when_cancelled(event: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        event.set()

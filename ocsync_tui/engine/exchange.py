"""The exchange with one peer, for every folder shared with it: a sans-I/O core (DESIGN.md "Exchange").

The daemon keeps one `ExchangeCore` per peer and feeds it what happens: local head moves, the peer's
messages (decoded by `messages.decode`), bundle blobs offered and received, the results of the git
work it asked for, and time (`get_timer()` / `handle_timer(now)`, as the net/ cores do). Every method
returns a list of actions (the dataclasses below) for the daemon to carry out, in order; the results
of ComputeHaves, MakeBundle and ApplyBundle come back through `haves_computed`, `bundle_made` /
`bundle_failed_to_make` and `bundle_applied` / `apply_failed`.

One exchange, as in the seed, A pulls from B, then B from A:
  A: Pull(haves) → B: a bundle of what A lacks (or UpToDate) → A: apply, Applied(new head) → B records
  the acknowledged head for A (only now), and pulls from A if A's head is not its own.
A `Changed` from the peer, an `Applied` naming another head and a full exchange (window opening, peer
reachable again, `ocsync sync`) start pulls; a local commit sends `Changed`.

What the core enforces:
- Folders: only those `is_shared(folder_id)` says are shared with this peer (and syncing); a Pull for
  another folder is answered by Refused, anything else about it is ignored.
- Requests: a bundle is taken only as the answer to the pull in flight for its folder and request id;
  anything else is dropped unread. One pull in flight per folder; a Changed arriving meanwhile with a
  head the pull may not bring causes one more pull after it.
- Windows: while `window_open()` is false nothing about folder contents leaves (no Changed, Pull, bundle,
  UpToDate, Refused or Applied); a Pull from the peer is ignored, a wanted pull and an announcement wait
  for the next full exchange, and `window_closed` drops bundles on their way. Only a full exchange with
  `ignore_window=True` (the user's `ocsync sync`) pulls anyway. Share offers and unshares are no folder
  data and always go.
- Missing prerequisites at apply time start a fresh negotiation (a new Pull with current haves), a
  few times in a row at most; a request without an answer times out and is retried later, backing off.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ocsync_tui.engine.messages import (
    MAX_REASON_CHARS,
    Applied,
    BundleMeta,
    Changed,
    Message,
    Pull,
    Refused,
    ShareOffer,
    Unshare,
    UpToDate,
    encode_bundle_meta,
)
from ocsync_tui.vcs.negotiation import MAX_HAVES

ANSWER_TIMEOUT = 30.0  # from Pull to the answer (UpToDate, Refused or the bundle's offer)
# A bundle on its way, from its offer or its last progress. Progress comes every 100 ms while bytes
# move; silence this long means the transfer is dead (a giver that restarted forgot it). Giving up is
# cheap: the next pull gets the same bundle (same bytes, same SHA-256) and resumes the partial file.
TRANSFER_IDLE_TIMEOUT = 20.0
KEEP_BUNDLE_FOR = 3600.0  # the giver keeps an unacknowledged bundle so an interrupted transfer resumes
RETRY_FIRST = 5.0
RETRY_MAX = 600.0
MAX_RENEGOTIATIONS = 3

NOT_SHARED = "this folder is not shared with you"


# --- actions: what the daemon does ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send `messages.encode(message)` to the peer as a blob of kind "ocsync/msg"."""

    message: Message


@dataclass(frozen=True, slots=True)
class ComputeHaves:
    """Compute `negotiation.haves(folder)`, then call `haves_computed(folder_id, request_id, haves, now)`."""

    folder_id: str
    request_id: int


@dataclass(frozen=True, slots=True)
class MakeBundle:
    """Run `negotiation.bundle_for(folder, haves, out)` in the folder's writer, then call
    `bundle_made(folder_id, request_id, out or None, head, now)` (head: the bundle's head, or the
    folder's head when there is no bundle), or `bundle_failed_to_make(..., reason, now)` on a BundleError."""

    folder_id: str
    request_id: int
    haves: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendBundle:
    """Offer the bundle file as a blob of kind "ocsync/bundle" named `name`; keep the file until a
    DiscardBundle names it (the transfer resumes from it)."""

    folder_id: str
    request_id: int
    path: Path
    name: str


@dataclass(frozen=True, slots=True)
class DiscardBundle:
    """A bundle we made is not needed any more: cancel its transfer if it still runs, delete the file."""

    folder_id: str
    path: Path


@dataclass(frozen=True, slots=True)
class CancelIncomingBundle:
    """Cancel the incoming bundle transfer for this request, if any (a received file will be dropped)."""

    folder_id: str
    request_id: int


@dataclass(frozen=True, slots=True)
class ApplyBundle:
    """Run `apply_bundle(folder, identity, path, peer_name=format_device_id(<the session's key>))` in the
    folder's writer (refs/peers/DEVICE names come from the session, and a device ID is a valid ref name),
    then call `bundle_applied(folder_id, new_head, now)`, or `apply_failed(folder_id,
    isinstance(error, MissingPrerequisites), now, str(error))` on an OcsyncError; then delete the
    received file."""

    folder_id: str
    request_id: int
    path: Path


@dataclass(frozen=True, slots=True)
class DropReceivedBundle:
    """Delete a received bundle file without applying it."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class RecordAckedHead:
    """`store.set_acked_head(folder_id, peer_name, head)`: the peer applied up to `head`."""

    folder_id: str
    head: str


@dataclass(frozen=True, slots=True)
class RecordOffer:
    """`store.add_offer(peer_name, folder_id, folder_name)`: the peer shares a folder with us."""

    folder_id: str
    folder_name: str


@dataclass(frozen=True, slots=True)
class DropShare:
    """The peer stopped sharing the folder: `store.remove_offer` and `store.unshare` for this peer."""

    folder_id: str


PullOutcome = Literal["applied", "up-to-date", "refused", "timed-out", "failed", "abandoned"]


@dataclass(frozen=True, slots=True)
class PullEnded:
    """For the event log and the TUI: a pull from the peer ended (`detail` is one line)."""

    folder_id: str
    outcome: PullOutcome
    detail: str


Action = (
    SendMessage | ComputeHaves | MakeBundle | SendBundle | DiscardBundle | CancelIncomingBundle | ApplyBundle
    | DropReceivedBundle | RecordAckedHead | RecordOffer | DropShare | PullEnded
)


# --- state ----------------------------------------------------------------------------------------

PullStage = Literal["haves", "asked", "receiving", "applying"]


@dataclass
class _Pull:
    request_id: int
    stage: PullStage
    forced: bool
    renegotiations: int = 0
    deadline: float | None = None
    giver_head: str | None = None


@dataclass
class _Giving:
    request_id: int
    path: Path | None = None  # None while the bundle is being made
    deadline: float | None = None


@dataclass
class _FolderState:
    local_head: str | None = None
    peer_head: str | None = None  # the last head the peer told us of
    told_head: str | None = None  # the last head we told the peer of
    pull: _Pull | None = None
    heads_meanwhile: set[str] = field(default_factory=set)  # announced by the peer during the pull
    pull_wanted: bool = False  # at the end of the current pull, or at the next full exchange
    announce_wanted: bool = False  # our head moved while the window was closed
    owed_applied: str | None = None  # applied while the window closed: acknowledge at the next exchange
    retry_at: float | None = None
    failures: int = 0
    giving: _Giving | None = None


def _one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    line = " ".join(text.split()) or "no reason given"
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ExchangeCore:
    """The exchange with one peer. `is_shared(folder_id)`: the folder is shared with this peer and
    syncing; `window_open()`: this peer's sync window is open now. `request_ids` makes request ids
    (random 63-bit integers by default)."""

    def __init__(
        self,
        is_shared: Callable[[str], bool],
        window_open: Callable[[], bool],
        *,
        answer_timeout: float = ANSWER_TIMEOUT,
        transfer_idle_timeout: float = TRANSFER_IDLE_TIMEOUT,
        keep_bundle_for: float = KEEP_BUNDLE_FOR,
        request_ids: Callable[[], int] | None = None,
    ) -> None:
        self._is_shared = is_shared
        self._window_open = window_open
        self.answer_timeout = answer_timeout
        self.transfer_idle_timeout = transfer_idle_timeout
        self.keep_bundle_for = keep_bundle_for
        self._request_ids = request_ids or (lambda: secrets.randbits(63))
        self._folders: dict[str, _FolderState] = {}

    def _folder(self, folder_id: str) -> _FolderState:
        return self._folders.setdefault(folder_id, _FolderState())

    # --- what the daemon reports ----------------------------------------------------------------

    def changed_locally(self, folder_id: str, head: str, now: float) -> list[Action]:
        """The folder's head moved here (a commit, an apply, a CLI command)."""
        state = self._folder(folder_id)
        state.local_head = head
        if not self._is_shared(folder_id) or head in (state.told_head, state.peer_head):
            return []
        if not self._window_open():
            state.announce_wanted = True
            return []
        return self._announce(folder_id, state)

    def full_exchange(
        self, local_heads: Mapping[str, str | None], now: float, *, ignore_window: bool = False
    ) -> list[Action]:
        """A full exchange of every folder in `local_heads` ({folder id: our head or None if unknown})
        and of whatever waited for the window: at a window's start, when the peer becomes reachable,
        and for `ocsync sync` (ignore_window=True pulls even outside the window)."""
        for folder_id, head in local_heads.items():
            if head is not None:
                self._folder(folder_id).local_head = head
        actions: list[Action] = []
        may_talk = ignore_window or self._window_open()
        for folder_id in list(dict.fromkeys([*local_heads, *self._folders])):
            state = self._folder(folder_id)
            if not self._is_shared(folder_id):
                continue
            if may_talk and state.owed_applied is not None:
                actions.append(SendMessage(Applied(folder_id, state.owed_applied)))
                state.told_head, state.owed_applied = state.owed_applied, None
            if folder_id in local_heads or state.pull_wanted:
                actions += self._start_pull(folder_id, state, now, forced=ignore_window)
            if state.announce_wanted and self._window_open():
                actions += self._announce(folder_id, state)
        return actions

    def window_closed(self, now: float) -> list[Action]:
        """The peer's window closed: bundles on their way stop; pulls resume at the next full exchange."""
        actions: list[Action] = []
        for folder_id, state in self._folders.items():
            actions += self._stop_giving(folder_id, state)
            pull = state.pull
            if pull is not None and not pull.forced and pull.stage != "applying":
                actions += self._abandon_pull(folder_id, state, "the sync window closed")
                state.pull_wanted = True
        return actions

    def offer_share(self, folder_id: str, folder_name: str) -> list[Action]:
        """We share the folder with this peer (the seed's Send)."""
        return [SendMessage(ShareOffer(folder_id, folder_name))]

    def withdraw_share(self, folder_id: str, now: float) -> list[Action]:
        """We stopped sharing the folder with this peer: drop what is under way and tell it."""
        state = self._folders.pop(folder_id, None) or _FolderState()
        actions: list[Action] = self._stop_giving(folder_id, state)
        if state.pull is not None:
            actions += self._abandon_pull(folder_id, state, "the folder is no longer shared")
        return [*actions, SendMessage(Unshare(folder_id))]

    def message_received(self, message: Message, now: float) -> list[Action]:
        """A message from the peer (already decoded and validated)."""
        if isinstance(message, ShareOffer):
            return [] if self._is_shared(message.folder_id) else [RecordOffer(message.folder_id, message.folder_name)]
        if isinstance(message, Unshare):
            state = self._folders.pop(message.folder_id, None) or _FolderState()
            actions = self._stop_giving(message.folder_id, state)
            if state.pull is not None:
                actions += self._abandon_pull(message.folder_id, state, "the peer stopped sharing the folder")
            return [*actions, DropShare(message.folder_id)]
        if isinstance(message, Pull):
            return self._pull_received(message, now)
        if not self._is_shared(message.folder_id):
            return []
        state = self._folder(message.folder_id)
        if isinstance(message, Changed):
            return self._peer_moved(message.folder_id, state, message.head, now)
        if isinstance(message, Applied):
            # A bundle still being made answers a newer Pull (messages may overtake each other): keep it.
            sent = state.giving is not None and state.giving.path is not None
            actions: list[Action] = self._stop_giving(message.folder_id, state) if sent else []
            actions.append(RecordAckedHead(message.folder_id, message.head))
            return actions + self._peer_moved(message.folder_id, state, message.head, now)
        pull = state.pull
        if pull is None or pull.request_id != message.request_id or pull.stage != "asked":
            return []
        if isinstance(message, UpToDate):
            if message.head is not None:
                state.peer_head = message.head
            actions = self._end_pull(message.folder_id, state, "up-to-date", "already up to date", now,
                                     fetched_head=message.head)
            if state.local_head is not None and state.local_head != message.head and self._may_talk(pull):
                actions += self._announce(message.folder_id, state)  # then B pulls from A
            return actions
        return self._end_pull(message.folder_id, state, "refused", message.reason, now)

    def bundle_offered(self, meta: BundleMeta, now: float) -> bool:
        """The peer offers a bundle blob (metadata decoded by `messages.decode_bundle_meta`): True to
        accept it, False to decline. Accepting moves the pull from the answer timeout to the transfer's
        idle timeout, which `bundle_progress` pushes back."""
        if not self._expects_bundle(meta):
            return False
        pull = self._folders[meta.folder_id].pull
        pull.stage, pull.giver_head = "receiving", meta.head
        pull.deadline = now + self.transfer_idle_timeout
        return True

    def bundle_progress(self, meta: BundleMeta, now: float) -> None:
        """Bytes of the incoming bundle arrived: it is not stuck."""
        state = self._folders.get(meta.folder_id)
        pull = state.pull if state is not None else None
        if pull is not None and pull.request_id == meta.request_id and pull.stage == "receiving":
            pull.deadline = now + self.transfer_idle_timeout

    def bundle_received(self, meta: BundleMeta, path: Path, now: float) -> list[Action]:
        """A bundle blob arrived whole (its SHA-256 checked by the transport)."""
        if not self._expects_bundle(meta):
            return [DropReceivedBundle(path, "no pull of ours asked for this bundle")]
        pull = self._folders[meta.folder_id].pull
        pull.stage, pull.giver_head, pull.deadline = "applying", meta.head, None
        return [ApplyBundle(meta.folder_id, meta.request_id, path)]

    def bundle_failed(self, meta: BundleMeta, reason: str, now: float) -> list[Action]:
        """The incoming bundle's transfer failed or was cancelled: pull again later."""
        state = self._folders.get(meta.folder_id)
        pull = state.pull if state is not None else None
        if pull is None or pull.request_id != meta.request_id or pull.stage not in ("asked", "receiving"):
            return []
        return self._end_pull(meta.folder_id, state, "failed", f"the bundle transfer failed: {reason}", now,
                              retry=True)

    def haves_computed(self, folder_id: str, request_id: int, haves: list[str], now: float) -> list[Action]:
        """`negotiation.haves(folder)` for the pull ComputeHaves started."""
        state = self._folders.get(folder_id)
        pull = state.pull if state is not None else None
        if pull is None or pull.request_id != request_id or pull.stage != "haves":
            return []
        if not self._is_shared(folder_id) or not self._may_talk(pull):
            state.pull_wanted = True
            return self._abandon_pull(folder_id, state, "the sync window closed")
        pull.stage, pull.deadline = "asked", now + self.answer_timeout
        return [SendMessage(Pull(folder_id, request_id, tuple(haves[:MAX_HAVES])))]

    def bundle_made(
        self, folder_id: str, request_id: int, path: Path | None, head: str | None, now: float
    ) -> list[Action]:
        """The bundle for the peer's Pull is at `path` with `head`; None: the peer has our head already."""
        state = self._folders.get(folder_id)
        giving = state.giving if state is not None else None
        if giving is None or giving.request_id != request_id or giving.path is not None:
            return [DiscardBundle(folder_id, path)] if path is not None else []  # superseded meanwhile
        if not self._window_open() or not self._is_shared(folder_id):
            state.giving = None
            return [DiscardBundle(folder_id, path)] if path is not None else []
        if path is None:
            state.giving = None
            return [SendMessage(UpToDate(folder_id, request_id, head))]
        if head is None:
            raise ValueError("a bundle has a head")
        giving.path, giving.deadline = path, now + self.keep_bundle_for
        return [SendBundle(folder_id, request_id, path, encode_bundle_meta(BundleMeta(folder_id, request_id, head)))]

    def bundle_failed_to_make(self, folder_id: str, request_id: int, reason: str, now: float) -> list[Action]:
        """MakeBundle raised a BundleError (`reason`: its message): the peer is told, in one line."""
        state = self._folders.get(folder_id)
        giving = state.giving if state is not None else None
        if giving is None or giving.request_id != request_id:
            return []
        state.giving = None
        if not self._window_open():
            return []
        return [SendMessage(Refused(folder_id, request_id, _one_line(f"the giver cannot bundle the folder: {reason}")))]

    def bundle_applied(self, folder_id: str, head: str, now: float) -> list[Action]:
        """The bundle of the pull in flight is applied; `head` is the folder's head now."""
        state = self._folder(folder_id)
        pull = state.pull
        if pull is None or pull.stage != "applying":
            return self.changed_locally(folder_id, head, now)
        state.local_head = head
        actions: list[Action] = []
        if self._may_talk(pull):
            actions.append(SendMessage(Applied(folder_id, head)))
            state.told_head = head
        else:
            state.owed_applied = head
        return actions + self._end_pull(folder_id, state, "applied", f"now at {head[:10]}", now,
                                        fetched_head=pull.giver_head)

    def apply_failed(self, folder_id: str, missing_prerequisites: bool, now: float, reason: str = "") -> list[Action]:
        """Applying the bundle failed (`reason`: the error's message); missing prerequisites start a fresh
        negotiation, a few times in a row at most."""
        state = self._folders.get(folder_id)
        pull = state.pull if state is not None else None
        if pull is None or pull.stage != "applying":
            return []
        if missing_prerequisites and pull.renegotiations < MAX_RENEGOTIATIONS:
            state.pull = None
            actions = self._start_pull(folder_id, state, now, forced=pull.forced)
            if state.pull is not None:
                state.pull.renegotiations = pull.renegotiations + 1
            return actions
        return self._end_pull(folder_id, state, "failed", reason or "the bundle did not apply", now, retry=True)

    # --- time -----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` should run next, or None."""
        deadlines = [
            deadline
            for state in self._folders.values()
            for deadline in (
                state.retry_at,
                state.pull.deadline if state.pull is not None else None,
                state.giving.deadline if state.giving is not None else None,
            )
            if deadline is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for folder_id, state in list(self._folders.items()):
            pull, giving = state.pull, state.giving
            if pull is not None and pull.deadline is not None and pull.deadline <= now:
                if pull.stage == "receiving":
                    actions.append(CancelIncomingBundle(folder_id, pull.request_id))
                actions += self._end_pull(folder_id, state, "timed-out", "the peer did not answer in time", now,
                                          retry=True)
            if giving is not None and giving.deadline is not None and giving.deadline <= now:
                actions += self._stop_giving(folder_id, state)
            if state.retry_at is not None and state.retry_at <= now:
                state.retry_at = None
                actions += self._start_pull(folder_id, state, now, forced=False)
        return actions

    # --- inside ---------------------------------------------------------------------------------

    def _may_talk(self, pull: _Pull) -> bool:
        return pull.forced or self._window_open()

    def _expects_bundle(self, meta: BundleMeta) -> bool:
        """Only the answer to our pull in flight for its folder is taken."""
        state = self._folders.get(meta.folder_id)
        pull = state.pull if state is not None else None
        return (
            pull is not None
            and pull.request_id == meta.request_id
            and pull.stage in ("asked", "receiving")
            and self._is_shared(meta.folder_id)
            and self._may_talk(pull)
        )

    def _announce(self, folder_id: str, state: _FolderState) -> list[Action]:
        state.announce_wanted = False
        if state.local_head is None:
            return []
        state.told_head = state.local_head
        return [SendMessage(Changed(folder_id, state.local_head))]

    def _peer_moved(self, folder_id: str, state: _FolderState, head: str, now: float) -> list[Action]:
        state.peer_head = head
        if head == state.local_head:
            return []
        if state.pull is not None:
            state.heads_meanwhile.add(head)
            return []
        return self._start_pull(folder_id, state, now, forced=False)

    def _start_pull(self, folder_id: str, state: _FolderState, now: float, *, forced: bool) -> list[Action]:
        if not self._is_shared(folder_id):
            state.pull_wanted = False
            return []
        if state.pull is not None or not (forced or self._window_open()):
            state.pull_wanted = True
            return []
        request_id = self._request_ids()
        state.pull = _Pull(request_id, "haves", forced)
        state.pull_wanted, state.retry_at = False, None
        state.heads_meanwhile.clear()
        return [ComputeHaves(folder_id, request_id)]

    def _end_pull(
        self,
        folder_id: str,
        state: _FolderState,
        outcome: PullOutcome,
        detail: str,
        now: float,
        *,
        fetched_head: str | None = None,
        retry: bool = False,
    ) -> list[Action]:
        state.pull = None
        actions: list[Action] = [PullEnded(folder_id, outcome, _one_line(detail))]
        if retry:
            state.failures += 1
            state.retry_at = now + min(RETRY_FIRST * 2 ** (state.failures - 1), RETRY_MAX)
            return actions
        state.failures = 0
        newer = state.heads_meanwhile - {fetched_head, state.local_head}
        if state.pull_wanted or newer:
            actions += self._start_pull(folder_id, state, now, forced=False)
        return actions

    def _abandon_pull(self, folder_id: str, state: _FolderState, reason: str) -> list[Action]:
        pull = state.pull
        state.pull = None
        actions: list[Action] = []
        if pull is not None and pull.stage == "receiving":
            actions.append(CancelIncomingBundle(folder_id, pull.request_id))
        return [*actions, PullEnded(folder_id, "abandoned", reason)]

    def _stop_giving(self, folder_id: str, state: _FolderState) -> list[Action]:
        giving, state.giving = state.giving, None
        return [DiscardBundle(folder_id, giving.path)] if giving is not None and giving.path is not None else []

    def _pull_received(self, message: Pull, now: float) -> list[Action]:
        if not self._window_open():
            return []
        if not self._is_shared(message.folder_id):
            return [SendMessage(Refused(message.folder_id, message.request_id, NOT_SHARED))]
        state = self._folder(message.folder_id)
        # The peer has one pull in flight per folder: a new one supersedes the bundle of the last.
        actions = self._stop_giving(message.folder_id, state)
        state.giving = _Giving(message.request_id)
        return [*actions, MakeBundle(message.folder_id, message.request_id, message.haves)]

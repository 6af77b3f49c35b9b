"""Two exchange cores wired through an in-memory queue, with the actions carried out on real repositories.

Each `Side` is a device (tests/vcs/devices.py) with its ExchangeCore for the other side. The `Wire`
carries messages (encoded, then decoded as the daemon does) and bundle files (copied, as the
transport delivers a new file), in order, and executes every action with the real vcs functions, as
the daemon would: haves, bundle_for, apply_bundle. It records what each side sent and recorded.
"""

import itertools
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocsync_tui.engine import exchange as ex
from ocsync_tui.engine.messages import BundleMeta, Message, decode, decode_bundle_meta, encode
from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.apply import apply_bundle
from ocsync_tui.vcs.bundle import MissingPrerequisites
from ocsync_tui.vcs.folder import FolderRepo
from ocsync_tui.vcs.negotiation import bundle_for, haves
from ocsync_tui.vcs.writer import folder_writer
from tests.vcs.devices import Device

_names = itertools.count(1)


@dataclass
class Side:
    device: Device
    folder_id: str
    scratch: Path
    shared: set[str] = field(default_factory=set)
    window_is_open: bool = True
    core: ex.ExchangeCore = None  # type: ignore[assignment]
    sent_messages: list[Message] = field(default_factory=list)
    sent_bundles: list[BundleMeta] = field(default_factory=list)
    made_bundles: list[Path] = field(default_factory=list)
    acked: list[tuple[str, str]] = field(default_factory=list)
    offers: list[tuple[str, str]] = field(default_factory=list)
    dropped_shares: list[str] = field(default_factory=list)
    dropped_bundles: list[str] = field(default_factory=list)
    pulls_ended: list[ex.PullEnded] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.core = ex.ExchangeCore(lambda folder_id: folder_id in self.shared, lambda: self.window_is_open,
                                    request_ids=itertools.count(1000 * next(_names)).__next__)

    @property
    def name(self) -> str:
        return self.device.name

    def head(self) -> str | None:
        head = self.device.head()
        return head.decode() if head else None


class Wire:
    def __init__(self, a: Side, b: Side) -> None:
        self.a, self.b = a, b
        self.now = 0.0
        self.queue: deque[tuple[Side, str, Any, Path | None]] = deque()

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    # --- what a device does -------------------------------------------------------------------------

    def commit(self, side: Side, relpath: str, content: bytes) -> None:
        side.device.write(relpath, content)
        assert side.device.commit().committed
        self.run(side, side.core.changed_locally(side.folder_id, side.head(), self.now))

    def full_exchange(self, side: Side, **kwargs) -> None:
        self.run(side, side.core.full_exchange({side.folder_id: side.head()}, self.now, **kwargs))

    # --- delivery -----------------------------------------------------------------------------------

    def deliver_one(self, index: int = 0) -> None:
        """Deliver the oldest item, or the one at `index` (blobs may overtake each other)."""
        receiver, kind, payload, path = self.queue[index]
        del self.queue[index]
        if kind == "message":
            self.run(receiver, receiver.core.message_received(decode(payload), self.now))
            return
        meta = decode_bundle_meta(payload)
        if not receiver.core.bundle_offered(meta, self.now):
            receiver.dropped_bundles.append(payload)
            path.unlink()
            return
        self.run(receiver, receiver.core.bundle_received(meta, path, self.now))

    def deliver_all(self, limit: int = 200) -> int:
        delivered = 0
        while self.queue:
            assert delivered < limit, "the exchange does not settle"
            self.deliver_one()
            delivered += 1
        return delivered

    def settle(self, limit: int = 400) -> None:
        """Deliver everything and let every timer fire until nothing is left to do."""
        for _ in range(limit):
            if self.queue:
                self.deliver_one()
                continue
            timers = [timer for timer in (self.a.core.get_timer(), self.b.core.get_timer()) if timer is not None]
            if not timers:
                return
            self.advance(max(0.0, min(timers) - self.now))
        raise AssertionError("the exchange does not settle")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for side in (self.a, self.b):
            timer = side.core.get_timer()
            if timer is not None and timer <= self.now:
                self.run(side, side.core.handle_timer(self.now))

    # --- the daemon's part --------------------------------------------------------------------------

    def run(self, side: Side, actions: list[Any]) -> None:
        for action in actions:
            side.actions.append(action)
            self._execute(side, action)

    def _execute(self, side: Side, action: Any) -> None:
        core, peer = side.core, self.other(side)
        if isinstance(action, ex.SendMessage):
            side.sent_messages.append(action.message)
            self.queue.append((peer, "message", encode(action.message), None))
        elif isinstance(action, ex.ComputeHaves):
            listed = haves(FolderRepo.open(side.device.root))
            self.run(side, core.haves_computed(action.folder_id, action.request_id, listed, self.now))
        elif isinstance(action, ex.MakeBundle):
            out = side.scratch / f"{action.request_id}.bundle"
            with folder_writer(side.device.root) as folder:
                info = bundle_for(folder, list(action.haves), out)
                head = info.head if info else (folder.head() or b"").decode() or None
            side.made_bundles.append(out)
            made = out if info is not None else None
            self.run(side, core.bundle_made(action.folder_id, action.request_id, made, head, self.now))
        elif isinstance(action, ex.SendBundle):
            side.sent_bundles.append(decode_bundle_meta(action.name))
            on_the_wire = peer.scratch / f"incoming-{action.request_id}-{len(self.queue)}.bundle"
            shutil.copyfile(action.path, on_the_wire)
            self.queue.append((peer, "bundle", action.name, on_the_wire))
        elif isinstance(action, ex.DiscardBundle):
            action.path.unlink(missing_ok=True)
        elif isinstance(action, ex.CancelIncomingBundle):
            for item in [item for item in self.queue if item[0] is side and item[1] == "bundle"]:
                meta = decode_bundle_meta(item[2])
                if (meta.folder_id, meta.request_id) == (action.folder_id, action.request_id):
                    self.queue.remove(item)
        elif isinstance(action, ex.ApplyBundle):
            self.run(side, self._apply(side, action))
        elif isinstance(action, ex.DropReceivedBundle):
            side.dropped_bundles.append(action.reason)
            action.path.unlink(missing_ok=True)
        elif isinstance(action, ex.RecordAckedHead):
            side.acked.append((action.folder_id, action.head))
        elif isinstance(action, ex.RecordOffer):
            side.offers.append((action.folder_id, action.folder_name))
        elif isinstance(action, ex.DropShare):
            side.dropped_shares.append(action.folder_id)
            side.shared.discard(action.folder_id)
        elif isinstance(action, ex.PullEnded):
            side.pulls_ended.append(action)
        else:
            raise AssertionError(f"unknown action {action!r}")

    def _apply(self, side: Side, action: ex.ApplyBundle) -> list[Any]:
        peer = self.other(side)
        try:
            with folder_writer(side.device.root) as folder:
                apply_bundle(folder, side.device.identity, action.path, peer_name=peer.name)
                head = folder.head().decode()
        except MissingPrerequisites as error:
            return side.core.apply_failed(action.folder_id, True, self.now, str(error))
        except OcsyncError as error:
            return side.core.apply_failed(action.folder_id, False, self.now, str(error))
        finally:
            action.path.unlink(missing_ok=True)
        return side.core.bundle_applied(action.folder_id, head, self.now)

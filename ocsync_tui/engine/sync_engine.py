"""The engine: folders, peers and exchanges joined over one Endpoint, with the store as memory.

One `SyncEngine` per daemon. Its nursery runs the Endpoint, one FolderSync per folder, the event pump
(transport events → messages and bundles for the peers' exchange cores), the exchange timers and the
scheduler (sync windows). Everything that changes state runs in the trio thread, so the store and the
exchange cores need no locks; git work runs in each folder's one writer (FolderSync.write), and the
actions an exchange core returns are carried out by `_run_actions`, the only place that touches both.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ocsync_tui.engine import exchange as ex
from ocsync_tui.engine import messages
from ocsync_tui.engine.folder_sync import FolderSync
from ocsync_tui.engine.schedule import effective_window, window_is_open
from ocsync_tui.engine.time_of_day import MinuteSource
from ocsync_tui.engine.views import folder_view, offer_view, peer_view, transfer_view
from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdentity, format_device_id, parse_device_id
from ocsync_tui.net import events as net_events
from ocsync_tui.net.endpoint import Endpoint
from ocsync_tui.store.database import Folder, Peer, Store, TransferRecord, open_store
from ocsync_tui.vcs.apply import apply_bundle
from ocsync_tui.vcs.bundle import MissingPrerequisites
from ocsync_tui.vcs.folder import MARKER_NAME, FolderRepo
from ocsync_tui.vcs.negotiation import bundle_for, haves

log = logging.getLogger("ocsync.engine")

MESSAGE_KIND = "ocsync/msg"
BUNDLE_KIND = "ocsync/bundle"
DEFAULT_UDP_PORT = 44996
SCHEDULE_POLL_SECONDS = 1.0
# How often a stopped folder is looked at again: a disk that was unmounted may be back.
STOPPED_FOLDER_RETRY_SECONDS = 10.0
MAX_PENDING_DEVICES = 64
COMMIT_EVENT_LIST = 100


def _resolve(host: str, port: int) -> tuple[str, int] | None:
    """An IP literal as is; a name (dyndns) through the resolver, None when it does not resolve now."""
    try:
        ipaddress.ip_address(host)
        return (host, port)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    return (infos[0][4][0], port) if infos else None


class _PeerState:
    def __init__(self, name: str, public_key: bytes) -> None:
        self.name = name
        self.public_key = public_key
        self.exchange: ex.ExchangeCore | None = None
        self.reachable = False
        self.window_was_open: bool | None = None


class SyncEngine:
    def __init__(self, home: Path, identity: DeviceIdentity, *, udp_port: int, minute_of_day: MinuteSource) -> None:
        self.home = home
        self.identity = identity
        self.store: Store = open_store(home)
        self.minute_of_day = minute_of_day
        self.endpoint = Endpoint(identity.signing_key, state_dir=home / "transfers", port=udp_port)
        self.udp_port: int | None = None
        self.folders: dict[str, FolderSync] = {}
        self.heads: dict[str, str | None] = {}
        self._folder_scopes: dict[str, trio.CancelScope] = {}
        self.peers: dict[bytes, _PeerState] = {}
        self.pending_devices: dict[str, dict[str, Any]] = {}
        # (peer, direction, sha256) → {"rate_bps", "active"} of transfers moving now.
        self.transfer_activity: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.publish: Callable[[dict], None] = lambda event: None
        self._nursery: trio.Nursery | None = None
        self._timers_changed = trio.Event()
        # Bundles we make are remade on request (the same history gives the same bytes, so an
        # interrupted transfer still resumes by its SHA-256): nothing here outlives the daemon.
        self._bundle_dir = home / "outgoing"
        shutil.rmtree(self._bundle_dir, ignore_errors=True)
        self._bundle_dir.mkdir(parents=True)
        # Transfers and what they carry: (peer key, transfer id) → "message" | BundleMeta (incoming),
        # or the bundle file (outgoing).
        self._incoming: dict[tuple[bytes, int], Any] = {}
        self._incoming_info: dict[tuple[bytes, int], tuple[str, int]] = {}  # → (sha256 hex, size)
        self._outgoing_bundles: dict[tuple[bytes, int], tuple[Path, str]] = {}  # → (file, folder id)
        self._bundle_sha256: dict[Path, str] = {}  # bundles we made → their SHA-256 (hex), for progress
        from ocsync_tui.engine.commands import Commands

        self.commands = Commands(self)

    # --- start and stop -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[tuple] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Commit before you merge: every folder settles its journal and local changes first.
            for folder in self.store.folders():
                await self.start_folder(folder)
            address = await nursery.start(self.endpoint.run)
            self.udp_port = address[1]
            for peer in self.store.peers():
                self.register_peer(peer)
            nursery.start_soon(self._pump_transport_events)
            nursery.start_soon(self._run_exchange_timers)
            nursery.start_soon(self._run_scheduler)
            task_status.started(address)

    async def start_folder(self, folder: Folder) -> None:
        if folder.folder_id in self.folders:
            return
        folder_id = folder.folder_id
        sync = FolderSync(
            folder,
            self.identity,
            on_committed=lambda head, records: self._on_committed(folder_id, head, records),
            on_stopped=lambda reason: self._on_folder_stopped(folder_id, reason),
            on_held_deletions=lambda paths: log.warning(
                "%s: %d deletions held (more than half of the files); confirm with `ocsync commit %s "
                "--confirm-deletions`", folder.name, len(paths), folder.path),
        )
        scope = trio.CancelScope()
        self.folders[folder_id] = sync
        self._folder_scopes[folder_id] = scope
        try:
            self.heads[folder_id] = self._read_head(folder.path)
        except OcsyncError:
            self.heads[folder_id] = None

        async def run_folder(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await sync.run(task_status=task_status)

        await self._nursery.start(run_folder)
        if not sync.stopped and folder.state != "ok":
            self.store.set_folder_state(folder_id, "ok")
        self._emit_folder(folder_id, "changed")

    def stop_folder(self, folder_id: str) -> None:
        scope = self._folder_scopes.pop(folder_id, None)
        if scope is not None:
            scope.cancel()
        self.folders.pop(folder_id, None)
        self.heads.pop(folder_id, None)

    @staticmethod
    def _read_head(path: Path) -> str | None:
        head = FolderRepo.open(path).head()
        return head.decode("ascii") if head else None

    def folder_syncing(self, folder_id: str) -> bool:
        sync = self.folders.get(folder_id)
        return sync is not None and not sync.stopped

    # --- peers ----------------------------------------------------------------------------------

    def register_peer(self, peer: Peer) -> None:
        """Make a stored peer known to the endpoint: by key when confirmed, for introduction when pending."""
        address = self._peer_address(peer)
        if peer.pending:
            if address is not None:
                self.endpoint.allow_introduction_from(address)
                self.endpoint.start_introduction(address)
            return
        public_key = parse_device_id(peer.device_id)
        self.endpoint.add_peer(public_key, address)
        state = self.peers.get(public_key)
        if state is None:
            state = self.peers[public_key] = _PeerState(peer.name, public_key)
            state.exchange = ex.ExchangeCore(
                is_shared=lambda folder_id: self.folder_syncing(folder_id) and self.store.is_shared(folder_id, state.name),
                window_open=lambda: self.window_open(state.name),
            )
        state.name = peer.name
        if address is not None:
            self.endpoint.connect(public_key)

    def forget_peer(self, peer: Peer) -> None:
        if peer.device_id is not None:
            public_key = parse_device_id(peer.device_id)
            self.endpoint.remove_peer(public_key)
            self.peers.pop(public_key, None)

    def _peer_address(self, peer: Peer) -> tuple[str, int] | None:
        # A LAN address beats the public one when both are known (DESIGN.md: LAN > direct > relay).
        if peer.local_address:
            return _resolve(peer.local_address, peer.local_port or DEFAULT_UDP_PORT)
        if peer.address:
            return _resolve(peer.address, peer.port or DEFAULT_UDP_PORT)
        return None

    def peer_state(self, name: str) -> _PeerState | None:
        return next((state for state in self.peers.values() if state.name == name), None)

    def window_open(self, peer_name: str) -> bool:
        window = effective_window(self.store.window(None), self.store.window(peer_name))
        return window_is_open(window, self.minute_of_day())

    # --- what the exchanges are asked to do -----------------------------------------------------

    def sync_now(self, *, peer_name: str | None = None, folder_id: str | None = None,
                 ignore_window: bool = False) -> dict[str, list[dict[str, str]]]:
        started, skipped = [], []
        for state in list(self.peers.values()):
            if peer_name is not None and state.name != peer_name:
                continue
            shared = [share.folder_id for share in self.store.shares_with_peer(state.name)]
            for candidate in shared if folder_id is None else [folder_id]:
                if candidate not in shared:
                    skipped.append({"peer": state.name, "folder": candidate, "reason": "not shared with this peer"})
                elif not self.folder_syncing(candidate):
                    skipped.append({"peer": state.name, "folder": candidate, "reason": "the folder is stopped"})
                else:
                    started.append({"peer": state.name, "folder": candidate})
            heads = {entry["folder"]: self.heads.get(entry["folder"]) for entry in started if entry["peer"] == state.name}
            if heads:
                self._run_actions(state, state.exchange.full_exchange(heads, self._now(), ignore_window=ignore_window))
        return {"started": started, "skipped": skipped}

    def offer_share(self, peer_name: str, folder: Folder) -> None:
        state = self.peer_state(peer_name)
        if state is not None:
            self._run_actions(state, state.exchange.offer_share(folder.folder_id, folder.name))

    def withdraw_share(self, peer_name: str, folder_id: str) -> None:
        state = self.peer_state(peer_name)
        if state is not None:
            self._run_actions(state, state.exchange.withdraw_share(folder_id, self._now()))

    def head_moved(self, folder_id: str, head: str | None) -> None:
        """Tell every peer's exchange that our head of the folder moved (commit, apply, restore)."""
        if head is None or self.heads.get(folder_id) == head:
            return
        self.heads[folder_id] = head
        self._emit_folder(folder_id, "changed")
        for state in list(self.peers.values()):
            self._run_actions(state, state.exchange.changed_locally(folder_id, head, self._now()))

    # --- events out -----------------------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> None:
        self.publish({"kind": kind, "time": time.time(), **fields})

    def _emit_folder(self, folder_id: str, change: str) -> None:
        try:
            self.emit("folder", change=change, folder=folder_view(self, self.store.folder(folder_id)))
        except OcsyncError:
            pass  # removed meanwhile

    def emit_peer(self, name: str, change: str = "changed") -> None:
        try:
            self.emit("peer", change=change, peer=peer_view(self, self.store.peer(name)))
        except OcsyncError:
            pass

    def _on_committed(self, folder_id: str, head: str, records) -> None:
        self.emit("commit", folder=folder_id, head=head, count=len(records), commits=[
            {"path": record.path, "action": record.action, "commit": record.commit_id}
            for record in records[:COMMIT_EVENT_LIST]
        ])
        self.head_moved(folder_id, head)

    def _on_folder_stopped(self, folder_id: str, reason: str) -> None:
        log.warning("folder %s stopped: %s", folder_id, reason)
        self.store.set_folder_state(folder_id, f"stopped: {reason}")
        self.store.log_event("folder", f"stopped: {reason}", folder_id=folder_id)
        self._emit_folder(folder_id, "changed")

    # --- transport events -----------------------------------------------------------------------

    async def _pump_transport_events(self) -> None:
        async for event in self.endpoint.events:
            try:
                self._on_transport_event(event)
            except (OcsyncError, OSError) as error:
                log.warning("%s", error)

    def _on_transport_event(self, event: Any) -> None:
        if isinstance(event, net_events.TransferOffered):
            self._on_offered(event)
        elif isinstance(event, net_events.TransferCompleted):
            self._on_transfer_completed(event)
        elif isinstance(event, net_events.TransferProgress):
            self._on_progress(event)
        elif isinstance(event, net_events.TransferFailed | net_events.TransferCancelled):
            self._on_transfer_ended(event)
        elif isinstance(event, net_events.PeerUp | net_events.SessionEstablished):
            self._on_peer_up(event.public_key)
        elif isinstance(event, net_events.PeerDown | net_events.SessionLost):
            self._on_peer_down(event.public_key)
        elif isinstance(event, net_events.PeerEndpointChanged):
            state = self.peers.get(event.public_key)
            if state is not None:
                self.emit_peer(state.name)
        elif isinstance(event, net_events.IntroductionCompleted):
            self._on_introduced(event)
        elif isinstance(event, net_events.UnknownDeviceAttempt):
            self._on_unknown_device(event)

    def _on_offered(self, event: net_events.TransferOffered) -> None:
        state = self.peers.get(event.public_key)
        key = (event.public_key, event.transfer_id)
        if state is not None and event.kind == MESSAGE_KIND and event.size <= messages.MAX_MESSAGE_BYTES:
            self._incoming[key] = "message"
            self.endpoint.accept(event.public_key, event.transfer_id)
            return
        if state is not None and event.kind == BUNDLE_KIND:
            try:
                meta = messages.decode_bundle_meta(event.name)
            except messages.MessageError as error:
                self.endpoint.decline(event.public_key, event.transfer_id, str(error)[:100])
                return
            if state.exchange.bundle_offered(meta, self._now()):
                self._incoming[key] = meta
                self._incoming_info[key] = (event.sha256.hex(), event.size)
                self._record_transfer(state.name, meta.folder_id, "in", event.sha256.hex(), event.size, 0, "running")
                self.endpoint.accept(event.public_key, event.transfer_id)
                self._timers_changed.set()
                return
        self.endpoint.decline(event.public_key, event.transfer_id, "not expected")

    def _on_transfer_completed(self, event: net_events.TransferCompleted) -> None:
        key = (event.public_key, event.transfer_id)
        state = self.peers.get(event.public_key)
        if event.outgoing:
            outgoing = self._outgoing_bundles.pop(key, None)
            if outgoing is not None and state is not None:
                self._finish_transfer(state.name, outgoing[1], "out", event.sha256.hex(), "done")
            return  # the file stays until the exchange discards it (the peer's Applied)
        what = self._incoming.pop(key, None)
        info = self._incoming_info.pop(key, None)
        path = Path(event.path)
        if what is None or state is None:
            path.unlink(missing_ok=True)
            return
        if what == "message":
            data = path.read_bytes()
            path.unlink(missing_ok=True)
            try:
                message = messages.decode(data)
            except messages.MessageError as error:
                log.warning("dropped a message from %s: %s", state.name, error)
                return
            self._run_actions(state, state.exchange.message_received(message, self._now()))
            return
        if info is not None:
            self._finish_transfer(state.name, what.folder_id, "in", info[0], "done")
        self._run_actions(state, state.exchange.bundle_received(what, path, self._now()))

    def _on_progress(self, event: net_events.TransferProgress) -> None:
        state = self.peers.get(event.public_key)
        key = (event.public_key, event.transfer_id)
        if state is None:
            return
        if event.outgoing and key in self._outgoing_bundles:
            path, folder_id = self._outgoing_bundles[key]
            sha = self._bundle_sha256.get(path, "")
            self._record_transfer(state.name, folder_id, "out", sha, event.total, event.bytes_done, "running",
                                  rate=event.rate_bps)
        elif not event.outgoing and isinstance(self._incoming.get(key), messages.BundleMeta):
            meta = self._incoming[key]
            state.exchange.bundle_progress(meta, self._now())
            sha, size = self._incoming_info[key]
            self._record_transfer(state.name, meta.folder_id, "in", sha, size, event.bytes_done, "running",
                                  rate=event.rate_bps)

    def _on_transfer_ended(self, event) -> None:
        key = (event.public_key, event.transfer_id)
        what = self._incoming.pop(key, None)
        info = self._incoming_info.pop(key, None)
        outgoing = self._outgoing_bundles.pop(key, None)
        state = self.peers.get(event.public_key)
        if state is None:
            return
        ending = "failed" if isinstance(event, net_events.TransferFailed) else "cancelled"
        if outgoing is not None:
            self._finish_transfer(state.name, outgoing[1], "out", event.sha256.hex(), ending, event.reason)
        if isinstance(what, messages.BundleMeta):
            if info is not None:
                self._finish_transfer(state.name, what.folder_id, "in", info[0], ending, event.reason)
            self._run_actions(state, state.exchange.bundle_failed(what, event.reason, self._now()))

    def _record_transfer(self, peer: str, folder_id: str, direction: str, sha: str, size: int, done: int,
                         state: str, *, rate: float = 0.0) -> None:
        record = TransferRecord(peer, sha, folder_id, direction, size, done, time.time())
        self.store.record_transfer(record)
        self.transfer_activity[(peer, direction, sha)] = {"rate_bps": rate, "active": True}
        self.emit("transfer", transfer=transfer_view(record, rate_bps=rate, active=True), state=state, reason=None)

    def _finish_transfer(self, peer: str, folder_id: str, direction: str, sha: str, state: str,
                         reason: str | None = None) -> None:
        self.transfer_activity.pop((peer, direction, sha), None)
        record = TransferRecord(peer, sha, folder_id, direction, 0, 0, time.time())
        self.store.remove_transfer(peer, sha, direction)
        self.emit("transfer", transfer=transfer_view(record), state=state, reason=reason)

    def _on_peer_up(self, public_key: bytes) -> None:
        state = self.peers.get(public_key)
        if state is None or state.reachable:
            return
        state.reachable = True
        log.info("peer %s is reachable", state.name)
        self.store.log_event("peer", "reachable", peer_name=state.name)
        self.emit_peer(state.name)
        if self.window_open(state.name):
            self._full_exchange(state)

    def _on_peer_down(self, public_key: bytes) -> None:
        state = self.peers.get(public_key)
        if state is None or not state.reachable:
            return
        state.reachable = False
        log.info("peer %s is not reachable", state.name)
        self.store.log_event("peer", "not reachable", peer_name=state.name)
        self.emit_peer(state.name)

    def _on_introduced(self, event: net_events.IntroductionCompleted) -> None:
        host, port = event.endpoint[0], event.endpoint[1]
        for peer in self.store.peers():
            address = self._peer_address(peer) if peer.pending else None
            if address is not None and address[0] == host and address[1] == port:
                self.store.set_pending_key(peer.name, event.public_key)
                self.emit_peer(peer.name)
                log.info("peer %s presented device ID %s; compare it, then `ocsync peer confirm %s --id …`",
                         peer.name, format_device_id(event.public_key), peer.name)

    def _on_unknown_device(self, event: net_events.UnknownDeviceAttempt) -> None:
        device_id = format_device_id(event.public_key)
        change = "changed" if device_id in self.pending_devices else "added"
        if change == "added" and len(self.pending_devices) >= MAX_PENDING_DEVICES:
            oldest = min(self.pending_devices.values(), key=lambda device: device["last_seen"])
            del self.pending_devices[oldest["device_id"]]
            self.emit("pending_device", change="removed", device=oldest)
        device = {"device_id": device_id, "address": f"{event.endpoint[0]}:{event.endpoint[1]}",
                  "attempts": event.attempts, "last_seen": time.time()}
        self.pending_devices[device_id] = device
        self.emit("pending_device", change=change, device=device)

    # --- the exchange ---------------------------------------------------------------------------

    def _now(self) -> float:
        return trio.current_time()

    def _full_exchange(self, state: _PeerState) -> None:
        shared = {share.folder_id for share in self.store.shares_with_peer(state.name)}
        heads = {folder_id: head for folder_id, head in self.heads.items() if folder_id in shared}
        self._run_actions(state, state.exchange.full_exchange(heads, self._now()))

    def _run_actions(self, state: _PeerState, actions: list[ex.Action]) -> None:
        """Carry out what an exchange core asked for; git work and sends run as tasks whose results
        come back to the core."""
        for action in actions:
            if isinstance(action, ex.SendMessage):
                self._spawn(self._send_message, state, action.message)
            elif isinstance(action, ex.ComputeHaves):
                self._spawn(self._compute_haves, state, action)
            elif isinstance(action, ex.MakeBundle):
                self._spawn(self._make_bundle, state, action)
            elif isinstance(action, ex.SendBundle):
                self._spawn(self._send_bundle, state, action)
            elif isinstance(action, ex.DiscardBundle):
                self._discard_bundle(state, action.path)
            elif isinstance(action, ex.CancelIncomingBundle):
                # Forget the transfer without cancelling it: cancelling would delete what arrived, and
                # the next pull gets the same bundle (same SHA-256), whose offer resumes this partial file.
                for key, what in list(self._incoming.items()):
                    if key[0] == state.public_key and isinstance(what, messages.BundleMeta) and (
                            what.folder_id, what.request_id) == (action.folder_id, action.request_id):
                        self._incoming.pop(key, None)
                        info = self._incoming_info.pop(key, None)
                        if info is not None:
                            self._finish_transfer(state.name, what.folder_id, "in", info[0], "cancelled",
                                                  "no progress; the next pull resumes it")
            elif isinstance(action, ex.ApplyBundle):
                self._spawn(self._apply_bundle, state, action)
            elif isinstance(action, ex.DropReceivedBundle):
                log.info("dropped a bundle from %s: %s", state.name, action.reason)
                action.path.unlink(missing_ok=True)
            elif isinstance(action, ex.RecordAckedHead):
                self.store.set_acked_head(action.folder_id, state.name, action.head)
                self.emit("sync", folder=action.folder_id, peer=state.name, direction="push",
                          outcome="acknowledged", head=action.head, reason=None)
                self.emit_peer(state.name)
            elif isinstance(action, ex.RecordOffer):
                self._record_offer(state, action)
            elif isinstance(action, ex.DropShare):
                self._drop_share(state, action.folder_id)
            elif isinstance(action, ex.PullEnded):
                log.info("pull of %s from %s: %s (%s)", action.folder_id, state.name, action.outcome, action.detail)
                self.store.log_event("sync", f"pull {action.outcome}: {action.detail}",
                                     folder_id=action.folder_id, peer_name=state.name)
                outcome = action.outcome.replace("-", "_")
                self.emit("sync", folder=action.folder_id, peer=state.name, direction="pull", outcome=outcome,
                          head=self.heads.get(action.folder_id), reason=None if outcome == "applied" else action.detail)
        self._timers_changed.set()

    def _spawn(self, task, state: _PeerState, *arguments) -> None:
        """Run one action's work; a peer removed or a file gone meanwhile is logged, never fatal to the daemon."""

        async def guarded() -> None:
            try:
                await task(state, *arguments)
            except (OcsyncError, OSError) as error:
                log.warning("exchange with %s: %s", state.name, error)

        self._nursery.start_soon(guarded)

    async def _send_message(self, state: _PeerState, message: messages.Message) -> None:
        if state.public_key in self.peers:
            await self.endpoint.send_blob(state.public_key, messages.encode(message), kind=MESSAGE_KIND)

    async def _compute_haves(self, state: _PeerState, action: ex.ComputeHaves) -> None:
        sync = self.folders.get(action.folder_id)
        result: list[str] = []
        if sync is not None and not sync.stopped:
            try:
                result = await sync.write(haves)
            except OcsyncError as error:
                log.warning("cannot list the commits of %s: %s", action.folder_id, error)
        self._run_actions(state, state.exchange.haves_computed(action.folder_id, action.request_id, result, self._now()))

    async def _make_bundle(self, state: _PeerState, action: ex.MakeBundle) -> None:
        sync = self.folders.get(action.folder_id)
        out = self._bundle_dir / f"{action.folder_id}-{state.public_key.hex()[:16]}-{action.request_id}.bundle"
        if sync is None or sync.stopped:
            actions = state.exchange.bundle_failed_to_make(action.folder_id, action.request_id, "the folder is stopped", self._now())
        else:
            try:
                # Outgoing bundles are scratch, wiped at start and remade byte for byte on request: syncing
                # them to disk would only make the peer wait (550 MB: 1.7 s here).
                info = await sync.write(lambda repo: bundle_for(repo, list(action.haves), out, durable=False))
            except OcsyncError as error:
                actions = state.exchange.bundle_failed_to_make(action.folder_id, action.request_id, str(error), self._now())
            else:
                head = info.head if info is not None else self.heads.get(action.folder_id)
                if info is not None:
                    self._bundle_sha256[out] = info.sha256
                actions = state.exchange.bundle_made(action.folder_id, action.request_id,
                                                     out if info is not None else None, head, self._now())
        self._run_actions(state, actions)

    async def _send_bundle(self, state: _PeerState, action: ex.SendBundle) -> None:
        if state.public_key not in self.peers or not action.path.exists():
            return
        known = self._bundle_sha256.get(action.path)  # computed as it was written: no second read of it all
        transfer_id = await self.endpoint.send_blob(state.public_key, action.path, name=action.name, kind=BUNDLE_KIND,
                                                    sha256=bytes.fromhex(known) if known else None)
        self._outgoing_bundles[(state.public_key, transfer_id)] = (action.path, action.folder_id)
        meta = messages.decode_bundle_meta(action.name)
        self.emit("sync", folder=action.folder_id, peer=state.name, direction="push", outcome="sent",
                  head=meta.head, reason=None)

    def _discard_bundle(self, state: _PeerState, path: Path) -> None:
        for key, (bundle, _) in list(self._outgoing_bundles.items()):
            if bundle == path:
                self.endpoint.cancel(*key)
                del self._outgoing_bundles[key]
        self._bundle_sha256.pop(path, None)
        path.unlink(missing_ok=True)

    async def _apply_bundle(self, state: _PeerState, action: ex.ApplyBundle) -> None:
        sync = self.folders.get(action.folder_id)
        peer_ref_name = format_device_id(state.public_key)
        try:
            if sync is None or sync.stopped:
                raise OcsyncError("the folder is stopped")
            report = await sync.write(
                # The received bundle is deleted afterwards in any case, so its pack may become the store's.
                lambda repo: apply_bundle(repo, self.identity, action.path, peer_name=peer_ref_name, consume=True)
            )
        except MissingPrerequisites as error:
            actions = state.exchange.apply_failed(action.folder_id, True, self._now(), str(error))
        except OcsyncError as error:
            log.warning("could not apply a bundle from %s to %s: %s", state.name, action.folder_id, error)
            actions = state.exchange.apply_failed(action.folder_id, False, self._now(), str(error))
        else:
            head = report.new_head.decode("ascii") if report.new_head else None
            for conflict in report.conflicts:
                self.emit("conflict", folder=action.folder_id, path=_text(conflict.path),
                          copy_path=_text(conflict.copy_path) if conflict.copy_path else None,
                          reason=conflict.reason, peer=state.name, head=head)
            if head is not None and self.heads.get(action.folder_id) != head:
                self.heads[action.folder_id] = head
                self._emit_folder(action.folder_id, "changed")
                # Every other peer hears of the new head; this one learns it from Applied.
                for other in list(self.peers.values()):
                    if other is not state:
                        self._run_actions(other, other.exchange.changed_locally(action.folder_id, head, self._now()))
            actions = state.exchange.bundle_applied(action.folder_id, head, self._now()) if head else []
        finally:
            action.path.unlink(missing_ok=True)
        self._run_actions(state, actions)

    def _record_offer(self, state: _PeerState, action: ex.RecordOffer) -> None:
        offer = self.store.add_offer(state.name, action.folder_id, action.folder_name)
        self.store.log_event("offer", f"{state.name} offers {action.folder_name}", folder_id=action.folder_id,
                             peer_name=state.name)
        self.emit("offer", change="added", offer=offer_view(offer))

    def _drop_share(self, state: _PeerState, folder_id: str) -> None:
        for offer in self.store.offers():
            if offer.peer_name == state.name and offer.folder_id == folder_id:
                self.store.remove_offer(state.name, folder_id)
                self.emit("offer", change="removed", offer=offer_view(offer))
        if self.store.unshare(folder_id, state.name):
            self._emit_folder(folder_id, "changed")

    async def _run_exchange_timers(self) -> None:
        while True:
            deadlines = [(state.exchange.get_timer(), state) for state in self.peers.values()]
            due = min((deadline for deadline, _ in deadlines if deadline is not None), default=None)
            self._timers_changed = trio.Event()
            with trio.move_on_at(due if due is not None else float("inf")):
                await self._timers_changed.wait()
            now = self._now()
            for deadline, state in deadlines:
                if deadline is not None and deadline <= now and state.public_key in self.peers:
                    self._run_actions(state, state.exchange.handle_timer(now))

    async def _run_scheduler(self) -> None:
        """Poll the time of day: a window that opens starts a full exchange with that peer; one that
        closes stops folder data to it. Now and then, restart stopped folders whose marker is back."""
        next_folder_check = self._now() + STOPPED_FOLDER_RETRY_SECONDS
        while True:
            if self._now() >= next_folder_check:
                next_folder_check = self._now() + STOPPED_FOLDER_RETRY_SECONDS
                await self._restart_recovered_folders()
            for state in list(self.peers.values()):
                is_open = self.window_open(state.name)
                if is_open != state.window_was_open and state.window_was_open is not None:
                    self.emit_peer(state.name)
                    if is_open and state.reachable:
                        self._full_exchange(state)
                    elif not is_open:
                        self._run_actions(state, state.exchange.window_closed(self._now()))
                state.window_was_open = is_open
            await trio.sleep(SCHEDULE_POLL_SECONDS)


    async def _restart_recovered_folders(self) -> None:
        for folder_id, sync in list(self.folders.items()):
            if not sync.stopped or not (sync.path / MARKER_NAME).is_file():
                continue
            try:
                folder = self.store.folder(folder_id)
            except OcsyncError:
                continue
            log.info("folder %s is back (its marker is there again): syncing it again", folder.name)
            self.stop_folder(folder_id)
            await self.start_folder(folder)
            if self.folder_syncing(folder_id):
                for state in list(self.peers.values()):
                    if self.store.is_shared(folder_id, state.name) and state.reachable and self.window_open(state.name):
                        self._run_actions(state, state.exchange.full_exchange(
                            {folder_id: self.heads.get(folder_id)}, self._now()))


def _text(path: bytes | str) -> str:
    return path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path

"""The daemon's answers to control commands (docs/control-api.md): the CLI's and the TUI's intents.

Each command validates its arguments (store/values.py, the same checks as the CLI's no-daemon path),
changes the store, and tells the running parts (folders, endpoint, exchanges) at once. Git work goes
through the folder's one writer, so a command never writes beside the watcher or an apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ocsync_tui.engine.schedule import Window
from ocsync_tui.engine.views import folder_view, offer_view, peer_view, schedule_view, snapshot
from ocsync_tui.errors import OcsyncError
from ocsync_tui.store.values import parse_hhmm, parse_host_port, parse_ip_port
from ocsync_tui.vcs.apply import apply_bundle
from ocsync_tui.vcs.folder import FolderRepo, init_folder
from ocsync_tui.vcs.history import file_log, restore_file

if TYPE_CHECKING:
    from ocsync_tui.engine.sync_engine import SyncEngine


class CommandError(OcsyncError):
    pass


class Commands:
    def __init__(self, engine: "SyncEngine") -> None:
        self.engine = engine

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.engine)

    async def handle(self, command: str, args: dict[str, Any]) -> Any:
        method = getattr(self, "cmd_" + command.replace(".", "_"), None)
        if method is None:
            raise CommandError(f"unknown command {command!r}; docs/control-api.md lists them")
        try:
            return await method(**args)
        except TypeError as error:
            raise CommandError(f"{command}: bad arguments ({error})") from None

    # --- status ---------------------------------------------------------------------------------

    async def cmd_status(self) -> dict[str, Any]:
        return self.snapshot()

    # --- folders --------------------------------------------------------------------------------

    async def cmd_folder_add(self, path: str, name: str | None = None) -> dict[str, Any]:
        engine = self.engine
        root = Path(path).expanduser().absolute()
        name = name or root.name
        engine.store.check_new_folder(name, root)
        await trio.to_thread.run_sync(lambda: init_folder(root, engine.identity))
        folder_id = FolderRepo.open(root).folder_id
        folder = engine.store.add_folder(folder_id, name, root.resolve())
        await engine.start_folder(folder)
        return folder_view(engine, engine.store.folder(folder_id))

    async def cmd_folder_list(self) -> list[dict[str, Any]]:
        return [folder_view(self.engine, folder) for folder in sorted(self.engine.store.folders(), key=lambda f: f.name)]

    async def cmd_folder_rm(self, name: str) -> dict[str, Any]:
        folder = self.engine.store.folder(name)
        view = folder_view(self.engine, folder)
        self.engine.stop_folder(folder.folder_id)
        self.engine.store.remove_folder(folder.folder_id)
        self.engine.emit("folder", change="removed", folder=view)
        return {"id": folder.folder_id, "name": folder.name, "path": str(folder.path)}

    # --- peers ----------------------------------------------------------------------------------

    async def cmd_peer_add(
        self, name: str, device_id: str | None = None, address: str | None = None, local_address: str | None = None
    ) -> dict[str, Any]:
        host, port = parse_host_port(address) if address else (None, None)
        local_host, local_port = parse_ip_port(local_address) if local_address else (None, None)
        peer = self.engine.store.add_peer(
            name, device_id=device_id, address=host, port=port, local_address=local_host, local_port=local_port
        )
        self.engine.register_peer(peer)
        self.engine.emit_peer(peer.name, "added")
        return peer_view(self.engine, peer)

    async def cmd_peer_list(self) -> list[dict[str, Any]]:
        return [peer_view(self.engine, peer) for peer in sorted(self.engine.store.peers(), key=lambda p: p.name)]

    async def cmd_peer_rm(self, name: str) -> dict[str, Any]:
        peer = self.engine.store.peer(name)
        view = peer_view(self.engine, peer)
        self.engine.store.remove_peer(name)
        self.engine.forget_peer(peer)
        self.engine.emit("peer", change="removed", peer=view)
        return {"name": name}

    async def cmd_peer_confirm(self, name: str, device_id: str) -> dict[str, Any]:
        peer = self.engine.store.confirm_peer(name, device_id)
        self.engine.register_peer(peer)
        self.engine.emit_peer(peer.name)
        return peer_view(self.engine, peer)

    # --- the seed's Send and Receive ------------------------------------------------------------

    async def cmd_share(self, folder: str, peer: str) -> dict[str, Any]:
        store = self.engine.store
        entry, target = store.folder(folder), store.peer(peer)
        if target.pending:
            raise CommandError(f"peer {peer} is pending: confirm its device ID first (`ocsync peer confirm`)")
        store.share(entry.folder_id, target.name)
        self.engine.offer_share(target.name, entry)
        self.engine.emit_peer(target.name)
        return {"folder": entry.folder_id, "peer": target.name}

    async def cmd_unshare(self, folder: str, peer: str) -> dict[str, Any]:
        store = self.engine.store
        entry, target = store.folder(folder), store.peer(peer)
        if not store.unshare(entry.folder_id, target.name):
            raise CommandError(f"{entry.name} is not shared with {target.name}")
        self.engine.withdraw_share(target.name, entry.folder_id)
        self.engine.emit_peer(target.name)
        return {"folder": entry.folder_id, "peer": target.name}

    async def cmd_offers(self) -> list[dict[str, Any]]:
        return [offer_view(offer) for offer in sorted(self.engine.store.offers(), key=lambda o: o.offered_at)]

    async def cmd_accept(self, peer: str, folder: str, path: str | None = None) -> dict[str, Any]:
        engine, store = self.engine, self.engine.store
        offer = store.offer(peer, folder)
        held = next((entry for entry in store.folders() if entry.folder_id == offer.folder_id), None)
        if held is not None:
            # Another peer gave us this folder already: accepting shares our copy with this peer too.
            if path and Path(path).expanduser().resolve() != held.path:
                raise CommandError(f"this device holds {held.name} at {held.path} already; accept it without --path")
            entry = held
        else:
            root = Path(path).expanduser().absolute() if path else Path.home() / offer.folder_name
            store.check_new_folder(offer.folder_name, root)
            await trio.to_thread.run_sync(lambda: init_folder(root, engine.identity, folder_id=offer.folder_id))
            entry = store.add_folder(offer.folder_id, offer.folder_name, root.resolve())
        store.share(entry.folder_id, offer.peer_name)
        store.remove_offer(offer.peer_name, offer.folder_id)
        engine.emit("offer", change="removed", offer=offer_view(offer))
        await engine.start_folder(entry)
        engine.emit("folder", change="added" if held is None else "changed", folder=folder_view(engine, entry))
        engine.sync_now(peer_name=offer.peer_name, folder_id=entry.folder_id, ignore_window=False)
        return folder_view(engine, entry)

    async def cmd_decline(self, peer: str, folder: str) -> dict[str, Any]:
        offer = self.engine.store.offer(peer, folder)
        self.engine.store.remove_offer(offer.peer_name, offer.folder_id)
        self.engine.emit("offer", change="removed", offer=offer_view(offer))
        return {"peer": offer.peer_name, "folder": offer.folder_id}

    # --- schedule -------------------------------------------------------------------------------

    async def cmd_schedule_set(self, to: str, peer: str | None = None, **window: str) -> dict[str, Any]:
        if set(window) != {"from"}:
            raise CommandError("schedule.set needs from and to (HH:MM)")
        if peer is not None:
            peer = self.engine.store.peer(peer).name
        self.engine.store.set_window(peer, Window(parse_hhmm(window["from"]), parse_hhmm(to)))
        return self._schedule_changed()

    async def cmd_schedule_clear(self, peer: str | None = None) -> dict[str, Any]:
        if peer is not None:
            peer = self.engine.store.peer(peer).name
        self.engine.store.clear_window(peer)
        return self._schedule_changed()

    def _schedule_changed(self) -> dict[str, Any]:
        schedule = schedule_view(self.engine)
        self.engine.emit("schedule", schedule=schedule)
        return schedule

    async def cmd_schedule_show(self) -> dict[str, Any]:
        return schedule_view(self.engine)

    # --- sync, commit, apply, history -----------------------------------------------------------

    async def cmd_sync(self, peer: str | None = None, folder: str | None = None) -> dict[str, Any]:
        store = self.engine.store
        peer_name = store.peer(peer).name if peer else None
        folder_id = store.folder(folder).folder_id if folder else None
        return self.engine.sync_now(peer_name=peer_name, folder_id=folder_id, ignore_window=True)

    def _running_folder(self, folder: str):
        entry = self.engine.store.folder(folder)
        sync = self.engine.folders.get(entry.folder_id)
        if sync is None or sync.stopped:
            raise CommandError(f"folder {entry.name} is stopped: {sync.stop_reason if sync else 'not running'}")
        return sync

    async def cmd_commit(self, folder: str, confirm_deletions: bool = False) -> dict[str, Any]:
        sync = self._running_folder(folder)
        report = await sync.commit_now(confirm_deletions=confirm_deletions)
        return {
            "committed": [{"action": r.action, "path": r.path, "commit": r.commit_id} for r in report.committed],
            "skipped": [{"path": path, "reason": reason} for path, reason in report.skipped],
            "held_deletions": list(report.held_deletions),
            "notes": list(report.notes),
        }

    async def cmd_bundle_apply(self, folder: str, bundle: str) -> dict[str, Any]:
        sync = self._running_folder(folder)
        bundle_path = Path(bundle).absolute()
        report = await sync.write(lambda repo: apply_bundle(repo, self.engine.identity, bundle_path))
        head = report.new_head.decode("ascii") if report.new_head else None
        self.engine.head_moved(sync.folder_id, head)
        return {"summary": report.summary(), "head": head}

    async def cmd_restore(self, folder: str, path: str, rev: str | None = None) -> dict[str, Any]:
        sync = self._running_folder(folder)
        record = await sync.write(lambda repo: restore_file(repo, self.engine.identity, path, rev))
        self.engine.head_moved(sync.folder_id, record.commit_id)
        return {"path": record.path, "restored_from": record.source_rev, "commit": record.commit_id}

    async def cmd_log(self, folder: str, path: str) -> list[dict[str, Any]]:
        sync = self._running_folder(folder)
        revisions = await sync.write(lambda repo: file_log(repo, path))
        return [
            {"commit": revision.commit_id, "time": revision.time, "action": revision.action,
             "device_name": revision.device_name, "device_id": revision.device_id}
            for revision in revisions
        ]

"""The daemon's state as the control API shows it (docs/control-api.md "Snapshot"): one function per object.

The snapshot and the events that change it are built by the same functions, so a client that applies
events to its snapshot ends up where a fresh snapshot would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocsync_tui.identity import format_device_id
from ocsync_tui.store.database import Folder, Offer, Peer, TransferRecord
from ocsync_tui.store.values import format_hhmm

if TYPE_CHECKING:
    from ocsync_tui.engine.schedule import Window
    from ocsync_tui.engine.sync_engine import SyncEngine


def window_view(window: "Window | None") -> dict[str, str] | None:
    return None if window is None else {"from": format_hhmm(window.from_minute), "to": format_hhmm(window.to_minute)}


def folder_view(engine: "SyncEngine", folder: Folder) -> dict[str, Any]:
    sync = engine.folders.get(folder.folder_id)
    state = f"stopped: {sync.stop_reason}" if sync is not None and sync.stopped else folder.state
    return {
        "id": folder.folder_id,
        "name": folder.name,
        "path": str(folder.path),
        "state": state,
        "head": engine.heads.get(folder.folder_id),
        "shared_with": sorted(share.peer_name for share in engine.store.shares_of_folder(folder.folder_id)),
    }


def peer_view(engine: "SyncEngine", peer: Peer) -> dict[str, Any]:
    state = engine.peer_state(peer.name)
    reachable = bool(state and state.reachable)
    address = engine.endpoint.channel.endpoint_of(state.public_key) if reachable else None
    endpoint = f"{address[0]}:{address[1]}" if address else None
    return {
        "name": peer.name,
        "device_id": peer.device_id,
        "pending": peer.pending,
        "presented_device_id": format_device_id(peer.pending_key) if peer.pending_key else None,
        "address": peer.address,
        "port": peer.port,
        "local_address": peer.local_address,
        "local_port": peer.local_port,
        "reachable": reachable,
        "endpoint": endpoint,
        "window": window_view(engine.store.window(peer.name)),
        "window_open": engine.window_open(peer.name),
        "folders": [
            {"folder": share.folder_id, "acked_head": share.acked_head}
            for share in engine.store.shares_with_peer(peer.name)
        ],
    }


def offer_view(offer: Offer) -> dict[str, Any]:
    return {"peer": offer.peer_name, "folder": offer.folder_id, "folder_name": offer.folder_name,
            "offered_at": offer.offered_at}


def schedule_view(engine: "SyncEngine") -> dict[str, Any]:
    store = engine.store
    overrides = {peer.name: store.window(peer.name) for peer in store.peers()}
    return {
        "global": window_view(store.window(None)),
        "peers": {name: window_view(window) for name, window in sorted(overrides.items()) if window is not None},
    }


def transfer_view(record: TransferRecord, *, rate_bps: float = 0.0, active: bool = False) -> dict[str, Any]:
    return {
        "peer": record.peer_name,
        "folder": record.folder_id,
        "direction": record.direction,
        "sha256": record.sha256,
        "size": record.size,
        "done": record.done,
        "rate_bps": rate_bps,
        "active": active,
        "updated_at": record.updated_at,
    }


def snapshot(engine: "SyncEngine") -> dict[str, Any]:
    store = engine.store
    return {
        "device": {"name": engine.identity.name, "device_id": engine.identity.device_id},
        "udp_port": engine.udp_port,
        "folders": [folder_view(engine, folder) for folder in sorted(store.folders(), key=lambda f: f.name)],
        "peers": [peer_view(engine, peer) for peer in sorted(store.peers(), key=lambda p: p.name)],
        "offers": [offer_view(offer) for offer in sorted(store.offers(), key=lambda o: o.offered_at)],
        "pending_devices": sorted(engine.pending_devices.values(), key=lambda device: device["last_seen"]),
        "schedule": schedule_view(engine),
        "transfers": [
            transfer_view(record, **engine.transfer_activity.get((record.peer_name, record.direction, record.sha256), {}))
            for record in sorted(store.transfers(), key=lambda r: r.updated_at)
        ],
    }

"""The device's state in SQLite (`HOME/ocsync.db`): the sync table and what surrounds it.

Peers (the seed's sync table: name, public address or dyndns name, port, local address and port,
device ID, or the pending state of a peer known by address alone), our folders, which folder is
shared with which peer and the last head that peer acknowledged, folders peers offered us, sync
windows (global and per peer), transfer progress and an event log.

WAL lets the daemon and a CLI command read and write side by side; foreign keys make removing a peer
take its shares, offers, window and transfers with it, and removing a folder its shares. The schema
version is `PRAGMA user_version`; `_MIGRATIONS[n]` takes a database from version n to n + 1, all
steps in one transaction, so a killed upgrade leaves the old version intact.

One Store per thread (an sqlite3 connection belongs to the thread that opened it); every method is
short and synchronous. Methods that change something check their arguments first and refuse bad
ones with an OcsyncError whose message is one line.
"""

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import time as unix_time

from ocsync_tui.engine.schedule import Window
from ocsync_tui.errors import OcsyncError
from ocsync_tui.home import ensure_home
from ocsync_tui.identity import format_device_id, parse_device_id
from ocsync_tui.store.values import (
    InvalidValueError,
    canonical_device_id,
    check_host,
    check_ip,
    check_name,
    format_hhmm,
    format_host_port,
    parse_port,
)

DATABASE_FILE = "ocsync.db"
_BUSY_TIMEOUT_SECONDS = 10.0
# The log is for "what was synced when", not an archive: older entries go so it cannot grow forever.
_EVENTS_KEPT = 10_000
_HEX_COMMIT = re.compile(r"[0-9a-f]{40}")

_MIGRATIONS: list[tuple[str, ...]] = [
    (  # version 1
        """CREATE TABLE peers (
            name          TEXT PRIMARY KEY,
            device_id     TEXT UNIQUE,
            address       TEXT,
            port          INTEGER,
            local_address TEXT,
            local_port    INTEGER,
            pending_key   BLOB
        )""",
        """CREATE TABLE folders (
            folder_id TEXT PRIMARY KEY,
            name      TEXT NOT NULL UNIQUE,
            path      TEXT NOT NULL UNIQUE,
            state     TEXT NOT NULL DEFAULT 'ok'
        )""",
        """CREATE TABLE shares (
            folder_id  TEXT NOT NULL REFERENCES folders(folder_id) ON DELETE CASCADE,
            peer_name  TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE,
            acked_head TEXT,
            PRIMARY KEY (folder_id, peer_name)
        )""",
        "CREATE INDEX shares_by_peer ON shares(peer_name)",
        """CREATE TABLE offers (
            peer_name   TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE,
            folder_id   TEXT NOT NULL,
            folder_name TEXT NOT NULL,
            offered_at  REAL NOT NULL,
            PRIMARY KEY (peer_name, folder_id)
        )""",
        """CREATE TABLE global_window (
            only_row    INTEGER PRIMARY KEY CHECK (only_row = 1),
            from_minute INTEGER NOT NULL,
            to_minute   INTEGER NOT NULL
        )""",
        """CREATE TABLE peer_windows (
            peer_name   TEXT PRIMARY KEY REFERENCES peers(name) ON DELETE CASCADE,
            from_minute INTEGER NOT NULL,
            to_minute   INTEGER NOT NULL
        )""",
        """CREATE TABLE transfers (
            peer_name  TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE,
            sha256     TEXT NOT NULL,
            direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            folder_id  TEXT NOT NULL,
            size       INTEGER NOT NULL,
            done       INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (peer_name, sha256, direction)
        )""",
        # No foreign keys here: the log outlives the peers and folders it mentions.
        """CREATE TABLE events (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            time      REAL NOT NULL,
            kind      TEXT NOT NULL,
            folder_id TEXT,
            peer_name TEXT,
            detail    TEXT NOT NULL
        )""",
    ),
]
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(OcsyncError):
    pass


class UnknownPeerError(OcsyncError):
    pass


class UnknownFolderError(OcsyncError):
    pass


class UnknownOfferError(OcsyncError):
    pass


class PeerExistsError(OcsyncError):
    pass


class FolderExistsError(OcsyncError):
    pass


class FolderNestingError(OcsyncError):
    pass


class DeviceMismatchError(OcsyncError):
    pass


class PeerPendingError(OcsyncError):
    pass


@dataclass(frozen=True)
class Peer:
    """`device_id` None: added by address alone and pending until confirmed; `pending_key` is the
    public key a device presented for this peer, awaiting `peer confirm`. `port` None: the default."""

    name: str
    device_id: str | None
    address: str | None
    port: int | None
    local_address: str | None
    local_port: int | None
    pending_key: bytes | None

    @property
    def pending(self) -> bool:
        return self.device_id is None


@dataclass(frozen=True)
class Folder:
    """`state` is "ok" or "stopped: <reason>" (e.g. its marker went missing)."""

    folder_id: str
    name: str
    path: Path
    state: str


@dataclass(frozen=True)
class Share:
    folder_id: str
    peer_name: str
    acked_head: str | None


@dataclass(frozen=True)
class Offer:
    peer_name: str
    folder_id: str
    folder_name: str
    offered_at: float


@dataclass(frozen=True)
class TransferRecord:
    peer_name: str
    sha256: str
    folder_id: str
    direction: str
    size: int
    done: int
    updated_at: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    time: float
    kind: str
    folder_id: str | None
    peer_name: str | None
    detail: str


def open_store(home: Path) -> "Store":
    """Open (creating or upgrading) the store of a home."""
    path = ensure_home(Path(home)) / DATABASE_FILE
    try:
        connection = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path}: {error}") from None
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # With WAL, NORMAL loses at most the last transactions on power loss, never consistency; what
        # it could lose (an acknowledged head, progress) is found again by the next exchange.
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        _migrate(connection, path)
    except sqlite3.Error as error:
        connection.close()
        raise StoreError(f"the store {path} is unusable: {error}") from None
    except BaseException:
        connection.close()
        raise
    return Store(connection, path)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock at the start, so the checks made inside hold until the commit.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:  # a failed COMMIT (disk full) must not leave the transaction open
            connection.execute("ROLLBACK")
        raise


def _user_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    if _user_version(connection) == SCHEMA_VERSION:
        return
    with _transaction(connection):
        version = _user_version(connection)  # again, under the lock: another process may have upgraded it
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {path} has schema version {version}, newer than this ocsync knows "
                f"({SCHEMA_VERSION}); upgrade ocsync"
            )
        for steps in _MIGRATIONS[version:]:
            for statement in steps:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check_folder_state(state: str) -> str:
    if state != "ok" and not (state.startswith("stopped: ") and len(state) > len("stopped: ")):
        raise ValueError(f'a folder state is "ok" or "stopped: <reason>", not {state!r}')
    return state


class Store:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _transaction(self):
        return _transaction(self._db)

    def _one(self, sql: str, *params) -> tuple | None:
        return self._db.execute(sql, params).fetchone()

    # Peers: the sync table.

    _PEER_COLUMNS = "name, device_id, address, port, local_address, local_port, pending_key"

    def add_peer(
        self,
        name: str,
        *,
        device_id: str | None = None,
        address: str | None = None,
        port: int | None = None,
        local_address: str | None = None,
        local_port: int | None = None,
    ) -> Peer:
        check_name("peer", name)
        if device_id is None and address is None:
            raise InvalidValueError(f"peer {name}: give its device ID, its address, or both")
        device_id = canonical_device_id(device_id) if device_id is not None else None
        address = check_host(address) if address is not None else None
        local_address = check_ip(local_address) if local_address is not None else None
        port = parse_port(port) if port is not None else None
        local_port = parse_port(local_port) if local_port is not None else None
        with self._transaction():
            if self._one("SELECT 1 FROM peers WHERE name = ?", name):
                raise PeerExistsError(f"a peer named {name} already exists; remove it first to replace it")
            self._refuse_known_device(device_id)
            self._db.execute(
                f"INSERT INTO peers ({self._PEER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (name, device_id, address, port, local_address, local_port),
            )
        return self.peer(name)

    def _refuse_known_device(self, device_id: str | None) -> None:
        holder = device_id and self._one("SELECT name FROM peers WHERE device_id = ?", device_id)
        if holder:
            raise PeerExistsError(f"device {device_id} already is the peer {holder[0]}")

    def peer(self, name: str) -> Peer:
        row = self._one(f"SELECT {self._PEER_COLUMNS} FROM peers WHERE name = ?", name)
        if row is None:
            raise UnknownPeerError(f"no peer named {name}; `ocsync peer list` shows them")
        return Peer(*row)

    def peer_by_device_id(self, device_id: str) -> Peer | None:
        row = self._one(
            f"SELECT {self._PEER_COLUMNS} FROM peers WHERE device_id = ?", canonical_device_id(device_id)
        )
        return Peer(*row) if row else None

    def peers(self) -> list[Peer]:
        return [Peer(*row) for row in self._db.execute(f"SELECT {self._PEER_COLUMNS} FROM peers ORDER BY name")]

    def remove_peer(self, name: str) -> None:
        """Forget a peer, with its shares, offers, window and transfers."""
        with self._transaction():
            self.peer(name)
            self._db.execute("DELETE FROM peers WHERE name = ?", (name,))

    def set_pending_key(self, name: str, key: bytes) -> None:
        """Record the public key a device presented for this peer, for the user to confirm."""
        format_device_id(key)  # refuses anything but a 32-byte key
        with self._transaction():
            self.peer(name)
            self._db.execute("UPDATE peers SET pending_key = ? WHERE name = ?", (bytes(key), name))

    def confirm_peer(self, name: str, device_id: str) -> Peer:
        """Set the device ID of a pending peer; when it presented a key, the ID must name that key."""
        device_id = canonical_device_id(device_id)
        with self._transaction():
            peer = self.peer(name)
            if peer.device_id == device_id:
                return peer
            if peer.device_id is not None:
                raise DeviceMismatchError(
                    f"peer {name} already is device {peer.device_id}; remove it and add it again to change that"
                )
            if peer.pending_key is not None and parse_device_id(device_id) != peer.pending_key:
                raise DeviceMismatchError(
                    f"device ID {device_id} is not the key peer {name} presented "
                    f"({format_device_id(peer.pending_key)}); compare with `ocsync id` on that device"
                )
            self._refuse_known_device(device_id)
            self._db.execute(
                "UPDATE peers SET device_id = ?, pending_key = NULL WHERE name = ?", (device_id, name)
            )
        return self.peer(name)

    # Folders.

    _FOLDER_COLUMNS = "folder_id, name, path, state"

    @staticmethod
    def _folder(row: tuple) -> Folder:
        folder_id, name, path, state = row
        return Folder(folder_id, name, Path(path), state)

    def check_new_folder(self, name: str, path: Path) -> Path:
        """Refuse a name in use or a path that is, is inside or contains a registered folder; return the
        resolved path. `add_folder` checks this too: call it first to refuse before creating anything."""
        check_name("folder", name)
        path = Path(path).resolve()
        if self._one("SELECT 1 FROM folders WHERE name = ?", name):
            raise FolderExistsError(f"a folder named {name} already exists; give this one another name")
        for folder in self.folders():
            if folder.path == path:
                raise FolderExistsError(f"{path} already is the folder {folder.name}")
            relation = "is inside" if path.is_relative_to(folder.path) else "contains"
            if path.is_relative_to(folder.path) or folder.path.is_relative_to(path):
                raise FolderNestingError(
                    f"{path} {relation} the folder {folder.name} ({folder.path}); folders cannot nest"
                )
        return path

    def add_folder(self, folder_id: str, name: str, path: Path) -> Folder:
        if not folder_id or not isinstance(folder_id, str):
            raise InvalidValueError(f"{folder_id!r} is not a folder ID")
        with self._transaction():
            path = self.check_new_folder(name, path)
            holder = self._one("SELECT name FROM folders WHERE folder_id = ?", folder_id)
            if holder:
                raise FolderExistsError(f"folder ID {folder_id} already is the folder {holder[0]}")
            self._db.execute(
                "INSERT INTO folders (folder_id, name, path) VALUES (?, ?, ?)", (folder_id, name, str(path))
            )
        return self.folder(folder_id)

    def folder(self, name_or_id: str) -> Folder:
        """A folder by its name, or by its ID."""
        row = self._one(f"SELECT {self._FOLDER_COLUMNS} FROM folders WHERE name = ?", name_or_id) or self._one(
            f"SELECT {self._FOLDER_COLUMNS} FROM folders WHERE folder_id = ?", name_or_id
        )
        if row is None:
            raise UnknownFolderError(f"no folder named {name_or_id}; `ocsync folder list` shows them")
        return self._folder(row)

    def folder_by_path(self, path: Path) -> Folder | None:
        row = self._one(f"SELECT {self._FOLDER_COLUMNS} FROM folders WHERE path = ?", str(Path(path).resolve()))
        return self._folder(row) if row else None

    def folders(self) -> list[Folder]:
        rows = self._db.execute(f"SELECT {self._FOLDER_COLUMNS} FROM folders ORDER BY name")
        return [self._folder(row) for row in rows]

    def remove_folder(self, name_or_id: str) -> Folder:
        """Stop syncing a folder (its shares go with it); its files and repository stay."""
        with self._transaction():
            folder = self.folder(name_or_id)
            self._db.execute("DELETE FROM folders WHERE folder_id = ?", (folder.folder_id,))
        return folder

    def set_folder_state(self, folder_id: str, state: str) -> None:
        _check_folder_state(state)
        with self._transaction():
            self._folder_id(folder_id)
            self._db.execute("UPDATE folders SET state = ? WHERE folder_id = ?", (state, folder_id))

    def _folder_id(self, folder_id: str) -> str:
        if not self._one("SELECT 1 FROM folders WHERE folder_id = ?", folder_id):
            raise UnknownFolderError(f"no folder with ID {folder_id}; `ocsync folder list` shows them")
        return folder_id

    # Shares: which folder goes to which peer, and the head that peer last acknowledged.

    def share(self, folder_id: str, peer_name: str) -> bool:
        """Share a folder with a peer; False if it already was. A pending peer is refused: until its key
        is confirmed, nothing of a folder may go to whoever answers at its address."""
        with self._transaction():
            self._folder_id(folder_id)
            if self.peer(peer_name).pending:
                raise PeerPendingError(
                    f"peer {peer_name} is pending: confirm its device ID first (`ocsync peer confirm`)"
                )
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO shares (folder_id, peer_name) VALUES (?, ?)", (folder_id, peer_name)
            )
        return cursor.rowcount == 1

    def unshare(self, folder_id: str, peer_name: str) -> bool:
        """Stop sharing a folder with a peer; False if it was not shared."""
        with self._transaction():
            self._folder_id(folder_id)
            self.peer(peer_name)
            cursor = self._db.execute(
                "DELETE FROM shares WHERE folder_id = ? AND peer_name = ?", (folder_id, peer_name)
            )
        return cursor.rowcount == 1

    def shares_of_folder(self, folder_id: str) -> list[Share]:
        rows = self._db.execute(
            "SELECT folder_id, peer_name, acked_head FROM shares WHERE folder_id = ? ORDER BY peer_name", (folder_id,)
        )
        return [Share(*row) for row in rows]

    def shares_with_peer(self, peer_name: str) -> list[Share]:
        rows = self._db.execute(
            "SELECT shares.folder_id, peer_name, acked_head FROM shares JOIN folders USING (folder_id) "
            "WHERE peer_name = ? ORDER BY folders.name",
            (peer_name,),
        )
        return [Share(*row) for row in rows]

    def is_shared(self, folder_id: str, peer_name: str) -> bool:
        return self._one("SELECT 1 FROM shares WHERE folder_id = ? AND peer_name = ?", folder_id, peer_name) is not None

    def set_acked_head(self, folder_id: str, peer_name: str, head: str) -> None:
        """Record the head a peer acknowledged. A share removed while its pull was in flight is left
        removed: the acknowledgement then changes nothing."""
        if not _HEX_COMMIT.fullmatch(head):
            raise ValueError(f"a head is a 40-digit lower-case hex commit id, not {head!r}")
        self._db.execute(
            "UPDATE shares SET acked_head = ? WHERE folder_id = ? AND peer_name = ?", (head, folder_id, peer_name)
        )

    # Offers: folders peers shared with us, awaiting accept or decline.

    def add_offer(self, peer_name: str, folder_id: str, folder_name: str, *, offered_at: float | None = None) -> Offer:
        """Record (or renew) a peer's offer of a folder; the name is the peer's, checked as ours are."""
        check_name("folder", folder_name)
        if not folder_id:
            raise InvalidValueError("an offered folder needs an ID")
        offer = Offer(peer_name, folder_id, folder_name, unix_time() if offered_at is None else offered_at)
        with self._transaction():
            self.peer(peer_name)
            self._db.execute(
                "INSERT INTO offers (peer_name, folder_id, folder_name, offered_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (peer_name, folder_id) DO UPDATE SET folder_name = excluded.folder_name, "
                "offered_at = excluded.offered_at",
                (offer.peer_name, offer.folder_id, offer.folder_name, offer.offered_at),
            )
        return offer

    def offers(self) -> list[Offer]:
        rows = self._db.execute(
            "SELECT peer_name, folder_id, folder_name, offered_at FROM offers ORDER BY offered_at, peer_name"
        )
        return [Offer(*row) for row in rows]

    def offer(self, peer_name: str, name_or_id: str) -> Offer:
        """A peer's offer by its folder ID, or by its name when that names only one of the peer's offers."""
        self.peer(peer_name)
        offers = [offer for offer in self.offers() if offer.peer_name == peer_name]
        by_id = [offer for offer in offers if offer.folder_id == name_or_id]
        if by_id:
            return by_id[0]
        by_name = [offer for offer in offers if offer.folder_name == name_or_id]
        if not by_name:
            raise UnknownOfferError(f"{peer_name} offers no folder named {name_or_id}; `ocsync offers` lists offers")
        if len(by_name) > 1:
            ids = ", ".join(offer.folder_id for offer in by_name)
            raise UnknownOfferError(
                f"{peer_name} offers {len(by_name)} folders named {name_or_id}; name one by its ID: {ids}"
            )
        return by_name[0]

    def remove_offer(self, peer_name: str, folder_id: str) -> bool:
        cursor = self._db.execute("DELETE FROM offers WHERE peer_name = ? AND folder_id = ?", (peer_name, folder_id))
        return cursor.rowcount == 1

    # Sync windows: the global one (peer_name None) and per-peer overrides.

    def set_window(self, peer_name: str | None, window: Window) -> None:
        with self._transaction():
            if peer_name is None:
                self._db.execute(
                    "INSERT OR REPLACE INTO global_window (only_row, from_minute, to_minute) VALUES (1, ?, ?)",
                    (window.from_minute, window.to_minute),
                )
            else:
                self.peer(peer_name)
                self._db.execute(
                    "INSERT OR REPLACE INTO peer_windows (peer_name, from_minute, to_minute) VALUES (?, ?, ?)",
                    (peer_name, window.from_minute, window.to_minute),
                )

    def clear_window(self, peer_name: str | None) -> bool:
        """Remove a window (the peer then follows the global one; no global one: always); False if none was set."""
        with self._transaction():
            if peer_name is None:
                cursor = self._db.execute("DELETE FROM global_window")
            else:
                self.peer(peer_name)
                cursor = self._db.execute("DELETE FROM peer_windows WHERE peer_name = ?", (peer_name,))
        return cursor.rowcount == 1

    def window(self, peer_name: str | None) -> Window | None:
        """The window set for a peer (None: no override) or the global one (peer_name None)."""
        if peer_name is None:
            row = self._one("SELECT from_minute, to_minute FROM global_window")
        else:
            row = self._one("SELECT from_minute, to_minute FROM peer_windows WHERE peer_name = ?", peer_name)
        return Window(*row) if row else None

    # Transfer progress.

    _TRANSFER_COLUMNS = "peer_name, sha256, folder_id, direction, size, done, updated_at"

    def record_transfer(self, record: TransferRecord) -> None:
        """Insert or update the progress of the transfer (peer, sha256, direction)."""
        if record.direction not in ("in", "out"):
            raise ValueError(f'a transfer direction is "in" or "out", not {record.direction!r}')
        with self._transaction():
            self.peer(record.peer_name)
            self._db.execute(
                f"INSERT OR REPLACE INTO transfers ({self._TRANSFER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.peer_name, record.sha256, record.folder_id, record.direction, record.size, record.done,
                 record.updated_at),
            )

    def transfers(self) -> list[TransferRecord]:
        rows = self._db.execute(f"SELECT {self._TRANSFER_COLUMNS} FROM transfers ORDER BY updated_at")
        return [TransferRecord(*row) for row in rows]

    def remove_transfer(self, peer_name: str, sha256: str, direction: str) -> None:
        self._db.execute(
            "DELETE FROM transfers WHERE peer_name = ? AND sha256 = ? AND direction = ?", (peer_name, sha256, direction)
        )

    # Event log.

    def log_event(
        self,
        kind: str,
        detail: str,
        *,
        folder_id: str | None = None,
        peer_name: str | None = None,
        time: float | None = None,
    ) -> EventRecord:
        when = unix_time() if time is None else time
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO events (time, kind, folder_id, peer_name, detail) VALUES (?, ?, ?, ?, ?)",
                (when, kind, folder_id, peer_name, detail),
            )
            self._db.execute("DELETE FROM events WHERE id <= ?", (cursor.lastrowid - _EVENTS_KEPT,))
        return EventRecord(cursor.lastrowid, when, kind, folder_id, peer_name, detail)

    def events(self, limit: int = 100) -> list[EventRecord]:
        """The newest `limit` events, oldest first (as a log reads)."""
        rows = self._db.execute(
            "SELECT id, time, kind, folder_id, peer_name, detail FROM "
            "(SELECT * FROM events ORDER BY id DESC LIMIT ?) ORDER BY id",
            (limit,),
        )
        return [EventRecord(*row) for row in rows]

    # The whole configuration as plain JSON values, for `ocsync status` and the daemon's snapshot.

    def summary(self) -> dict:
        folder_names = {folder.folder_id: folder.name for folder in self.folders()}

        def window_json(window: Window | None) -> dict | None:
            if window is None:
                return None
            return {"from": format_hhmm(window.from_minute), "to": format_hhmm(window.to_minute)}

        def address_json(host: str | None, port: int | None) -> str | None:
            return None if host is None else (format_host_port(host, port) if port is not None else host)

        return {
            "folders": [
                {
                    "name": folder.name,
                    "folder_id": folder.folder_id,
                    "path": str(folder.path),
                    "state": folder.state,
                    "shared_with": [
                        {"peer": share.peer_name, "acked_head": share.acked_head}
                        for share in self.shares_of_folder(folder.folder_id)
                    ],
                }
                for folder in self.folders()
            ],
            "peers": [
                {
                    "name": peer.name,
                    "device_id": peer.device_id,
                    "presented_device_id": format_device_id(peer.pending_key) if peer.pending_key else None,
                    "address": address_json(peer.address, peer.port),
                    "local_address": address_json(peer.local_address, peer.local_port),
                    "folders": [folder_names[share.folder_id] for share in self.shares_with_peer(peer.name)],
                    "window": window_json(self.window(peer.name)),
                }
                for peer in self.peers()
            ],
            "offers": [
                {"peer": offer.peer_name, "folder_id": offer.folder_id, "folder_name": offer.folder_name,
                 "offered_at": offer.offered_at}
                for offer in self.offers()
            ],
            "window": window_json(self.window(None)),
        }

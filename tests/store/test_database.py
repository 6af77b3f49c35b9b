"""The Store on real SQLite files: what it keeps, what it refuses, and how its schema is upgraded."""

import sqlite3
import threading

import pytest

from ocsync_tui.identity import DeviceIdError, format_device_id
from ocsync_tui.store import database
from ocsync_tui.store.database import (
    DeviceMismatchError,
    FolderExistsError,
    FolderNestingError,
    Offer,
    PeerExistsError,
    PeerPendingError,
    StoreError,
    TransferRecord,
    UnknownFolderError,
    UnknownOfferError,
    UnknownPeerError,
    Window,
    open_store,
)
from ocsync_tui.store.values import InvalidValueError

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
DEVICE_A, DEVICE_B = format_device_id(KEY_A), format_device_id(KEY_B)
HEAD = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def store(home):
    with open_store(home) as opened:
        yield opened


def test_a_new_store_is_wal_with_foreign_keys_at_the_current_schema_version(home):
    with open_store(home) as store:
        assert store.path == home / "ocsync.db"
    connection = sqlite3.connect(home / "ocsync.db")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION == 1
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"peers", "folders", "shares", "offers", "global_window", "peer_windows", "transfers", "events"} <= tables


def test_an_empty_file_is_migrated(home):
    home.mkdir()
    (home / "ocsync.db").write_bytes(b"")
    with open_store(home) as store:
        store.add_peer("laptop", device_id=DEVICE_A)
    with open_store(home) as store:
        assert store.peer("laptop").device_id == DEVICE_A


def test_migrations_run_in_order_from_the_recorded_version(home, monkeypatch):
    with open_store(home):
        pass
    second = ("ALTER TABLE peers ADD COLUMN note TEXT", "UPDATE peers SET note = 'from v2'")
    monkeypatch.setattr(database, "_MIGRATIONS", [*database._MIGRATIONS, second])
    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    with open_store(home):
        pass
    connection = sqlite3.connect(home / "ocsync.db")
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "note" in {row[1] for row in connection.execute("PRAGMA table_info(peers)")}


def test_a_failed_migration_leaves_the_old_version(home, monkeypatch):
    with open_store(home) as store:
        store.add_peer("laptop", device_id=DEVICE_A)
    broken = ("ALTER TABLE peers ADD COLUMN note TEXT", "THIS IS NOT SQL")
    monkeypatch.setattr(database, "_MIGRATIONS", [*database._MIGRATIONS, broken])
    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    with pytest.raises(StoreError, match="unusable"):
        open_store(home)
    connection = sqlite3.connect(home / "ocsync.db")
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "note" not in {row[1] for row in connection.execute("PRAGMA table_info(peers)")}


def test_a_newer_schema_is_refused(home):
    with open_store(home):
        pass
    sqlite3.connect(home / "ocsync.db").execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this ocsync knows"):
        open_store(home)


def test_a_file_that_is_not_a_database_is_refused_in_one_line(home):
    home.mkdir()
    (home / "ocsync.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as caught:
        open_store(home)
    assert "\n" not in str(caught.value)


def test_reopening_keeps_everything(home, tmp_path):
    with open_store(home) as store:
        store.add_peer("laptop", device_id=DEVICE_A, address="laptop.example", port=44996,
                       local_address="192.168.1.5", local_port=5000)
        store.add_peer("phone", address="198.51.100.7", port=1234)
        store.set_pending_key("phone", KEY_B)
        store.add_folder("aaaa-bbbb", "docs", tmp_path / "docs")
        store.share("aaaa-bbbb", "laptop")
        store.set_acked_head("aaaa-bbbb", "laptop", HEAD)
        store.add_offer("phone", "cccc-dddd", "photos", offered_at=5.0)
        store.set_window(None, Window(60, 120))
        store.set_window("laptop", Window(1380, 300))
        store.record_transfer(TransferRecord("laptop", "ab" * 32, "aaaa-bbbb", "out", 1000, 400, 7.0))
        store.log_event("commit", "docs: a.txt", folder_id="aaaa-bbbb", time=8.0)
        store.set_folder_state("aaaa-bbbb", "stopped: the folder marker is missing")
    with open_store(home) as store:
        laptop = store.peer("laptop")
        assert (laptop.device_id, laptop.address, laptop.port, laptop.local_address, laptop.local_port) == (
            DEVICE_A, "laptop.example", 44996, "192.168.1.5", 5000
        )
        phone = store.peer("phone")
        assert phone.pending and phone.pending_key == KEY_B and phone.port == 1234
        folder = store.folder("docs")
        assert folder.path == (tmp_path / "docs").resolve()
        assert folder.state == "stopped: the folder marker is missing"
        assert [(s.folder_id, s.peer_name, s.acked_head) for s in store.shares_with_peer("laptop")] == [
            ("aaaa-bbbb", "laptop", HEAD)
        ]
        assert store.offers() == [Offer("phone", "cccc-dddd", "photos", 5.0)]
        assert store.window(None) == Window(60, 120)
        assert store.window("laptop") == Window(1380, 300)
        assert store.window("phone") is None
        assert [(t.done, t.size) for t in store.transfers()] == [(400, 1000)]
        assert [(e.kind, e.detail, e.time) for e in store.events()] == [("commit", "docs: a.txt", 8.0)]


def test_peer_names_and_device_ids_are_unique(store):
    store.add_peer("laptop", device_id=DEVICE_A)
    with pytest.raises(PeerExistsError, match="a peer named laptop already exists"):
        store.add_peer("laptop", address="example.org")
    with pytest.raises(PeerExistsError, match="already is the peer laptop"):
        store.add_peer("other", device_id=DEVICE_A.lower())
    assert store.peer_by_device_id(DEVICE_A.lower().replace("-", "")).name == "laptop"
    assert store.peer_by_device_id(DEVICE_B) is None


def test_bad_peers_are_refused(store):
    with pytest.raises(InvalidValueError, match="device ID, its address, or both"):
        store.add_peer("nobody")
    with pytest.raises(DeviceIdError):
        store.add_peer("typo", device_id=DEVICE_A[:-1] + ("A" if DEVICE_A[-1] != "A" else "B"))
    with pytest.raises(InvalidValueError, match="out of range"):
        store.add_peer("far", address="example.org", port=70000)
    with pytest.raises(InvalidValueError, match="not an IP address"):
        store.add_peer("lan", address="example.org", local_address="laptop.local")
    with pytest.raises(InvalidValueError, match="control characters"):
        store.add_peer("bad\x1bname", address="example.org")
    assert store.peers() == []


def test_unknown_peers_and_folders_are_clear_errors(store, tmp_path):
    store.add_folder("aaaa", "docs", tmp_path / "docs")
    store.add_peer("laptop", device_id=DEVICE_A)
    with pytest.raises(UnknownPeerError, match="no peer named ghost; `ocsync peer list` shows them"):
        store.peer("ghost")
    for call in (
        lambda: store.remove_peer("ghost"),
        lambda: store.share("aaaa", "ghost"),
        lambda: store.set_window("ghost", Window(1, 2)),
        lambda: store.add_offer("ghost", "x", "y"),
        lambda: store.confirm_peer("ghost", DEVICE_B),
    ):
        with pytest.raises(UnknownPeerError):
            call()
    with pytest.raises(UnknownFolderError, match="no folder named ghost; `ocsync folder list` shows them"):
        store.folder("ghost")
    for call in (
        lambda: store.remove_folder("ghost"),
        lambda: store.share("ghost", "laptop"),
        lambda: store.unshare("ghost", "laptop"),
        lambda: store.set_folder_state("ghost", "ok"),
    ):
        with pytest.raises(UnknownFolderError):
            call()


def test_folders_by_name_id_and_path(store, tmp_path):
    docs = store.add_folder("aaaa", "docs", tmp_path / "docs")
    assert store.folder("docs") == store.folder("aaaa") == docs
    assert store.folder_by_path(tmp_path / "x" / ".." / "docs") == docs
    assert store.folder_by_path(tmp_path / "other") is None
    with pytest.raises(FolderExistsError, match="a folder named docs already exists"):
        store.add_folder("bbbb", "docs", tmp_path / "elsewhere")
    with pytest.raises(FolderExistsError, match="already is the folder docs"):
        store.add_folder("bbbb", "again", tmp_path / "docs")
    with pytest.raises(FolderExistsError, match="folder ID aaaa already is the folder docs"):
        store.add_folder("aaaa", "again", tmp_path / "elsewhere")
    with pytest.raises(ValueError):
        store.set_folder_state("aaaa", "sleeping")


def test_nested_folders_are_refused_both_ways(store, tmp_path):
    store.add_folder("aaaa", "docs", tmp_path / "docs")
    with pytest.raises(FolderNestingError, match="is inside the folder docs"):
        store.add_folder("bbbb", "inner", tmp_path / "docs" / "inner")
    with pytest.raises(FolderNestingError, match="contains the folder docs"):
        store.add_folder("bbbb", "outer", tmp_path)
    store.add_folder("bbbb", "docs2", tmp_path / "docs2")  # a sibling sharing a name prefix is not nested
    assert [f.name for f in store.folders()] == ["docs", "docs2"]


def test_removing_a_peer_drops_its_shares_offers_window_and_transfers(store, tmp_path):
    store.add_folder("aaaa", "docs", tmp_path / "docs")
    store.add_peer("laptop", device_id=DEVICE_A)
    store.add_peer("phone", device_id=DEVICE_B)
    for peer in ("laptop", "phone"):
        store.share("aaaa", peer)
        store.add_offer(peer, "cccc", "photos")
        store.set_window(peer, Window(1, 2))
        store.record_transfer(TransferRecord(peer, "ab" * 32, "aaaa", "in", 10, 5, 1.0))
    store.log_event("peer", "laptop connected", peer_name="laptop")
    store.remove_peer("laptop")
    assert [p.name for p in store.peers()] == ["phone"]
    assert [s.peer_name for s in store.shares_of_folder("aaaa")] == ["phone"]
    assert [o.peer_name for o in store.offers()] == ["phone"]
    assert store.window("phone") == Window(1, 2)
    assert [t.peer_name for t in store.transfers()] == ["phone"]
    assert [e.peer_name for e in store.events()] == ["laptop"]  # the log keeps its history
    store.add_peer("laptop", address="example.org")  # the name is free again, with nothing attached
    assert store.window("laptop") is None and store.shares_with_peer("laptop") == []


def test_removing_a_folder_drops_its_shares_only(store, tmp_path):
    store.add_folder("aaaa", "docs", tmp_path / "docs")
    store.add_peer("laptop", device_id=DEVICE_A)
    store.share("aaaa", "laptop")
    removed = store.remove_folder("docs")
    assert removed.folder_id == "aaaa"
    assert store.folders() == [] and store.shares_with_peer("laptop") == []
    assert store.peer("laptop").device_id == DEVICE_A


def test_shares_and_acknowledged_heads(store, tmp_path):
    store.add_folder("aaaa", "docs", tmp_path / "docs")
    store.add_peer("laptop", device_id=DEVICE_A)
    assert not store.is_shared("aaaa", "laptop")
    assert store.share("aaaa", "laptop") is True
    assert store.share("aaaa", "laptop") is False
    assert store.is_shared("aaaa", "laptop")
    assert store.shares_of_folder("aaaa")[0].acked_head is None
    store.set_acked_head("aaaa", "laptop", HEAD)
    assert store.shares_of_folder("aaaa")[0].acked_head == HEAD
    with pytest.raises(ValueError):
        store.set_acked_head("aaaa", "laptop", "not a head")
    assert store.unshare("aaaa", "laptop") is True
    assert store.unshare("aaaa", "laptop") is False
    store.set_acked_head("aaaa", "laptop", HEAD)  # an acknowledgement after the unshare changes nothing
    assert store.shares_of_folder("aaaa") == []


def test_confirming_a_pending_peer(store):
    store.add_peer("phone", address="198.51.100.7")
    assert store.peer("phone").pending
    store.set_pending_key("phone", KEY_B)
    with pytest.raises(DeviceMismatchError, match=f"is not the key peer phone presented \\({DEVICE_B}\\)"):
        store.confirm_peer("phone", DEVICE_A)
    assert store.peer("phone").pending
    confirmed = store.confirm_peer("phone", DEVICE_B.lower())
    assert (confirmed.device_id, confirmed.pending_key, confirmed.pending) == (DEVICE_B, None, False)
    assert store.confirm_peer("phone", DEVICE_B) == confirmed
    with pytest.raises(DeviceMismatchError, match="already is device"):
        store.confirm_peer("phone", DEVICE_A)
    with pytest.raises(ValueError):
        store.set_pending_key("phone", b"short")


def test_a_pending_peer_cannot_be_shared_with_until_confirmed(store, tmp_path):
    store.add_folder("aaaa", "docs", tmp_path / "docs")
    store.add_peer("phone", address="198.51.100.7")
    with pytest.raises(PeerPendingError, match="peer phone is pending: confirm its device ID first"):
        store.share("aaaa", "phone")
    store.confirm_peer("phone", DEVICE_B)
    assert store.share("aaaa", "phone") is True


def test_confirming_without_a_presented_key_sets_the_id_unless_another_peer_has_it(store):
    store.add_peer("laptop", device_id=DEVICE_A)
    store.add_peer("phone", address="198.51.100.7")
    with pytest.raises(PeerExistsError, match="already is the peer laptop"):
        store.confirm_peer("phone", DEVICE_A)
    assert store.confirm_peer("phone", DEVICE_B).device_id == DEVICE_B


def test_offers_by_name_or_id(store):
    store.add_peer("laptop", device_id=DEVICE_A)
    store.add_peer("phone", device_id=DEVICE_B)
    store.add_offer("laptop", "aaaa", "photos", offered_at=1.0)
    store.add_offer("laptop", "bbbb", "photos", offered_at=2.0)
    store.add_offer("laptop", "cccc", "music", offered_at=3.0)
    store.add_offer("phone", "dddd", "photos", offered_at=4.0)
    assert store.offer("laptop", "music").folder_id == "cccc"
    assert store.offer("laptop", "bbbb").folder_name == "photos"
    with pytest.raises(UnknownOfferError, match="laptop offers 2 folders named photos; name one by its ID: aaaa, bbbb"):
        store.offer("laptop", "photos")
    with pytest.raises(UnknownOfferError, match="phone offers no folder named music"):
        store.offer("phone", "music")
    store.add_offer("laptop", "cccc", "songs", offered_at=9.0)  # offered again: renewed, not doubled
    assert [(o.folder_id, o.folder_name) for o in store.offers()] == [
        ("aaaa", "photos"), ("bbbb", "photos"), ("dddd", "photos"), ("cccc", "songs")
    ]
    assert store.remove_offer("laptop", "cccc") is True
    assert store.remove_offer("laptop", "cccc") is False
    with pytest.raises(InvalidValueError):
        store.add_offer("laptop", "eeee", "bad\nname")


def test_windows_global_and_per_peer(store):
    store.add_peer("laptop", device_id=DEVICE_A)
    assert store.window(None) is None
    store.set_window(None, Window(60, 120))
    store.set_window(None, Window(61, 121))  # replaced, not added
    store.set_window("laptop", Window(1320, 360))
    assert (store.window(None), store.window("laptop")) == (Window(61, 121), Window(1320, 360))
    assert store.clear_window("laptop") is True
    assert store.clear_window("laptop") is False
    assert store.window("laptop") is None and store.window(None) == Window(61, 121)
    assert store.clear_window(None) is True
    assert store.window(None) is None


def test_transfers_are_upserted_by_peer_hash_and_direction(store):
    store.add_peer("laptop", device_id=DEVICE_A)
    sha = "ab" * 32
    store.record_transfer(TransferRecord("laptop", sha, "aaaa", "in", 100, 10, 1.0))
    store.record_transfer(TransferRecord("laptop", sha, "aaaa", "in", 100, 60, 2.0))
    store.record_transfer(TransferRecord("laptop", sha, "aaaa", "out", 100, 5, 3.0))
    assert [(t.direction, t.done) for t in store.transfers()] == [("in", 60), ("out", 5)]
    store.remove_transfer("laptop", sha, "in")
    assert [t.direction for t in store.transfers()] == ["out"]
    with pytest.raises(ValueError):
        store.record_transfer(TransferRecord("laptop", sha, "aaaa", "sideways", 1, 1, 1.0))
    with pytest.raises(UnknownPeerError):
        store.record_transfer(TransferRecord("ghost", sha, "aaaa", "in", 1, 1, 1.0))


def test_event_log_keeps_the_newest(store, monkeypatch):
    monkeypatch.setattr(database, "_EVENTS_KEPT", 5)
    for number in range(8):
        store.log_event("sync", f"event {number}", time=float(number))
    assert [e.detail for e in store.events()] == [f"event {n}" for n in range(3, 8)]
    assert [e.detail for e in store.events(limit=2)] == ["event 6", "event 7"]


def test_two_connections_see_each_others_writes(home, tmp_path):
    """The daemon and a CLI command each open the store; WAL lets both work."""
    with open_store(home) as daemon_side, open_store(home) as cli_side:
        cli_side.add_peer("laptop", device_id=DEVICE_A)
        assert daemon_side.peer("laptop").device_id == DEVICE_A
        daemon_side.log_event("peer", "laptop connected", peer_name="laptop")
        assert [e.kind for e in cli_side.events()] == ["peer"]


def test_a_store_belongs_to_its_thread(store):
    failures = []

    def use_elsewhere():
        try:
            store.peers()
        except sqlite3.ProgrammingError as error:
            failures.append(error)

    thread = threading.Thread(target=use_elsewhere)
    thread.start()
    thread.join()
    assert len(failures) == 1


def test_summary_is_plain_json(store, tmp_path):
    import json

    store.add_folder("aaaa", "docs", tmp_path / "docs")
    store.add_peer("laptop", device_id=DEVICE_A, address="::1", port=5)
    store.add_peer("phone", address="198.51.100.7", port=44996)
    store.set_pending_key("phone", KEY_B)
    store.share("aaaa", "laptop")
    store.set_window(None, Window(60, 1380))
    summary = json.loads(json.dumps(store.summary()))
    assert summary["folders"][0]["shared_with"] == [{"peer": "laptop", "acked_head": None}]
    assert summary["peers"][0]["address"] == "[::1]:5"
    assert summary["peers"][0]["folders"] == ["docs"]
    assert summary["peers"][1]["device_id"] is None
    assert summary["peers"][1]["presented_device_id"] == DEVICE_B
    assert summary["window"] == {"from": "01:00", "to": "23:00"}

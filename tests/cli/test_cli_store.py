"""The CLI's folder/peer/share/offer/schedule/status commands without a daemon: they edit the store.

In-process through `cli.main` (fast), plus a few real `python -m ocsync_tui` runs for exit codes and
the absence of tracebacks.
"""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ocsync_tui.cli import main
from ocsync_tui.identity import format_device_id, load_or_create_identity
from ocsync_tui.store.database import Window, open_store
from ocsync_tui.vcs.folder import FolderRepo, MARKER_NAME

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
DEVICE_A, DEVICE_B = format_device_id(KEY_A), format_device_id(KEY_B)


@pytest.fixture
def ocsync(home, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(["--home", str(home), *args])
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def refused(result, fragment: str) -> None:
    code, out, err = result
    assert code == 1, (code, out, err)
    assert err.startswith("ocsync: ") and err.count("\n") == 1, err
    assert fragment in err, err


def test_folder_add_makes_and_registers_a_folder(ocsync, home, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a\n")
    code, out, err = ocsync("folder", "add", str(docs))
    assert code == 0, err
    folder_id = FolderRepo.open(docs).folder_id
    assert out.splitlines() == [out.splitlines()[0], f"added folder docs (ID {folder_id}) at {docs}"]
    assert out.splitlines()[0].startswith("add     a.txt")
    with open_store(home) as store:
        assert (store.folder("docs").folder_id, store.folder("docs").path) == (folder_id, docs)
    code, out, _ = ocsync("folder", "list")
    assert f"docs  {docs}  ID {folder_id}  [ok]" in out and "shared with: nobody" in out
    refused(ocsync("folder", "add", str(docs), "--name", "again"), f"{docs} already is the folder docs")
    refused(ocsync("folder", "add", str(tmp_path / "other"), "--name", "docs"), "a folder named docs already exists")


def test_folder_add_registers_an_existing_folder_under_its_marker_id(ocsync, home, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    assert ocsync("init", str(photos))[0] == 0
    folder_id = FolderRepo.open(photos).folder_id
    code, out, err = ocsync("folder", "add", str(photos), "--name", "Fotos")
    assert code == 0, err
    assert out.strip() == f"added folder Fotos (ID {folder_id}) at {photos}"  # no second init


def test_folder_add_restores_a_missing_marker(ocsync, home, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    ocsync("init", str(photos))
    (photos / MARKER_NAME).unlink()
    assert ocsync("folder", "add", str(photos))[0] == 0
    assert (photos / MARKER_NAME).exists()


def test_nested_folders_are_refused_before_anything_is_created(ocsync, home, tmp_path):
    ocsync("folder", "add", str(tmp_path / "docs"))
    inner = tmp_path / "docs" / "inner"
    inner.mkdir()
    refused(ocsync("folder", "add", str(inner)), "is inside the folder docs")
    assert not (inner / ".git").exists()
    refused(ocsync("folder", "add", str(tmp_path)), "contains the folder docs")
    assert not (tmp_path / ".git").exists()


def test_folder_rm_keeps_the_files(ocsync, home, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a\n")
    ocsync("folder", "add", str(docs))
    code, out, _ = ocsync("folder", "rm", "docs")
    assert code == 0 and out.strip() == f"stopped syncing docs; its files stay in {docs}"
    assert (docs / "a.txt").read_text() == "a\n" and (docs / ".git").is_dir()
    assert ocsync("folder", "list")[1].startswith("no folders")
    refused(ocsync("folder", "rm", "docs"), "no folder named docs")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--id", "ABC"], "a device ID has 56 characters"),
        (["--id", DEVICE_A[:-1] + ("A" if DEVICE_A[-1] != "A" else "B")], "fails its check"),
        (["--address", "example.org:70000"], "port 70000 is out of range"),
        (["--address", "exa mple.org"], "neither an IP address nor a host name"),
        (["--address", "example.org", "--local-address", "laptop.local"], "not an IP address"),
        (["--local-address", "192.168.1.2"], "give the peer's device ID (--id), its address (--address), or both"),
        ([], "or both"),
    ],
)
def test_bad_peer_values_are_refused_in_one_line(ocsync, home, args, fragment):
    refused(ocsync("peer", "add", "laptop", *args), fragment)
    with open_store(home) as store:
        assert store.peers() == []


def test_peer_by_address_is_pending_until_confirmed(ocsync, home):
    code, out, _ = ocsync("peer", "add", "phone", "--address", "[2001:db8::7]:5000", "--local-address", "10.0.0.7")
    assert code == 0 and "pending" in out and "ocsync peer confirm phone --id" in out
    assert "phone  pending: not seen yet" in ocsync("peer", "list")[1]
    with open_store(home) as store:
        store.set_pending_key("phone", KEY_B)
    listing = ocsync("peer", "list")[1]
    assert f"pending: presented {DEVICE_B}" in listing
    assert "address: [2001:db8::7]:5000  local: 10.0.0.7:44996" in listing
    refused(ocsync("peer", "confirm", "phone", "--id", DEVICE_A), "is not the key peer phone presented")
    ocsync("folder", "add", str(home.parent / "docs"))
    refused(ocsync("share", "docs", "--with", "phone"), "peer phone is pending: confirm its device ID first")
    code, out, _ = ocsync("peer", "confirm", "phone", "--id", DEVICE_B.lower())
    assert code == 0 and out.strip() == f"confirmed peer phone ({DEVICE_B})"
    assert f"phone  {DEVICE_B}" in ocsync("peer", "list")[1]
    refused(ocsync("peer", "confirm", "ghost", "--id", DEVICE_B), "no peer named ghost")


def test_share_and_unshare(ocsync, home, tmp_path):
    ocsync("folder", "add", str(tmp_path / "docs"))
    assert ocsync("peer", "add", "laptop", "--id", DEVICE_A)[0] == 0
    refused(ocsync("share", "docs", "--with", "ghost"), "no peer named ghost; `ocsync peer list` shows them")
    refused(ocsync("share", "ghost", "--with", "laptop"), "no folder named ghost")
    assert ocsync("share", "docs", "--with", "laptop")[1].strip() == "shared docs with laptop"
    assert ocsync("share", "docs", "--with", "laptop")[1].strip() == "docs already is shared with laptop"
    assert "shared with: laptop (acknowledged nothing yet)" in ocsync("folder", "list")[1]
    assert "folders: docs" in ocsync("peer", "list")[1]
    assert ocsync("unshare", "docs", "--from", "laptop")[1].strip() == "stopped sharing docs with laptop"
    refused(ocsync("unshare", "docs", "--from", "laptop"), "docs is not shared with laptop")


def test_peer_rm_drops_its_shares(ocsync, home, tmp_path):
    ocsync("folder", "add", str(tmp_path / "docs"))
    ocsync("peer", "add", "laptop", "--id", DEVICE_A)
    ocsync("share", "docs", "--with", "laptop")
    ocsync("schedule", "set", "--peer", "laptop", "--from", "01:00", "--to", "02:00")
    assert ocsync("peer", "rm", "laptop")[0] == 0
    assert "shared with: nobody" in ocsync("folder", "list")[1]
    assert ocsync("schedule", "show")[1].strip() == "global: always (no window)"
    refused(ocsync("peer", "rm", "laptop"), "no peer named laptop")


def test_offers_accept_and_decline(ocsync, home, tmp_path, monkeypatch):
    with open_store(home) as store:
        store.add_peer("laptop", device_id=DEVICE_A)
        store.add_offer("laptop", "aaaa-bbbb-cccc-dddd", "photos", offered_at=1.0)
        store.add_offer("laptop", "eeee-ffff-gggg-hhhh", "photos", offered_at=2.0)
        store.add_offer("laptop", "iiii-jjjj-kkkk-llll", "music", offered_at=3.0)
    out = ocsync("offers")[1]
    assert out.count("laptop offers photos") == 2 and "`ocsync accept laptop iiii-jjjj-kkkk-llll`" in out
    refused(ocsync("accept", "laptop", "photos"), "laptop offers 2 folders named photos; name one by its ID")
    refused(ocsync("accept", "laptop", "films"), "laptop offers no folder named films")
    refused(ocsync("accept", "ghost", "photos"), "no peer named ghost")

    monkeypatch.chdir(tmp_path)
    code, out, err = ocsync("accept", "laptop", "music")
    assert code == 0, err
    assert out.strip().endswith(f"accepted music from laptop into {tmp_path / 'music'}; "
                                "its files arrive once the daemon runs (`ocsync daemon`)")
    assert FolderRepo.open(tmp_path / "music").folder_id == "iiii-jjjj-kkkk-llll"
    code, out, err = ocsync("accept", "laptop", "aaaa-bbbb-cccc-dddd", "--path", str(tmp_path / "pics"))
    assert code == 0, err
    with open_store(home) as store:
        assert [(f.name, f.folder_id) for f in store.folders()] == [
            ("music", "iiii-jjjj-kkkk-llll"), ("photos", "aaaa-bbbb-cccc-dddd")
        ]
        assert store.is_shared("aaaa-bbbb-cccc-dddd", "laptop")
        assert [o.folder_id for o in store.offers()] == ["eeee-ffff-gggg-hhhh"]
    refused(ocsync("accept", "laptop", "photos", "--path", str(tmp_path / "more")),
            "a folder named photos already exists")
    assert not (tmp_path / "more").exists()
    assert ocsync("decline", "laptop", "photos")[1].strip() == "declined photos from laptop"
    assert ocsync("offers")[1].strip() == "no offers"


def test_accepting_a_folder_held_already_shares_it_where_it_is(ocsync, home, tmp_path):
    with open_store(home) as store:
        store.add_peer("laptop", device_id=DEVICE_A)
        store.add_peer("phone", device_id=DEVICE_B)
        store.add_offer("laptop", "iiii-jjjj-kkkk-llll", "music")
    assert ocsync("accept", "laptop", "music", "--path", str(tmp_path / "music"))[0] == 0
    with open_store(home) as store:
        store.add_offer("phone", "iiii-jjjj-kkkk-llll", "music")
    refused(ocsync("accept", "phone", "music", "--path", str(tmp_path / "elsewhere")),
            f"this device holds music at {tmp_path / 'music'} already; accept it without --path")
    code, out, err = ocsync("accept", "phone", "music")
    assert code == 0, err
    assert f"into {tmp_path / 'music'}" in out
    with open_store(home) as store:
        assert [s.peer_name for s in store.shares_of_folder("iiii-jjjj-kkkk-llll")] == ["laptop", "phone"]
        assert store.offers() == []


def test_schedule_set_show_clear(ocsync, home):
    ocsync("peer", "add", "laptop", "--id", DEVICE_A)
    assert ocsync("schedule", "show")[1].strip() == "global: always (no window)"
    code, out, _ = ocsync("schedule", "set", "--from", "22:00", "--to", "6:00")
    assert code == 0 and out.strip() == "sync window for every peer without its own window: 22:00-06:00"
    assert ocsync("schedule", "set", "--peer", "laptop", "--from", "12:00", "--to", "12:00")[0] == 0
    assert ocsync("schedule", "show")[1].splitlines() == ["global: 22:00-06:00", "laptop: all day"]
    with open_store(home) as store:
        assert store.window(None) == Window(22 * 60, 6 * 60)
    for bad in ("25:00", "24:00", "7:5", "noon"):
        refused(ocsync("schedule", "set", "--from", bad, "--to", "06:00"), f"{bad!r} is not a time of day")
    refused(ocsync("schedule", "set", "--peer", "ghost", "--from", "01:00", "--to", "02:00"), "no peer named ghost")
    assert ocsync("schedule", "clear", "--peer", "laptop")[1].strip() == "peer laptop follows the global window"
    assert ocsync("schedule", "clear")[0] == 0
    assert ocsync("schedule", "show")[1].strip() == "global: always (no window)"


def test_sync_needs_the_daemon(ocsync, home):
    refused(ocsync("sync"), f"no daemon is running on {home}; start one with `ocsync daemon`")


def test_status_text_and_json(ocsync, home, tmp_path):
    identity = load_or_create_identity(home)
    ocsync("folder", "add", str(tmp_path / "docs"))
    ocsync("peer", "add", "laptop", "--id", DEVICE_A, "--address", "192.0.2.1")
    ocsync("share", "docs", "--with", "laptop")
    code, out, _ = ocsync("status")
    assert code == 0
    assert out.splitlines()[:3] == [
        f"device: {identity.name}  {identity.device_id}",
        "daemon: not running (start it with `ocsync daemon`)",
        "sync window: always (no window)",
    ]
    assert "shared with: laptop" in out and "address: 192.0.2.1:44996" in out
    code, out, _ = ocsync("status", "--json")
    state = json.loads(out)
    assert state["daemon"] is None
    assert state["device"]["device_id"] == identity.device_id
    assert state["folders"][0]["name"] == "docs" and state["peers"][0]["folders"] == ["docs"]


def test_daemon_port_is_checked_before_starting(ocsync):
    refused(ocsync("daemon", "--port", "70000"), "port 70000 is out of range")


def test_commit_without_a_daemon_works_on_a_registered_folder(ocsync, home, tmp_path):
    docs = tmp_path / "docs"
    ocsync("folder", "add", str(docs))
    (docs / "b.txt").write_text("b\n")
    code, out, err = ocsync("commit", str(docs))
    assert code == 0, err
    assert out.startswith("add     b.txt")


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), *args], capture_output=True, text=True, timeout=60
    )


def test_real_processes_exit_codes_and_no_tracebacks(home, tmp_path):
    for args, fragment in [
        (["peer", "add", "laptop", "--id", "not-an-id"], "device ID"),
        (["schedule", "set", "--from", "25:00", "--to", "01:00"], "not a time of day"),
        (["share", "docs", "--with", "ghost"], "no folder named docs"),
        (["daemon", "--port", "x"], "not a port number"),
    ]:
        result = run_cli(home, *args)
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    result = run_cli(home, "schedule", "set", "--from", "01:00")
    assert result.returncode == 2 and "the following arguments are required: --to" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_names_every_subcommand(home):
    result = run_cli(home, "--help")
    assert result.returncode == 0
    for command in ("id", "init", "commit", "log", "restore", "bundle", "folder", "peer", "share", "unshare",
                    "offers", "accept", "decline", "schedule", "sync", "status", "daemon", "demo"):
        assert f"\n    {command} " in result.stdout, command
    for group, actions in (("folder", ("add", "list", "rm")), ("peer", ("add", "list", "rm", "confirm")),
                           ("schedule", ("set", "clear", "show")), ("bundle", ("create", "apply"))):
        out = run_cli(home, group, "--help").stdout
        assert all(f"\n    {action} " in out for action in actions), out


def test_a_store_locked_too_long_is_one_line(ocsync, home, monkeypatch):
    from ocsync_tui.store import database

    open_store(home).close()
    monkeypatch.setattr(database, "_BUSY_TIMEOUT_SECONDS", 0.1)
    holder = sqlite3.connect(home / "ocsync.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = ocsync("peer", "add", "laptop", "--id", DEVICE_A)
        refused(result, "the store could not be written (database is locked)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

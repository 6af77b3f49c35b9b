"""The `ocsync` command line: argument parsing and printing; the work happens in the packages.

With a daemon running on the home, every command that changes something goes through its control
API, so it takes effect at once and nothing writes beside the daemon; without one, commands edit the
store directly and the daemon picks the changes up when it starts. Listings read the store either way
(the daemon keeps it current; WAL lets a reader work beside it).
"""

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from ocsync_tui import __version__
from ocsync_tui.errors import OcsyncError
from ocsync_tui.home import HOME_ENV, ensure_home, resolve_home
from ocsync_tui.identity import load_or_create_identity, rename_device
from ocsync_tui.store.values import (
    canonical_device_id,
    check_name,
    format_hhmm,
    format_host_port,
    parse_hhmm,
    parse_host_port,
    parse_ip_port,
    parse_port,
)


def _stderr_progress(label: str):
    """A progress callback (done, total) that redraws one line on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


def _home(args) -> Path:
    return ensure_home(resolve_home(args.home))


def _identity(args):
    return load_or_create_identity(_home(args))


def _store(args):
    from ocsync_tui.store.database import open_store

    return open_store(_home(args))


def _daemon(args):
    """A client of the daemon running on this home, or None when none runs."""
    from ocsync_tui.control_client import connect_to_daemon

    return connect_to_daemon(_home(args))


class NoDaemonError(OcsyncError):
    pass


def _require_daemon(args, what: str):
    client = _daemon(args)
    if client is None:
        raise NoDaemonError(f"{what} needs the daemon, and no daemon is running on {_home(args)}; "
                            "start one with `ocsync daemon`")
    return client


def _managed_folder(args, root: Path):
    """(client, store folder) when a running daemon syncs the folder at `root`, else (None, None): then the
    command works on the repository directly, its folder lock keeping other writers out."""
    client = _daemon(args)
    if client is None:
        return None, None
    with _store(args) as store:
        folder = store.folder_by_path(root)
    return (client, folder) if folder is not None else (None, None)


def cmd_id(args) -> int:
    home = ensure_home(resolve_home(args.home))
    identity = rename_device(home, args.rename) if args.rename else load_or_create_identity(home)
    print(f"Device name: {identity.name}")
    print(f"Device ID:   {identity.device_id}")
    return 0


def _print_commits(notes, committed, skipped, held_deletions) -> None:
    """committed: (action, path, commit id) triples; skipped: (path, reason) pairs."""
    for note in notes:
        print(note)
    for action, path, commit_id in committed:
        print(f"{action:<7} {path}  [{commit_id[:10]}]")
    for path, reason in skipped:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    if held_deletions:
        print(
            f"held {len(held_deletions)} deletions (more than half of the files would go); "
            "check the folder, then run `ocsync commit PATH --confirm-deletions`",
            file=sys.stderr,
        )
    if not committed:
        print("nothing to commit")


def _print_commit_report(report) -> None:
    committed = [(record.action, record.path, record.commit_id) for record in report.committed]
    _print_commits(report.notes, committed, report.skipped, report.held_deletions)


def _print_daemon_commit_report(result: dict) -> None:
    """The daemon's answer to `commit` (engine/commands.py), printed as a commit made here prints."""
    committed = [(c.get("action", "?"), c.get("path", "?"), c.get("commit", "")) for c in result.get("committed", [])]
    skipped = [(s.get("path", "?"), s.get("reason", "")) for s in result.get("skipped", [])]
    _print_commits(result.get("notes", []), committed, skipped, result.get("held_deletions", []))


def cmd_init(args) -> int:
    from ocsync_tui.vcs.folder import init_folder

    report = init_folder(Path(args.path), _identity(args), progress=_stderr_progress("committing"))
    _print_commit_report(report)
    return 0


def cmd_commit(args) -> int:
    from ocsync_tui.vcs.writer import folder_writer

    client, folder = _managed_folder(args, Path(args.path))
    if client is not None:
        extra = {"confirm_deletions": True} if args.confirm_deletions else {}
        _print_daemon_commit_report(client.call("commit", folder=folder.name, **extra))
        return 0
    identity = _identity(args)
    with folder_writer(Path(args.path)) as folder:
        from ocsync_tui.vcs.committer import commit_pending

        report = commit_pending(
            folder,
            identity,
            confirm_deletions=args.confirm_deletions,
            progress=_stderr_progress("committing"),
        )
    _print_commit_report(report)
    return 0


def cmd_log(args) -> int:
    from ocsync_tui.vcs.folder import FolderRepo, locate_file
    from ocsync_tui.vcs.history import file_log

    root, relpath = locate_file(Path(args.file))
    for entry in file_log(FolderRepo.open(root), relpath):
        print(f"{entry.commit_id[:10]}  {entry.time_text}  {entry.device_name:<20}  {entry.action}")
    return 0


def cmd_restore(args) -> int:
    from ocsync_tui.vcs.folder import locate_file
    from ocsync_tui.vcs.history import restore_file
    from ocsync_tui.vcs.writer import folder_writer

    root, relpath = locate_file(Path(args.file))
    client, managed = _managed_folder(args, root)
    if client is not None:
        extra = {"rev": args.rev} if args.rev else {}
        result = client.call("restore", folder=managed.name, path=relpath, **extra)
        source, commit_id = result.get("restored_from", ""), result.get("commit", "")
    else:
        with folder_writer(root) as folder:
            record = restore_file(folder, _identity(args), relpath, args.rev)
        source, commit_id = record.source_rev, record.commit_id
    print(f"restored {relpath} as of {source[:10]}  [{commit_id[:10]}]")
    return 0


def cmd_bundle_create(args) -> int:
    from ocsync_tui.vcs.bundle import create_bundle
    from ocsync_tui.vcs.folder import FolderRepo

    info = create_bundle(FolderRepo.open(Path(args.path)), args.since or [], Path(args.output))
    print(
        f"wrote {args.output}: {info.commit_count} commits, {info.object_count} objects, "
        f"{info.size} bytes, sha256 {info.sha256}"
    )
    return 0


def cmd_bundle_apply(args) -> int:
    from ocsync_tui.vcs.apply import apply_bundle
    from ocsync_tui.vcs.writer import folder_writer

    client, managed = _managed_folder(args, Path(args.path))
    if client is not None:
        result = client.call("bundle.apply", folder=managed.name, bundle=str(Path(args.file).resolve()))
        print(result.get("summary", "applied"))
        return 0
    identity = _identity(args)
    with folder_writer(Path(args.path)) as folder:
        report = apply_bundle(folder, identity, Path(args.file), peer_name=args.peer_name)
    print(report.summary())
    return 0


# Folders.


def cmd_folder_add(args) -> int:
    from ocsync_tui.vcs.folder import FolderRepo, NotAFolderError, init_folder

    path = Path(args.path).absolute()
    name = check_name("folder", args.name if args.name is not None else path.resolve().name)
    client = _daemon(args)
    if client is not None:
        added = client.call("folder.add", path=str(path), name=name)
        print(f"added folder {name} (ID {added.get('id', '?')}) at {added.get('path', path)}")
        return 0
    with _store(args) as store:
        path = store.check_new_folder(name, path)  # refuse before init creates anything
        try:
            folder = FolderRepo.open(path)
        except NotAFolderError:
            folder = None
        if folder is None or not folder.marker_present:
            _print_commit_report(init_folder(path, _identity(args), progress=_stderr_progress("committing")))
            folder = FolderRepo.open(path)
        folder.close()
        added = store.add_folder(folder.folder_id, name, path)
    print(f"added folder {added.name} (ID {added.folder_id}) at {added.path}")
    return 0


def cmd_folder_list(args) -> int:
    with _store(args) as store:
        _print_folders(store.summary()["folders"])
    return 0


def cmd_folder_rm(args) -> int:
    client = _daemon(args)
    if client is not None:
        removed = client.call("folder.rm", name=args.name)
        name, path = removed.get("name", args.name), removed.get("path")
    else:
        with _store(args) as store:
            folder = store.remove_folder(args.name)
        name, path = folder.name, folder.path
    print(f"stopped syncing {name}; its files stay in {path}" if path else f"stopped syncing {name}; its files stay")
    return 0


def _print_folders(folders: list[dict]) -> None:
    if not folders:
        print("no folders; add one with `ocsync folder add PATH`")
    for folder in folders:
        shared = ", ".join(
            f"{share['peer']} (acknowledged {share['acked_head'][:10] if share.get('acked_head') else 'nothing yet'})"
            for share in folder.get("shared_with", [])
        )
        print(f"{folder['name']}  {folder['path']}  ID {folder['folder_id']}  [{folder.get('state', 'ok')}]")
        print(f"    shared with: {shared or 'nobody'}")


# Peers.


def cmd_peer_add(args) -> int:
    check_name("peer", args.name)
    if args.device_id is None and args.address is None:
        raise OcsyncError("give the peer's device ID (--id), its address (--address), or both")
    device_id = canonical_device_id(args.device_id) if args.device_id is not None else None
    host, port = parse_host_port(args.address) if args.address is not None else (None, None)
    local_host, local_port = parse_ip_port(args.local_address) if args.local_address is not None else (None, None)
    client = _daemon(args)
    if client is not None:
        request = {"name": args.name}
        if device_id is not None:
            request["device_id"] = device_id
        if host is not None:
            request["address"] = format_host_port(host, port)
        if local_host is not None:
            request["local_address"] = format_host_port(local_host, local_port)
        client.call("peer.add", **request)
    else:
        with _store(args) as store:
            store.add_peer(
                args.name, device_id=device_id, address=host, port=port, local_address=local_host, local_port=local_port
            )
    if device_id is None:
        print(f"added peer {args.name}, pending: once it connects, confirm it with "
              f"`ocsync peer confirm {args.name} --id DEVICE_ID` (the ID `ocsync id` shows on that device)")
    else:
        print(f"added peer {args.name} ({device_id})")
    return 0


def cmd_peer_list(args) -> int:
    with _store(args) as store:
        _print_peers(store.summary()["peers"])
    return 0


def _print_peers(peers: list[dict]) -> None:
    if not peers:
        print("no peers; add one with `ocsync peer add NAME --id DEVICE_ID`")
    for peer in peers:
        if peer.get("device_id"):
            identity = peer["device_id"]
        elif peer.get("presented_device_id"):
            identity = f"pending: presented {peer['presented_device_id']}; confirm with `ocsync peer confirm`"
        else:
            identity = "pending: not seen yet"
        print(f"{peer['name']}  {identity}")
        reachable = {True: "  reachable", False: "  unreachable"}.get(peer.get("reachable"), "")
        print(f"    address: {peer.get('address') or '-'}  local: {peer.get('local_address') or '-'}{reachable}")
        print(f"    folders: {', '.join(peer.get('folders', [])) or 'none'}")
        if peer.get("window"):
            print(f"    window: {peer['window']['from']}-{peer['window']['to']} (its own)")


def cmd_peer_rm(args) -> int:
    client = _daemon(args)
    if client is not None:
        client.call("peer.rm", name=args.name)
    else:
        with _store(args) as store:
            store.remove_peer(args.name)
    print(f"removed peer {args.name} and what was shared with it")
    return 0


def cmd_peer_confirm(args) -> int:
    device_id = canonical_device_id(args.device_id)
    client = _daemon(args)
    if client is not None:
        client.call("peer.confirm", name=args.name, device_id=device_id)
    else:
        with _store(args) as store:
            store.confirm_peer(args.name, device_id)
    print(f"confirmed peer {args.name} ({device_id})")
    return 0


# Sharing: the seed's Send and Receive.


def cmd_share(args) -> int:
    client = _daemon(args)
    if client is not None:
        client.call("share", folder=args.folder, peer=args.peer)
        print(f"shared {args.folder} with {args.peer}")
        return 0
    with _store(args) as store:
        folder = store.folder(args.folder)
        newly = store.share(folder.folder_id, args.peer)
    print(f"shared {folder.name} with {args.peer}" if newly else f"{folder.name} already is shared with {args.peer}")
    return 0


def cmd_unshare(args) -> int:
    client = _daemon(args)
    if client is not None:
        client.call("unshare", folder=args.folder, peer=args.peer)
    else:
        with _store(args) as store:
            folder = store.folder(args.folder)
            if not store.unshare(folder.folder_id, args.peer):
                raise OcsyncError(f"{folder.name} is not shared with {args.peer}")
    print(f"stopped sharing {args.folder} with {args.peer}")
    return 0


def cmd_offers(args) -> int:
    with _store(args) as store:
        offers = store.summary()["offers"]
    if not offers:
        print("no offers")
    for offer in offers:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(offer["offered_at"]))
        print(f"{offer['peer']} offers {offer['folder_name']} (ID {offer['folder_id']}, {when}); "
              f"`ocsync accept {offer['peer']} {offer['folder_id']}` to receive it")
    return 0


def cmd_accept(args) -> int:
    client = _daemon(args)
    with _store(args) as store:
        offer = store.offer(args.peer, args.folder)
        held = next((folder for folder in store.folders() if folder.folder_id == offer.folder_id), None)
    given = Path(args.path).absolute() if args.path else None
    if held is not None and given is not None and given.resolve() != held.path:
        raise OcsyncError(f"this device holds {held.name} at {held.path} already; accept it without --path")
    # A folder held already (another peer gave it to us) is shared with this peer too, where it is.
    path = held.path if held is not None else given or Path(offer.folder_name).absolute()
    if client is not None:
        client.call("accept", peer=args.peer, folder=offer.folder_id, **({} if held else {"path": str(path)}))
        print(f"accepted {offer.folder_name} from {args.peer} into {path}")
        return 0
    from ocsync_tui.vcs.folder import init_folder

    # Without a daemon: make the folder under the offered ID and share it back; the daemon pulls the
    # peer's history into it when it starts.
    with _store(args) as store:
        if held is None:
            path = store.check_new_folder(offer.folder_name, path)
            report = init_folder(path, _identity(args), folder_id=offer.folder_id)
            if report.committed or report.skipped:  # files already at PATH join the folder's history
                _print_commit_report(report)
            store.add_folder(offer.folder_id, offer.folder_name, path)
        store.share(offer.folder_id, args.peer)
        store.remove_offer(args.peer, offer.folder_id)
    print(f"accepted {offer.folder_name} from {args.peer} into {path}; "
          "its files arrive once the daemon runs (`ocsync daemon`)")
    return 0


def cmd_decline(args) -> int:
    client = _daemon(args)
    with _store(args) as store:
        offer = store.offer(args.peer, args.folder)
        if client is None:
            store.remove_offer(args.peer, offer.folder_id)
    if client is not None:
        client.call("decline", peer=args.peer, folder=offer.folder_id)
    print(f"declined {offer.folder_name} from {args.peer}")
    return 0


# Sync windows.


def _window_text(window: dict | None) -> str:
    if window is None:
        return "always (no window)"
    if window["from"] == window["to"]:
        return "all day"
    return f"{window['from']}-{window['to']}"


def cmd_schedule_set(args) -> int:
    from ocsync_tui.engine.schedule import Window

    window = Window(parse_hhmm(args.from_time), parse_hhmm(args.to_time))
    scope = f"peer {args.peer}" if args.peer else "every peer without its own window"
    described = f"sync window for {scope}: {format_hhmm(window.from_minute)}-{format_hhmm(window.to_minute)}"
    client = _daemon(args)
    if client is not None:
        extra = {"peer": args.peer} if args.peer else {}
        client.call(
            "schedule.set", **extra, **{"from": format_hhmm(window.from_minute), "to": format_hhmm(window.to_minute)}
        )
    else:
        with _store(args) as store:
            store.set_window(args.peer, window)
    print(described + (" (all day)" if window.all_day else ""))
    return 0


def cmd_schedule_clear(args) -> int:
    scope = (
        f"peer {args.peer} follows the global window"
        if args.peer
        else "no global window: peers without a window of their own sync at any time"
    )
    client = _daemon(args)
    if client is not None:
        client.call("schedule.clear", **({"peer": args.peer} if args.peer else {}))
    else:
        with _store(args) as store:
            store.clear_window(args.peer)
    print(scope)
    return 0


def cmd_schedule_show(args) -> int:
    with _store(args) as store:
        summary = store.summary()
    print(f"global: {_window_text(summary['window'])}")
    for peer in summary["peers"]:
        if peer.get("window"):
            print(f"{peer['name']}: {_window_text(peer['window'])}")
    return 0


# Sync now, status, the daemon.


def cmd_sync(args) -> int:
    client = _require_daemon(args, "syncing")
    request = {key: value for key, value in (("peer", args.peer), ("folder", args.folder)) if value}
    client.call("sync", **request)
    print("sync started")
    return 0


def _status(args) -> dict:
    """This device's state: the store's summary (one schema whether or not a daemon runs), plus what only
    a running daemon knows: its ports, which peers are reachable, folders it stopped, transfers."""
    home = _home(args)
    identity = load_or_create_identity(home)
    client = _daemon(args)
    with _store(args) as store:
        state = {"device": {"name": identity.name, "device_id": identity.device_id}, "daemon": None,
                 **store.summary(), "transfers": []}
    for peer in state["peers"]:
        peer["reachable"] = None
    if client is None:
        return state
    from ocsync_tui.control_client import read_daemon_info

    live = client.call("status")
    info = read_daemon_info(home)
    state["daemon"] = {
        "pid": info.pid if info else None,
        "udp_port": live.get("udp_port", info.udp_port if info else None),
        "control_port": client.port,
    }
    live_peers = {peer.get("name"): peer for peer in live.get("peers", [])}
    for peer in state["peers"]:
        peer["reachable"] = live_peers.get(peer["name"], {}).get("reachable")
    live_folders = {folder.get("name"): folder for folder in live.get("folders", [])}
    for folder in state["folders"]:
        folder["state"] = live_folders.get(folder["name"], {}).get("state", folder["state"])
    state["transfers"] = live.get("transfers", [])
    return state


def cmd_status(args) -> int:
    state = _status(args)
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"device: {state['device']['name']}  {state['device']['device_id']}")
    daemon = state["daemon"]
    if daemon is None:
        print("daemon: not running (start it with `ocsync daemon`)")
    else:
        print(f"daemon: running (pid {daemon['pid']}, UDP port {daemon['udp_port']}, "
              f"control port {daemon['control_port']})")
    print(f"sync window: {_window_text(state['window'])}")
    print("\nfolders:")
    _print_folders(state["folders"])
    print("\npeers:")
    _print_peers(state["peers"])
    for transfer in state["transfers"]:
        size = transfer.get("size") or 0
        percent = 100 * (transfer.get("done") or 0) // size if size else 100
        print(f"transfer {transfer.get('direction')} {transfer.get('peer')}: {percent}% of {size} bytes")
    if state["offers"]:
        print(f"\n{len(state['offers'])} offer(s) waiting; `ocsync offers` lists them")
    return 0


def cmd_daemon(args) -> int:
    from ocsync_tui.engine.daemon import run_daemon

    return run_daemon(_home(args), parse_port(args.port, allow_zero=True))


def cmd_demo(args) -> int:
    from ocsync_tui.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocsync",
        description="Peer-to-peer folder sync: every shared folder is a git repository, every file change a commit.",
        epilog="With a daemon running on the home, commands that change something go through it and take effect "
        "at once; without one they edit this device's store, and the daemon acts on them when it starts.",
    )
    parser.add_argument("--version", action="version", version=f"ocsync {__version__}")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help=f"where this device keeps its key and state (default: ${HOME_ENV}, else the user data directory)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("id", help="print this device's name and device ID (creating the key on first use)")
    p.add_argument("--rename", metavar="NAME", help="change this device's name")
    p.set_defaults(handler=cmd_id)

    p = commands.add_parser("init", help="make PATH an ocsync folder and commit every file in it, one commit each")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(handler=cmd_init)

    p = commands.add_parser(
        "commit",
        help="commit every pending change in folder PATH, one commit per file (through the daemon when it runs "
        "and syncs PATH)",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--confirm-deletions",
        action="store_true",
        help="commit deletions that were held because they would remove more than half of the files",
    )
    p.set_defaults(handler=cmd_commit)

    p = commands.add_parser("log", help="show the history of one file, newest first")
    p.add_argument("file", metavar="PATH/FILE")
    p.set_defaults(handler=cmd_log)

    p = commands.add_parser(
        "restore",
        help="bring one file back as it was at a revision, as a new commit (through the daemon when it runs and "
        "syncs the folder)",
    )
    p.add_argument("file", metavar="PATH/FILE")
    p.add_argument("--rev", metavar="REV", help="revision to restore (default: the version before the current one)")
    p.set_defaults(handler=cmd_restore)

    p = commands.add_parser("bundle", help="write or apply a git bundle of a folder's history")
    bundle_commands = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    b = bundle_commands.add_parser("create", help="write the commits the receiver lacks as a thin git bundle")
    b.add_argument("path", metavar="PATH")
    b.add_argument(
        "--since",
        metavar="REV",
        action="append",
        help="a revision the receiver already has (repeatable; none: the whole history)",
    )
    b.add_argument("-o", "--output", metavar="FILE", required=True, help="where to write the bundle")
    b.set_defaults(handler=cmd_bundle_create)
    b = bundle_commands.add_parser(
        "apply", help="import a bundle into folder PATH and merge it (through the daemon when it runs and syncs PATH)"
    )
    b.add_argument("path", metavar="PATH")
    b.add_argument("file", metavar="FILE")
    b.add_argument(
        "--from", dest="peer_name", default="manual", metavar="NAME", help="record its head as refs/peers/NAME/main"
    )
    b.set_defaults(handler=cmd_bundle_apply)

    p = commands.add_parser("folder", help="add, list or remove the folders this device syncs")
    folder_commands = p.add_subparsers(dest="folder_command", metavar="ACTION", required=True)
    f = folder_commands.add_parser(
        "add", help="sync folder PATH (making it an ocsync folder first, as `init` does, if it is not one)"
    )
    f.add_argument("path", metavar="PATH")
    f.add_argument("--name", metavar="NAME", help="the folder's name here (default: the directory's name)")
    f.set_defaults(handler=cmd_folder_add)
    f = folder_commands.add_parser("list", help="the folders, their IDs and whom each is shared with")
    f.set_defaults(handler=cmd_folder_list)
    f = folder_commands.add_parser("rm", help="stop syncing a folder (its files and history stay on disk)")
    f.add_argument("name", metavar="NAME", help="the folder's name or ID")
    f.set_defaults(handler=cmd_folder_rm)

    p = commands.add_parser("peer", help="add, list, remove or confirm the devices this one syncs with")
    peer_commands = p.add_subparsers(dest="peer_command", metavar="ACTION", required=True)
    f = peer_commands.add_parser(
        "add",
        help="add a peer by its device ID, its address, or both",
        description="Add a peer. Give at least one of --id and --address; a peer added by address alone "
        "is pending until `ocsync peer confirm NAME --id DEVICE_ID` matches the key it presents.",
    )
    f.add_argument("name", metavar="NAME")
    f.add_argument("--id", dest="device_id", metavar="DEVICE_ID", help="the ID `ocsync id` shows on that device")
    f.add_argument(
        "--address",
        metavar="HOST[:PORT]",
        help="its public address: an IP or a (dyndns) host name; port default 44996; IPv6 as [::1]:44996",
    )
    f.add_argument("--local-address", metavar="IP[:PORT]", help="its address on the local network")
    f.set_defaults(handler=cmd_peer_add)
    f = peer_commands.add_parser("list", help="the peers, their device IDs, addresses and shared folders")
    f.set_defaults(handler=cmd_peer_list)
    f = peer_commands.add_parser("rm", help="forget a peer, with what is shared with it and its window")
    f.add_argument("name", metavar="NAME")
    f.set_defaults(handler=cmd_peer_rm)
    f = peer_commands.add_parser(
        "confirm", help="confirm a pending peer: its device ID must match the key it presented"
    )
    f.add_argument("name", metavar="NAME")
    f.add_argument("--id", dest="device_id", metavar="DEVICE_ID", required=True)
    f.set_defaults(handler=cmd_peer_confirm)

    p = commands.add_parser("share", help="send a folder to a peer (the peer sees it in `ocsync offers`)")
    p.add_argument("folder", metavar="FOLDER", help="the folder's name or ID")
    p.add_argument("--with", dest="peer", metavar="PEER", required=True, help="the peer to send it to")
    p.set_defaults(handler=cmd_share)
    p = commands.add_parser("unshare", help="stop sending a folder to a peer")
    p.add_argument("folder", metavar="FOLDER", help="the folder's name or ID")
    p.add_argument("--from", dest="peer", metavar="PEER", required=True, help="the peer to stop sending it to")
    p.set_defaults(handler=cmd_unshare)
    p = commands.add_parser("offers", help="the folders peers have offered to this device")
    p.set_defaults(handler=cmd_offers)
    p = commands.add_parser(
        "accept",
        help="receive a folder a peer offered",
        description="Receive a folder a peer offered. Without a running daemon the folder is created and "
        "registered now, and its files arrive once the daemon runs.",
    )
    p.add_argument("peer", metavar="PEER")
    p.add_argument("folder", metavar="FOLDER", help="the offered folder's name, or its ID when names are ambiguous")
    p.add_argument(
        "--path",
        metavar="PATH",
        help="where to put it (default: its name in the current directory; a folder this device holds already "
        "stays where it is)",
    )
    p.set_defaults(handler=cmd_accept)
    p = commands.add_parser("decline", help="refuse a folder a peer offered")
    p.add_argument("peer", metavar="PEER")
    p.add_argument("folder", metavar="FOLDER", help="the offered folder's name, or its ID when names are ambiguous")
    p.set_defaults(handler=cmd_decline)

    p = commands.add_parser(
        "schedule",
        help="when folder data may go to peers (sync windows)",
        description="Sync windows, in this device's local time. A window may cross midnight (22:00 to 06:00); "
        "FROM equal to TO means all day. A peer's own window replaces the global one; no window means always.",
    )
    schedule_commands = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    f = schedule_commands.add_parser("set", help="set the global window, or a peer's own with --peer")
    f.add_argument("--peer", metavar="NAME", help="set this peer's own window instead of the global one")
    f.add_argument("--from", dest="from_time", metavar="HH:MM", required=True, help="when the window opens")
    f.add_argument(
        "--to", dest="to_time", metavar="HH:MM", required=True, help="when it closes (before FROM: the next day)"
    )
    f.set_defaults(handler=cmd_schedule_set)
    f = schedule_commands.add_parser("clear", help="remove the global window, or a peer's own with --peer")
    f.add_argument("--peer", metavar="NAME")
    f.set_defaults(handler=cmd_schedule_clear)
    f = schedule_commands.add_parser("show", help="the global window and the peers' own windows")
    f.set_defaults(handler=cmd_schedule_show)

    p = commands.add_parser("sync", help="sync now, ignoring the windows (needs the daemon)")
    p.add_argument("--peer", metavar="NAME", help="only with this peer")
    p.add_argument("--folder", metavar="NAME", help="only this folder")
    p.set_defaults(handler=cmd_sync)
    p = commands.add_parser("status", help="this device, the daemon, folders, peers and offers")
    p.add_argument("--json", action="store_true", help="print it as JSON, for scripts")
    p.set_defaults(handler=cmd_status)
    p = commands.add_parser(
        "daemon", help="run the sync daemon in the foreground (logs to stderr and HOME/daemon.log)"
    )
    p.add_argument(
        "--port", default="44996", metavar="N", help="UDP port for peers (default 44996; 0 picks a free one)"
    )
    p.set_defaults(handler=cmd_daemon)
    p = commands.add_parser(
        "demo", help="two devices on this machine sharing a folder each way, to watch ocsync work"
    )
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except OcsyncError as error:
        print(f"ocsync: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ocsync status --json | head`); say nothing more, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except sqlite3.OperationalError as error:
        # Another process held the store's write lock past the busy timeout, or the disk refused a write.
        print(f"ocsync: the store could not be written ({error}); try again", file=sys.stderr)
        return 1
    except OSError as error:
        # The system refused something (a permission, a full disk): the user's to fix, not a bug.
        print(f"ocsync: {error}", file=sys.stderr)
        return 1

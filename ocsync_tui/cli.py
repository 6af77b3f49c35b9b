"""The `ocsync` command line: argument parsing and printing; the work happens in the packages."""

import argparse
import sys
from pathlib import Path

from ocsync_tui import __version__
from ocsync_tui.errors import OcsyncError
from ocsync_tui.home import HOME_ENV, ensure_home, resolve_home
from ocsync_tui.identity import load_or_create_identity, rename_device


def _stderr_progress(label: str):
    """A progress callback (done, total) that redraws one line on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


def _identity(args):
    return load_or_create_identity(ensure_home(resolve_home(args.home)))


def cmd_id(args) -> int:
    home = ensure_home(resolve_home(args.home))
    identity = rename_device(home, args.rename) if args.rename else load_or_create_identity(home)
    print(f"Device name: {identity.name}")
    print(f"Device ID:   {identity.device_id}")
    return 0


def _print_commit_report(report) -> None:
    for note in report.notes:
        print(note)
    for record in report.committed:
        print(f"{record.action:<7} {record.path}  [{record.commit_id[:10]}]")
    for path, reason in report.skipped:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    if report.held_deletions:
        print(
            f"held {len(report.held_deletions)} deletions (more than half of the files would go); "
            "check the folder, then run `ocsync commit PATH --confirm-deletions`",
            file=sys.stderr,
        )
    if not report.committed:
        print("nothing to commit")


def cmd_init(args) -> int:
    from ocsync_tui.vcs.folder import init_folder

    report = init_folder(Path(args.path), _identity(args), progress=_stderr_progress("committing"))
    _print_commit_report(report)
    return 0


def cmd_commit(args) -> int:
    from ocsync_tui.vcs.writer import folder_writer

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

    identity = _identity(args)
    root, relpath = locate_file(Path(args.file))
    with folder_writer(root) as folder:
        record = restore_file(folder, identity, relpath, args.rev)
    print(f"restored {record.path} as of {record.source_rev[:10]}  [{record.commit_id[:10]}]")
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

    identity = _identity(args)
    with folder_writer(Path(args.path)) as folder:
        report = apply_bundle(folder, identity, Path(args.file), peer_name=args.peer_name)
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocsync",
        description="Peer-to-peer folder sync: every shared folder is a git repository, every file change a commit.",
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

    p = commands.add_parser("commit", help="commit every pending change in folder PATH, one commit per file")
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

    p = commands.add_parser("restore", help="bring one file back as it was at a revision, as a new commit")
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
    b = bundle_commands.add_parser("apply", help="import a bundle into folder PATH and merge it")
    b.add_argument("path", metavar="PATH")
    b.add_argument("file", metavar="FILE")
    b.add_argument(
        "--from", dest="peer_name", default="manual", metavar="NAME", help="record its head as refs/peers/NAME/main"
    )
    b.set_defaults(handler=cmd_bundle_apply)
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

"""Real `ocsync daemon` processes on 127.0.0.1, for the end-to-end tests and the sync benchmarks.

    cluster = Cluster(tmp_path)                 # in tests: a fixture over running_cluster(tmp_path)
    alice, bob = cluster.device("alice"), cluster.device("bob")   # homes made, daemons started
    pair(alice, bob)
    paths = share_folder(alice, "docs", tmp_path / "alice-docs", bob)
    (paths[alice] / "a.txt").write_text("hi")
    wait_converged(paths, expected={"a.txt": b"hi"})
    bob.kill(); bob.start()                      # SIGKILL, then a new daemon on the same UDP port
    check_repository(paths[bob])                 # git fsck --strict, one path per non-merge commit

Each device has a home under the test's directory; its daemon runs as
`python -m ocsync_tui --home HOME daemon --port N` with stdout and stderr appended to
`NAME/daemon.stderr.log` (one header line per start), and every failed wait quotes the tail of every
daemon's log. The UDP port comes from `HOME/daemon.json` (only a file naming the new process counts:
one a killed daemon left behind does not). A restart reuses the device's UDP port, since its peers
know it by that address.

`Forwarder` puts `ocsync_tui.net.lossy_link.LossyLink` between two daemons in a helper process
(`python -m tests.e2e.daemons forward ...`) that writes its byte counters to a file, so a test can
count what crosses the link or slow it down. Everything binds to 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ocsync_tui.engine.time_of_day import TIME_OF_DAY_FILE_ENV
from ocsync_tui.vcs.paths import FOLDER_MARKER as MARKER_NAME

REPOSITORY = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
LOG_TAIL_LINES = 40


class HarnessError(AssertionError):
    """A bounded wait ran out or a command failed; the message says which step and quotes the logs."""


@dataclass(frozen=True)
class CliResult:
    command: list[str]
    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.command)}\nexit {self.code}\n--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.pop("OCSYNC_HOME", None)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    return environment


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(empty)"


class Device:
    """One device: a home directory, its identity, and at most one running daemon."""

    def __init__(self, cluster: Cluster, name: str, *, time_of_day: str | None = None) -> None:
        self.cluster = cluster
        self.name = name
        self.directory = cluster.root / name
        self.home = self.directory / "home"
        self.log_path = self.directory / "daemon.stderr.log"
        # With a time of day, the daemon reads "HH:MM" from this file instead of the clock.
        self.time_of_day_path = self.directory / "time-of-day" if time_of_day is not None else None
        self.process: subprocess.Popen | None = None
        self.udp_port: int | None = None
        self.control_port: int | None = None
        self._starts = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        if time_of_day is not None:
            self.set_time_of_day(time_of_day)
        # Named after the test's role, so commit authors and logs say which device did what.
        identity = self.ocsync("id", "--rename", name).stdout
        ids = [line.split(":", 1)[1].strip() for line in identity.splitlines() if line.startswith("Device ID:")]
        if len(ids) != 1:
            raise HarnessError(f"cannot read the device ID of {name} from `ocsync id`:\n{identity}")
        self.device_id = ids[0]

    def __repr__(self) -> str:
        return f"Device({self.name})"

    def set_time_of_day(self, hhmm: str) -> None:
        """What the daemon takes for the local time of day (only for a device made with time_of_day)."""
        if self.time_of_day_path is None:
            raise HarnessError(f"{self.name} reads the real clock; make it with time_of_day=... to move its time")
        temporary = self.time_of_day_path.with_suffix(".tmp")
        temporary.write_text(hhmm + "\n")
        os.replace(temporary, self.time_of_day_path)

    def _environment(self) -> dict[str, str]:
        environment = _child_environment()
        if self.time_of_day_path is not None:
            environment[TIME_OF_DAY_FILE_ENV] = str(self.time_of_day_path)
        return environment

    # --- the CLI -------------------------------------------------------------------------------

    def ocsync(self, *arguments: str | Path, check: bool = True, timeout: float = CLI_TIMEOUT) -> CliResult:
        """Run `python -m ocsync_tui --home HOME ARGUMENTS...`; with check, a non-zero exit fails the test."""
        command = [sys.executable, "-m", "ocsync_tui", "--home", str(self.home), *map(str, arguments)]
        shown = ["ocsync", f"[{self.name}]", *map(str, arguments)]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, cwd=REPOSITORY, env=self._environment()
            )
        except subprocess.TimeoutExpired as expired:
            raise HarnessError(
                f"`{' '.join(shown)}` did not finish within {timeout:.0f} s\n"
                f"stdout: {expired.stdout!r}\nstderr: {expired.stderr!r}\n{self.cluster.logs()}"
            ) from None
        result = CliResult(shown, completed.returncode, completed.stdout, completed.stderr)
        if check and result.code != 0:
            raise HarnessError(f"command failed:\n{result.describe()}\n{self.cluster.logs()}")
        return result

    # --- the daemon ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise HarnessError(f"{self.name} has no daemon")
        return self.process.pid

    def start(self, *, port: int | None = None, timeout: float = START_TIMEOUT) -> None:
        """Start the daemon (on the device's previous UDP port if it had one) and wait for daemon.json."""
        if self.running:
            raise HarnessError(f"{self.name}'s daemon is already running (pid {self.pid})")
        if port is None:
            port = self.udp_port or 0
        self._starts += 1
        with self.log_path.open("a") as log:
            log.write(f"=== harness: start {self._starts} of {self.name}, --port {port}, {time.strftime('%H:%M:%S')} ===\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ocsync_tui", "--home", str(self.home), "daemon", "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY,
                env=self._environment(),
                start_new_session=True,
            )
        self._wait_for_daemon_json(timeout)

    def _wait_for_daemon_json(self, timeout: float) -> None:
        assert self.process is not None
        state_file = self.home / "daemon.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"{self.name}'s daemon exited with code {self.process.returncode} before writing "
                    f"{state_file}; its log:\n{_tail(self.log_path)}"
                )
            try:
                state = json.loads(state_file.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                state = None
            if isinstance(state, dict) and state.get("pid") == self.process.pid:
                try:
                    self.udp_port = int(state["udp_port"])
                    self.control_port = int(state["control_port"])
                except (KeyError, TypeError, ValueError):
                    raise HarnessError(f"{state_file} lacks udp_port/control_port: {state}") from None
                return
            time.sleep(0.05)
        raise HarnessError(
            f"{self.name}'s daemon did not write {state_file} (with its pid {self.process.pid}) within "
            f"{timeout:.0f} s; its log:\n{_tail(self.log_path)}"
        )

    def kill(self) -> None:
        """SIGKILL the daemon (and anything it started) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self.process = None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`); returns the exit code."""
        if self.process is None:
            raise HarnessError(f"{self.name} has no daemon to stop")
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise HarnessError(f"{self.name}'s daemon ignored SIGTERM for {timeout:.0f} s; its log:\n{_tail(self.log_path)}")
        self.process = None
        return code

    def peak_memory_kib(self) -> int:
        """The daemon's peak resident set (VmHWM) so far, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise HarnessError(f"no VmHWM in /proc/{self.pid}/status")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)


class Cluster:
    """The devices and forwarders of one test, all under `root`; `close` ends every process it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: list[Device] = []
        self.forwarders: list[Forwarder] = []

    def device(self, name: str, *, start: bool = True, time_of_day: str | None = None) -> Device:
        device = Device(self, name, time_of_day=time_of_day)
        self.devices.append(device)
        if start:
            device.start()
        return device

    def forwarder(self, near: Device, far: Device, *, rate: float | None = None) -> Forwarder:
        forwarder = Forwarder(self.root / f"link-{near.name}-{far.name}", near, far, rate=rate)
        self.forwarders.append(forwarder)
        return forwarder

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(
            f"--- last {lines} lines of {device.name}'s daemon log ({device.log_path}) ---\n{device.log_tail(lines)}"
            for device in self.devices
        )

    def close(self) -> None:
        for device in self.devices:
            device.kill()
        for forwarder in self.forwarders:
            forwarder.close()


def running_cluster(root: Path) -> Iterator[Cluster]:
    """For a test's `cluster` fixture (`yield from running_cluster(tmp_path)`): its processes always end
    with the test, and the daemons' logs go to the teardown output, which pytest shows when it fails."""
    made = Cluster(root)
    try:
        yield made
    finally:
        made.close()
        print(made.logs(lines=200))


# --- set-up steps ---------------------------------------------------------------------------------


def pair(a: Device, b: Device, *, a_reaches_b: int | None = None, b_reaches_a: int | None = None) -> None:
    """Each side adds the other by device ID and loopback address (a forwarder's port when given)."""
    a.ocsync("peer", "add", b.name, "--id", b.device_id, "--address", f"{LOOPBACK}:{a_reaches_b or b.udp_port}")
    b.ocsync("peer", "add", a.name, "--id", a.device_id, "--address", f"{LOOPBACK}:{b_reaches_a or a.udp_port}")


def wait_until(condition: Callable[[], object], what: str, cluster: Cluster, timeout: float = CONVERGE_TIMEOUT,
               interval: float = 0.05):
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs()}")
        time.sleep(interval)


def wait_for_offer(receiver: Device, owner: Device, folder_name: str, timeout: float = CONVERGE_TIMEOUT) -> str:
    def offered() -> str | None:
        listing = receiver.ocsync("offers").stdout
        return listing if any(owner.name in line and folder_name in line for line in listing.splitlines()) else None

    return wait_until(offered, f"{receiver.name}'s `ocsync offers` to list {folder_name} from {owner.name}",
                      receiver.cluster, timeout, interval=0.2)


def share_folder(owner: Device, folder_name: str, path: Path, *receivers: Device,
                 receiver_paths: Mapping[Device, Path] | None = None) -> dict[Device, Path]:
    """`folder add` PATH on the owner, share it with each receiver, who accepts it into an empty
    directory of its own; returns each device's folder path."""
    path.mkdir(parents=True, exist_ok=True)
    owner.ocsync("folder", "add", path, "--name", folder_name)
    paths = {owner: path}
    for receiver in receivers:
        owner.ocsync("share", folder_name, "--with", receiver.name)
    for receiver in receivers:
        target = (receiver_paths or {}).get(receiver) or receiver.directory / folder_name
        target.mkdir(parents=True, exist_ok=True)
        wait_for_offer(receiver, owner, folder_name)
        receiver.ocsync("accept", owner.name, folder_name, "--path", target)
        paths[receiver] = target
    return paths


# --- looking at folders ---------------------------------------------------------------------------


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative POSIX path -> content), without .git and the folder marker.
    Raises FileNotFoundError when a file vanishes mid-read (the caller polls again)."""
    tree: dict[str, bytes] = {}
    for directory, subdirectories, files in os.walk(root):
        if directory == str(root):
            subdirectories[:] = [name for name in subdirectories if name != ".git"]
            files = [name for name in files if name != MARKER_NAME]
        for name in files:
            full = Path(directory, name)
            tree[full.relative_to(root).as_posix()] = full.read_bytes()
    return tree


def tree_digests(root: Path) -> dict[str, str]:
    """Like read_tree, but each file's SHA-256 instead of its bytes (for folders too big to hold twice)."""
    import hashlib

    digests = {}
    for directory, subdirectories, files in os.walk(root):
        if directory == str(root):
            subdirectories[:] = [name for name in subdirectories if name != ".git"]
            files = [name for name in files if name != MARKER_NAME]
        for name in files:
            full = Path(directory, name)
            with full.open("rb") as handle:
                digests[full.relative_to(root).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def head(root: Path) -> str | None:
    """The folder's HEAD commit id, or None before its first commit."""
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _tree_differences(trees: Mapping[str, dict[str, bytes]], expected: Mapping[str, bytes] | None) -> list[str]:
    reference_name, reference = ("expected", dict(expected)) if expected is not None else next(iter(trees.items()))
    lines = []
    for name, tree in trees.items():
        if name == reference_name:
            continue
        missing = sorted(set(reference) - set(tree))
        extra = sorted(set(tree) - set(reference))
        different = sorted(path for path in set(tree) & set(reference) if tree[path] != reference[path])
        if missing or extra or different:
            lines.append(f"  {name} against {reference_name}: missing {missing[:10]}, extra {extra[:10]}, "
                         f"different content {different[:10]}")
    return lines


def wait_converged(paths: Mapping[Device, Path], *, expected: Mapping[str, bytes] | None = None,
                   timeout: float = CONVERGE_TIMEOUT) -> dict[str, bytes]:
    """Wait until every folder has the same HEAD and the same files (and those are `expected`, when
    given); returns the common tree. The failure message lists heads and differing paths."""
    devices = list(paths)
    cluster = devices[0].cluster
    deadline = time.monotonic() + timeout
    heads: dict[str, str | None] = {}
    trees: dict[str, dict[str, bytes]] = {}
    while True:
        heads = {device.name: head(paths[device]) for device in devices}
        if len(set(heads.values())) == 1:
            try:
                trees = {device.name: read_tree(paths[device]) for device in devices}
            except FileNotFoundError:
                trees = {}
            if trees and not _tree_differences(trees, expected) and all(
                tree == next(iter(trees.values())) for tree in trees.values()
            ):
                return next(iter(trees.values()))
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    try:
        trees = {device.name: read_tree(paths[device]) for device in devices}
    except FileNotFoundError:
        pass
    differences = _tree_differences(trees, expected) + _tree_differences(trees, None)
    raise HarnessError(
        f"folders did not converge within {timeout:.0f} s\nheads: {heads}\n"
        + ("\n".join(differences) or "  trees are equal; heads differ")
        + f"\n{cluster.logs()}"
    )


def assert_stays(paths: Mapping[Device, Path], expected_trees: Mapping[Device, Mapping[str, bytes]],
                 seconds: float, what: str) -> None:
    """Fail if any folder's files differ from its expected tree at any poll during `seconds`."""
    cluster = next(iter(paths)).cluster
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for device, expected in expected_trees.items():
            try:
                tree = read_tree(paths[device])
            except FileNotFoundError:
                continue
            if tree != dict(expected):
                differences = _tree_differences({"expected": dict(expected), device.name: tree}, None)
                raise HarnessError(f"{what}: {device.name}'s folder changed\n" + "\n".join(differences)
                                   + f"\n{cluster.logs()}")
        time.sleep(0.1)


def conflict_copies(tree: Mapping[str, bytes], path: str) -> dict[str, bytes]:
    """The conflict copies of `path` in `tree`: `stem.sync-conflict-...ext` beside it."""
    directory, _, name = path.rpartition("/")
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    prefix = f"{directory + '/' if directory else ''}{stem}.sync-conflict-"
    suffix = f".{extension}" if extension else ""
    return {other: content for other, content in tree.items()
            if other.startswith(prefix) and other.endswith(suffix) and "/" not in other[len(prefix):]}


def check_repository(root: Path) -> None:
    """`git fsck --strict` passes and every non-merge commit touches exactly one path."""
    fsck = subprocess.run(["git", "-C", str(root), "fsck", "--strict", "--no-progress"], capture_output=True, text=True)
    assert fsck.returncode == 0, f"git fsck --strict failed in {root}:\n{fsck.stdout}{fsck.stderr}"
    log = subprocess.run(
        ["git", "-c", "core.quotePath=false", "-C", str(root), "log", "--no-merges", "--name-only", "--format=@@%H"],
        capture_output=True, text=True,
    )
    assert log.returncode == 0, f"git log failed in {root}: {log.stderr}"
    touched: dict[str, list[str]] = {}
    commit = None
    for line in log.stdout.splitlines():
        if line.startswith("@@"):
            commit = line[2:]
            touched[commit] = []
        elif line.strip() and commit is not None:
            touched[commit].append(line)
    wrong = {commit: paths for commit, paths in touched.items() if len(paths) != 1}
    assert not wrong, f"non-merge commits in {root} that do not touch exactly one path: {wrong}"


def commit_authors(root: Path, path: str) -> set[str]:
    """Author e-mails of the non-merge commits that touched `path`."""
    result = subprocess.run(["git", "-C", str(root), "log", "--no-merges", "--format=%ae", "--", path],
                            capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def author_email(device: Device) -> str:
    return f"{device.device_id}@ocsync.invalid"


# --- a counting (and optionally slowing) UDP forwarder between two daemons --------------------------


class Forwarder:
    """A LossyLink in a helper process: `near` talks to `near_port`, `far` talks to `far_port`, and
    every datagram between them crosses the link and its counters.

    Pair with `pair(near, far, a_reaches_b=fwd.near_port, b_reaches_a=fwd.far_port)`. `rate` (bytes/s)
    caps each direction, to make a transfer last long enough to interrupt."""

    def __init__(self, directory: Path, near: Device, far: Device, *, rate: float | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.counters_path = directory / "counters.json"
        self.log_path = directory / "forwarder.log"
        command = [sys.executable, "-m", "tests.e2e.daemons", "forward", "--near", str(near.udp_port),
                   "--far", str(far.udp_port), "--counters", str(self.counters_path)]
        if rate is not None:
            command += ["--rate", str(rate)]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                            cwd=REPOSITORY, env=_child_environment(), start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            raise HarnessError(f"the forwarder did not start; its log:\n{_tail(self.log_path)}")
        ports = json.loads(line)
        self.near_port: int = ports["near_port"]
        self.far_port: int = ports["far_port"]

    def counters(self) -> dict[str, int]:
        """Datagrams and bytes forwarded so far, each direction (the file is at most ~50 ms old)."""
        for _ in range(20):
            try:
                return json.loads(self.counters_path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        raise HarnessError(f"cannot read the forwarder's counters; its log:\n{_tail(self.log_path)}")

    def bytes_forwarded(self) -> int:
        counters = self.counters()
        return counters["forward_bytes"] + counters["backward_bytes"]

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


async def _forward(near_port: int, far_port: int, counters_path: Path, rate: float | None) -> None:
    import trio

    from ocsync_tui.net.lossy_link import Impairments, LossyLink

    impairments = Impairments(rate=rate, queue_bytes=256 * 1024) if rate else Impairments()
    link = LossyLink((LOOPBACK, far_port), impairments, host=LOOPBACK, near=(LOOPBACK, near_port))
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        print(json.dumps({"near_port": link.listen_address[1], "far_port": link.far_facing_address[1]}), flush=True)
        temporary = counters_path.with_suffix(".tmp")
        while True:
            counters = {
                "forward": link.forward.counters.forwarded,
                "forward_bytes": link.forward.counters.forwarded_bytes,
                "backward": link.backward.counters.forwarded,
                "backward_bytes": link.backward.counters.forwarded_bytes,
            }
            temporary.write_text(json.dumps(counters))
            os.replace(temporary, counters_path)
            await trio.sleep(0.05)


def main(argv: Iterable[str] | None = None) -> None:
    import trio

    parser = argparse.ArgumentParser(description="helper processes of the end-to-end tests")
    commands = parser.add_subparsers(dest="command", required=True)
    forward = commands.add_parser("forward", help="a counting UDP forwarder between two loopback ports")
    forward.add_argument("--near", type=int, required=True, help="UDP port of the near daemon")
    forward.add_argument("--far", type=int, required=True, help="UDP port of the far daemon")
    forward.add_argument("--counters", type=Path, required=True, help="file the byte counters go to")
    forward.add_argument("--rate", type=float, help="bytes per second in each direction")
    args = parser.parse_args(list(argv) if argv is not None else None)
    trio.run(_forward, args.near, args.far, args.counters, args.rate)


if __name__ == "__main__":
    main()

"""`ocsync daemon` refuses clearly (one line, non-zero exit) a home that already has a running daemon
and a UDP port that is taken; with `--port 0`, `ocsync status` shows the port it picked."""

def test_a_second_daemon_on_the_same_home_is_refused(cluster) -> None:
    alice = cluster.device("alice")
    second = alice.ocsync("daemon", "--port", "0", check=False, timeout=20)
    assert second.code != 0, f"a second daemon started on the same home:\n{second.describe()}"
    one_clear_line = "already" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert one_clear_line, f"not one clear line:\n{second.describe()}"
    assert alice.running, "the first daemon did not survive the refused second one"


def test_a_taken_udp_port_is_refused_in_one_line(cluster) -> None:
    alice = cluster.device("alice")
    bob = cluster.device("bob", start=False)
    taken = bob.ocsync("daemon", "--port", str(alice.udp_port), check=False, timeout=20)
    assert taken.code != 0, f"a daemon started on a taken port:\n{taken.describe()}"
    one_clear_line = len(taken.stderr.strip().splitlines()) == 1 and "Traceback" not in taken.stderr
    assert one_clear_line, f"not one clear line:\n{taken.describe()}"
    assert str(alice.udp_port) in taken.stderr or "port" in taken.stderr.lower(), taken.describe()


def test_status_shows_the_udp_port_picked_for_port_0(cluster) -> None:
    alice = cluster.device("alice")
    status = alice.ocsync("status").stdout
    assert str(alice.udp_port) in status, f"`ocsync status` does not show UDP port {alice.udp_port}:\n{status}"

"""The user-value parsers: what they accept, and that every bad value is one clear OcsyncError line."""

import pytest

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import DeviceIdError, format_device_id
from ocsync_tui.store.values import (
    InvalidValueError,
    canonical_device_id,
    check_name,
    format_hhmm,
    format_host_port,
    parse_hhmm,
    parse_host_port,
    parse_ip_port,
    parse_port,
)

DEVICE_ID = format_device_id(bytes(range(32)))


@pytest.mark.parametrize(
    "text, minutes", [("00:00", 0), ("07:30", 450), ("7:30", 450), ("23:59", 1439), (" 12:05 ", 725)]
)
def test_times_of_day(text, minutes):
    assert parse_hhmm(text) == minutes


@pytest.mark.parametrize("text", ["25:00", "24:00", "7:5", "x", "", "12:60", "12:5a", "-1:00", "123:00", "12.30"])
def test_bad_times_are_refused_with_one_line(text):
    with pytest.raises(InvalidValueError) as caught:
        parse_hhmm(text)
    assert isinstance(caught.value, OcsyncError)
    message = str(caught.value)
    assert "\n" not in message
    assert "HH:MM" in message or "00:00 to 23:59" in message


def test_format_hhmm_round_trips():
    assert [format_hhmm(parse_hhmm(t)) for t in ("00:00", "07:05", "23:59")] == ["00:00", "07:05", "23:59"]


def test_ports():
    assert parse_port("44996") == 44996
    assert parse_port(1) == 1
    assert parse_port("0", allow_zero=True) == 0
    for bad in ("70000", "65536", "-1", "0", "port", "", "1.5"):
        with pytest.raises(InvalidValueError, match="port"):
            parse_port(bad)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("example.org", ("example.org", 44996)),
        ("example.org:1234", ("example.org", 1234)),
        ("home.dyndns.example.", ("home.dyndns.example.", 44996)),
        ("192.0.2.7:5000", ("192.0.2.7", 5000)),
        ("[::1]:44997", ("::1", 44997)),
        ("[2001:db8::1]", ("2001:db8::1", 44996)),
        ("2001:db8::1", ("2001:db8::1", 44996)),
    ],
)
def test_host_and_port(text, expected):
    assert parse_host_port(text) == expected


def test_default_port_is_the_callers():
    assert parse_host_port("192.0.2.7", default_port=7) == ("192.0.2.7", 7)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("example.org:70000", "out of range"),
        ("example.org:", "not a port"),
        ("exa mple.org", "neither an IP address nor a host name"),
        ("-bad.example", "neither"),
        ("", "neither"),
        ("[::1", "IPv6"),
        ("[::1]x", "IPv6"),
        ("[example.org]:1", "not an IPv6 address"),
        ("::1:44996", "in brackets"),
        ("example.org:1:2", "in brackets"),
    ],
)
def test_bad_addresses(text, fragment):
    with pytest.raises(InvalidValueError, match=fragment):
        parse_host_port(text)


def test_local_address_must_be_an_ip():
    assert parse_ip_port("192.168.1.4:9") == ("192.168.1.4", 9)
    with pytest.raises(InvalidValueError, match="not an IP address"):
        parse_ip_port("laptop.local")


def test_format_host_port_brackets_ipv6():
    assert format_host_port("::1", 5) == "[::1]:5"
    assert format_host_port("example.org", 5) == "example.org:5"
    assert parse_host_port(format_host_port("fe80::2", 44996)) == ("fe80::2", 44996)


def test_names():
    assert check_name("peer", "laptop") == "laptop"
    assert check_name("folder", "Fotos 2024 – Ürlaub") == "Fotos 2024 – Ürlaub"
    assert check_name("peer", "x" * 64) == "x" * 64
    for bad, fragment in [("", "empty"), ("  ", "empty"), (" a", "blanks"), ("a\nb", "control"),
                          ("a\x00", "control"), ("x" * 65, "at most 64")]:
        with pytest.raises(InvalidValueError, match=fragment):
            check_name("peer", bad)


def test_device_ids():
    assert canonical_device_id(DEVICE_ID.lower().replace("-", " ")) == DEVICE_ID
    mistyped = ("B" if DEVICE_ID[0] != "B" else "C") + DEVICE_ID[1:]
    for bad in ("ABC", mistyped, DEVICE_ID.replace(DEVICE_ID[3], "1", 1)):
        with pytest.raises(DeviceIdError):
            canonical_device_id(bad)

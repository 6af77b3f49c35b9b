"""Parsing and checking of the values people type: times of day, addresses, ports, names, device IDs.

Pure functions shared by the CLI and the daemon's control API, so a bad value gets the same one-line
refusal (an InvalidValueError) whichever way it came in.
"""

import ipaddress
import re

from ocsync_tui.errors import OcsyncError
from ocsync_tui.identity import format_device_id, parse_device_id
from ocsync_tui.net.udp_socket import DEFAULT_PORT

MAX_NAME_LENGTH = 64

_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class InvalidValueError(OcsyncError):
    pass


def parse_hhmm(text: str) -> int:
    """Minutes after midnight of a time of day written HH:MM (00:00 to 23:59)."""
    match = _HHMM.fullmatch(text.strip())
    if match is None:
        raise InvalidValueError(f"{text!r} is not a time of day; write it as HH:MM, e.g. 07:30")
    hours, minutes = int(match[1]), int(match[2])
    if hours > 23 or minutes > 59:
        raise InvalidValueError(f"{text!r} is not a time of day; times go from 00:00 to 23:59")
    return hours * 60 + minutes


def format_hhmm(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


def parse_port(value: str | int, *, allow_zero: bool = False) -> int:
    """A UDP/TCP port number; 0 ("pick a free one") only where the caller allows it."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{value!r} is not a port number") from None
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= 65535:
        raise InvalidValueError(f"port {port} is out of range; ports go from {lowest} to 65535")
    return port


def check_host(host: str) -> str:
    """An IP address or a DNS name (e.g. a dyndns name); returned as given."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidValueError(f"{host!r} is neither an IP address nor a host name")
    return host


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """`HOST[:PORT]`; an IPv6 address with a port is written in brackets, `[::1]:44996`."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise InvalidValueError(f"{text!r} is not an address; write an IPv6 address as [::1]:44996")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise InvalidValueError(
                f"{text!r} is not an address; write an IPv6 address with a port in brackets: [::1]:44996"
            ) from None
        host, port_text = text, None  # a bare IPv6 address: its colons are not a port separator
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    host = check_host(host)
    return host, default_port if port_text is None else parse_port(port_text)


def check_ip(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidValueError(f"{host!r} is not an IP address (a local address is written as digits)") from None
    return host


def parse_ip_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """`IP[:PORT]`, as `parse_host_port` but the host must be an IP address (a LAN address)."""
    host, port = parse_host_port(text, default_port)
    return check_ip(host), port


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_name(kind: str, name: str) -> str:
    """A peer or folder name: 1 to 64 characters, no control characters, no surrounding blanks."""
    if not name or not name.strip():
        raise InvalidValueError(f"a {kind} name may not be empty")
    if name != name.strip():
        raise InvalidValueError(f"a {kind} name may not start or end with blanks: {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidValueError(
            f"a {kind} name has at most {MAX_NAME_LENGTH} characters; {name[:20]!r}… has {len(name)}"
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise InvalidValueError(f"a {kind} name may not contain control characters: {name!r}")
    return name


def canonical_device_id(text: str) -> str:
    """The device ID in its one written form (upper case, dashes), refusing a mistyped one."""
    return format_device_id(parse_device_id(text))

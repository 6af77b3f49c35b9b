"""One non-blocking UDP socket for trio, fast enough that per-datagram overhead does not cap throughput.

trio's awaited `sock.sendto`/`recvfrom` cost a scheduling round trip per datagram. Here the stdlib
socket is called directly and we only await `wait_writable`/`wait_readable` when the kernel says it
would block. Where Linux has them, UDP GSO (`UDP_SEGMENT`: one `sendmsg` carries up to 64 equal-sized
datagrams for one destination) and GRO (`UDP_GRO`: one `recvmsg` returns several coalesced datagrams
plus their segment size) cut syscalls further; both are detected at runtime and fall back to one
datagram per call. `bench/udp_io.py` measures the options.

Addresses are `(host, port)` tuples with IPv4 hosts in dotted form even on a dual-stack socket (the
kernel's `::ffff:a.b.c.d` mapped form never leaks out); IPv6 link-local addresses keep their scope as
`(host, port, 0, scope_id)`.

UDP is best effort, so a send the kernel refuses (no route, datagram too large for the path, ICMP
error) is a lost datagram, not an exception: the protocols above retransmit.

Datagrams leave with "don't fragment" set, so a datagram too large for the path is lost rather than
fragmented (what path MTU probing needs); `max_payload_towards(address)` gives the local route's limit.

API: `open_udp_socket(host, port)` → `UdpSocket` with `local_address`, `send_batch(datagrams)`,
`receive_batch(max_datagrams)`, `receive_nowait()`, `fileno()`, `close()`; `gso_enabled` /
`gro_enabled` say what the kernel gave us.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence
from typing import Any

import trio

from ocsync_tui.errors import OcsyncError

Address = tuple[Any, ...]

DEFAULT_PORT = 44996
UDP_SEGMENT = 103
UDP_GRO = 104
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
# The kernel caps one GSO send at 64 segments (UDP_MAX_SEGMENTS) and at one IP datagram's payload.
MAX_GSO_SEGMENTS = 64
MAX_UDP_PAYLOAD = 65507
DEFAULT_BUFFER_BYTES = 8 << 20
_MIN_GSO_SEGMENT = 512
_IP_MTU_DISCOVER = 10
_IPV6_MTU_DISCOVER = 23
_PMTUDISC_PROBE = 3
_IP_MTU = 14
_IPV6_MTU = 24
_IPV4_UDP_HEADERS = 28
_IPV6_UDP_HEADERS = 48
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_SEGMENT_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
# Errors that mean "this datagram is lost", never "the socket is broken".
_LOST_DATAGRAM_ERRORS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EMSGSIZE,
        errno.EPERM,
        errno.EACCES,
        errno.EADDRNOTAVAIL,
        errno.ENOBUFS,
        errno.EAFNOSUPPORT,
        errno.EINVAL,
        errno.EIO,
    }
)
# A device or path that cannot segment answers a GSO send with one of these.
_GSO_REFUSED_ERRORS = frozenset({errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT})


class UdpSocketError(OcsyncError):
    pass


def open_udp_socket(
    host: str | None = None,
    port: int = DEFAULT_PORT,
    *,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    offload: bool = True,
) -> UdpSocket:
    """Bind a UDP socket; host None means every address, IPv6 and IPv4 on one socket where possible.

    Port 0 picks any free port. offload=False keeps to one datagram per syscall (no GSO/GRO). Raises UdpSocketError (e.g. port in use) with a message naming the port.
    """
    try:
        if host is None:
            sock = _bind_any(port)
        else:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(sockaddr)
            except BaseException:
                sock.close()
                raise
    except OSError as error:
        where = f"{host}:{port}" if host is not None else f"port {port}"
        if error.errno == errno.EADDRINUSE:
            raise UdpSocketError(f"UDP {where} is already in use; stop the other program or pick another port") from error
        raise UdpSocketError(f"cannot open UDP {where}: {error.strerror or error}") from error
    return UdpSocket(sock, buffer_bytes=buffer_bytes, offload=offload)


def _bind_any(port: int) -> socket.socket:
    if socket.has_ipv6:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:
            pass
        else:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
                return sock
            except OSError as error:
                sock.close()
                if error.errno == errno.EADDRINUSE:
                    raise
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSocket:
    """A bound, non-blocking UDP socket. Use from one trio task at a time per direction."""

    def __init__(
        self, sock: socket.socket, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES, offload: bool = True
    ) -> None:
        self._sock = sock
        self._family = sock.family
        sock.setblocking(False)
        _enlarge_buffers(sock, buffer_bytes)
        _forbid_fragmentation(sock)
        self.gso_enabled = offload and _probe_gso(sock)
        # A path may refuse GSO only above some segment size (the kernel rejects segments over the route MTU).
        self._gso_segment_limit = MAX_UDP_PAYLOAD
        self.gro_enabled = offload and _enable_gro(sock)
        self._receive_size = 65535 if self.gro_enabled else MAX_UDP_PAYLOAD + 1
        # Addresses repeat for every datagram of a transfer; normalising each once keeps the hot path short.
        self._inbound_addresses: dict[Any, Address] = {}
        self._outbound_addresses: dict[Address, Any] = {}

    @property
    def local_address(self) -> Address:
        return _normalise_address(self._sock.getsockname())

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> UdpSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def send_batch(self, datagrams: Sequence[tuple[bytes, Address]]) -> None:
        """Send every datagram in order, waiting only while the kernel's buffer is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.gso_enabled and self._gso_segment_limit:
            await self._send_segmented(datagrams)
        else:
            for data, address in datagrams:
                await self._send_one(data, self._kernel_address(address))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def send(self, data: bytes, address: Address) -> None:
        await self.send_batch([(data, address)])

    async def receive_batch(self, max_datagrams: int = 256) -> list[tuple[bytes, Address]]:
        """Wait for at least one datagram, then return what is queued, up to about max_datagrams."""
        batch: list[tuple[bytes, Address]] = []
        waited = False
        while True:
            try:
                self._drain_into(batch, max_datagrams)
            except BlockingIOError:
                pass
            if batch:
                break
            await trio.lowlevel.wait_readable(self._sock)
            waited = True
        if not waited:
            await trio.lowlevel.checkpoint()
        return batch

    def receive_nowait(self, max_datagrams: int = 256) -> list[tuple[bytes, Address]]:
        """What is queued right now (possibly nothing), without waiting."""
        batch: list[tuple[bytes, Address]] = []
        try:
            self._drain_into(batch, max_datagrams)
        except BlockingIOError:
            pass
        return batch

    def _drain_into(self, batch: list[tuple[bytes, Address]], max_datagrams: int) -> None:
        sock = self._sock
        size = self._receive_size
        addresses = self._inbound_addresses
        while len(batch) < max_datagrams:
            try:
                if self.gro_enabled:
                    data, ancillary, _, raw_address = sock.recvmsg(size, _GRO_CMSG_SPACE)
                else:
                    data, raw_address = sock.recvfrom(size)
                    ancillary = None
            except OSError as error:
                if isinstance(error, BlockingIOError):
                    raise
                # An ICMP error queued by an earlier send surfaces here; it concerns no datagram we hold.
                if error.errno in _LOST_DATAGRAM_ERRORS:
                    continue
                raise
            address = addresses.get(raw_address)
            if address is None:
                address = addresses[raw_address] = _normalise_address(raw_address)
                if len(addresses) > 4096:
                    addresses.clear()
            segment = _gro_segment_size(ancillary) if ancillary else 0
            if segment and segment < len(data):
                view = memoryview(data)
                batch.extend((bytes(view[i : i + segment]), address) for i in range(0, len(data), segment))
            else:
                batch.append((data, address))

    async def _send_segmented(self, datagrams: Sequence[tuple[bytes, Address]]) -> None:
        count = len(datagrams)
        index = 0
        while index < count:
            data, address = datagrams[index]
            segment = len(data)
            end = index + 1
            total = segment
            # A GSO run: same destination, equal sizes, only the last may be shorter.
            while end < count and end - index < MAX_GSO_SEGMENTS and 0 < segment <= self._gso_segment_limit:
                next_data, next_address = datagrams[end]
                size = len(next_data)
                if next_address != address or size > segment or total + size > MAX_UDP_PAYLOAD:
                    break
                total += size
                end += 1
                if size < segment:
                    break
            kernel_address = self._kernel_address(address)
            if end - index == 1:
                await self._send_one(data, kernel_address)
            else:
                run = [item[0] for item in datagrams[index:end]]
                if not await self._send_gso(run, segment, kernel_address):
                    for part in run:
                        await self._send_one(part, kernel_address)
            index = end

    async def _send_gso(self, run: list[bytes], segment: int, kernel_address: Any) -> bool:
        """Send `run` as one GSO call; False (and no GSO at this size from now on) if it was refused."""
        control = [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(segment))]
        while True:
            try:
                self._sock.sendmsg(run, control, 0, kernel_address)
                return True
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
            except OSError as error:
                if error.errno in _GSO_REFUSED_ERRORS:
                    self._gso_segment_limit = segment - 1 if segment > _MIN_GSO_SEGMENT else 0
                    return False
                if error.errno in _LOST_DATAGRAM_ERRORS:
                    return True
                raise

    async def _send_one(self, data: bytes, kernel_address: Any) -> None:
        while True:
            try:
                self._sock.sendto(data, kernel_address)
                return
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
            except OSError as error:
                if error.errno in _LOST_DATAGRAM_ERRORS:
                    return
                raise

    def _kernel_address(self, address: Address) -> Any:
        kernel_address = self._outbound_addresses.get(address)
        if kernel_address is None:
            kernel_address = _kernel_form(self._family, address)
            if len(self._outbound_addresses) > 4096:
                self._outbound_addresses.clear()
            self._outbound_addresses[address] = kernel_address
        return kernel_address


def _normalise_address(raw: Any) -> Address:
    host, port = raw[0], raw[1]
    if host.startswith("::ffff:") and "." in host:
        return (host[7:], port)
    if len(raw) == 4 and raw[3]:
        return (host, port, 0, raw[3])
    return (host, port)


def _kernel_form(family: socket.AddressFamily, address: Address) -> Any:
    host, port = address[0], address[1]
    if family == socket.AF_INET6 and ":" not in host:
        try:
            socket.inet_aton(host)
        except OSError:
            return address
        return (f"::ffff:{host}", port)
    return address


def _gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, payload in ancillary:
        if level == socket.SOL_UDP and kind == UDP_GRO and len(payload) >= _GRO_SIZE.size:
            return _GRO_SIZE.unpack_from(payload)[0]
    return 0


def _enlarge_buffers(sock: socket.socket, buffer_bytes: int) -> None:
    # SO_*BUFFORCE passes the sysctl ceiling (rmem_max) when we have CAP_NET_ADMIN; otherwise take what we get.
    for forced, plain in ((_SO_SNDBUFFORCE, socket.SO_SNDBUF), (_SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, buffer_bytes)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
            except OSError:
                pass


def _forbid_fragmentation(sock: socket.socket) -> None:
    # Path MTU probing needs too-large datagrams lost (DF set), never fragmented: a lost fragment loses all.
    options = [(socket.IPPROTO_IP, _IP_MTU_DISCOVER)]
    if sock.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER))
    for level, option in options:
        try:
            sock.setsockopt(level, option, _PMTUDISC_PROBE)
        except OSError:
            pass


def max_payload_towards(address: Address) -> int:
    """The largest UDP payload the local route to `address` carries in one packet (its interface MTU).

    An upper bound for path MTU probing; the path beyond the first hop may carry less.
    """
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            if family == socket.AF_INET6:
                payload = probe.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU) - _IPV6_UDP_HEADERS
            else:
                payload = probe.getsockopt(socket.IPPROTO_IP, _IP_MTU) - _IPV4_UDP_HEADERS
    except OSError:
        return 1200
    return min(payload, MAX_UDP_PAYLOAD)


def _probe_gso(sock: socket.socket) -> bool:
    # Reading the option succeeds exactly on kernels that accept UDP_SEGMENT on sendmsg.
    try:
        sock.getsockopt(socket.SOL_UDP, UDP_SEGMENT)
    except (OSError, AttributeError):
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except (OSError, AttributeError):
        return False
    return True

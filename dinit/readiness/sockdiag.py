"""Listening sockets from the kernel's ``sock_diag`` netlink interface (what ``ss`` uses).

Reading ``/proc/net/tcp`` walks every hash bucket of the TCP tables and costs ~10 ms on a host with
a large table, which polled for ten services is a third of a core; a ``sock_diag`` dump filtered
by state returns only the listening sockets, in well under a millisecond. ``/proc/net`` (procfs) is
the fallback where netlink is refused.
"""

from __future__ import annotations

import socket
import struct

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN, _TCP_CLOSE = 10, 7
_UDIAG_SHOW_NAME = 1
_UNIX_DIAG_NAME = 0
_HEADER = struct.Struct("=IHHII")
#: inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes).
_INET_REQUEST = struct.Struct("=BBBBI48x")
#: inet_diag_msg: family, state, timer, retrans, the sockid (source port first, big-endian),
#: expires, rqueue, wqueue, uid, inode.
_INET_INODE_OFFSET = 4 + 48 + 12 + 4
#: unix_diag_req: family, protocol, pad, states, ino, show, cookie.
_UNIX_REQUEST = struct.Struct("=BBHIII8x")
_UNIX_MESSAGE = struct.Struct("=BBBxI8x")


_socket: socket.socket | None = None


def _netlink() -> socket.socket:
    """One netlink socket, kept: polling opens nothing per poll."""
    global _socket
    if _socket is None:
        _socket = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                _NETLINK_SOCK_DIAG)
    return _socket


def _dump(request: bytes) -> list[bytes]:
    """Send one dump request; the payload of every answer message. Raises OSError (and forgets the
    socket, so no half-read answer is left for the next request)."""
    global _socket
    try:
        return _exchange(_netlink(), request)
    except OSError:
        if _socket is not None:
            _socket.close()
            _socket = None
        raise


def _exchange(sock: socket.socket, request: bytes) -> list[bytes]:
    sock.sendto(_HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                             _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + request, (0, 0))
    payloads: list[bytes] = []
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
            if kind == _NLMSG_DONE:
                return payloads
            if kind == _NLMSG_ERROR:
                error = -struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                raise OSError(error, "sock_diag")
            payloads.append(data[offset + _HEADER.size:offset + length])
            offset += (length + 3) & ~3
            if length == 0:
                return payloads


def listening_inet(protocol: str, port: int) -> set[int]:
    """Inodes of the TCP sockets in LISTEN (or UDP sockets not connected) on ``port``, IPv4 and
    IPv6. Raises OSError when netlink is not available."""
    proto, state = ((socket.IPPROTO_TCP, _TCP_LISTEN) if protocol == "tcp"
                    else (socket.IPPROTO_UDP, _TCP_CLOSE))
    inodes: set[int] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for payload in _dump(_INET_REQUEST.pack(family, proto, 0, 0, 1 << state)):
            if len(payload) >= _INET_INODE_OFFSET + 4 and struct.unpack_from(">H", payload, 4)[0] == port:
                inodes.add(struct.unpack_from("=I", payload, _INET_INODE_OFFSET)[0])
    return inodes


def listening_unix(path: str) -> set[int]:
    """Inodes of the unix sockets bound to ``path`` that listen (stream) or receive (datagram)."""
    wanted = path.encode()
    inodes: set[int] = set()
    states = 1 << _TCP_LISTEN | 1 << _TCP_CLOSE
    for payload in _dump(_UNIX_REQUEST.pack(socket.AF_UNIX, 0, 0, states, 0, _UDIAG_SHOW_NAME)):
        if len(payload) < _UNIX_MESSAGE.size:
            continue
        _family, kind, state, inode = _UNIX_MESSAGE.unpack_from(payload)
        if state == _TCP_CLOSE and kind != socket.SOCK_DGRAM:
            continue
        offset = _UNIX_MESSAGE.size
        while offset + 4 <= len(payload):
            length, attribute = struct.unpack_from("=HH", payload, offset)
            if length < 4:
                break
            if attribute == _UNIX_DIAG_NAME and payload[offset + 4:offset + length].rstrip(b"\0") == wanted:
                inodes.add(inode)
            offset += (length + 3) & ~3
    return inodes

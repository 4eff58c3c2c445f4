"""`share-gateway health`: asks the gateway its settings describe whether it answers."""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import ListenSettings, Settings

# The probe runs every few seconds, for as long as the gateway runs: it imports nothing beyond
# the standard library's sockets (no aiohttp, no event loop), and reads only the settings.

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# A status line is short: a peer that sends more than this without a line break is no HTTP server.
MAX_STATUS_LINE_BYTES = 8192
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: [^\r\n]*)?")

AddressInfo = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
]


class ProbeFailed(Exception):
    """No answer came, or not an HTTP one: what happened, in words that follow the URL."""


def probe_address(listen: ListenSettings) -> tuple[str, int]:
    """The host and port at which a gateway listening at `listen` is asked.

    A wildcard address listens on every interface, loopback among them, and is no address to
    connect to: it is asked on loopback of its own family. A host name is asked as it is.
    """
    try:
        address = ipaddress.ip_address(listen.host)
    except ValueError:
        return listen.host, listen.port
    if address.is_unspecified:
        return ("::1" if address.version == 6 else "127.0.0.1"), listen.port
    return listen.host, listen.port


def url_host(host: str) -> str:
    """`host` as a URL names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def ask(host: str, port: int, path: str, timeout: float) -> int:
    """GET `path` at `host`:`port`; the status of the answer. Looking the host up, connecting
    and reading the status line together take at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    late = ProbeFailed(f"no answer within {timeout:g} s")
    addresses = _resolve(host, port, deadline, late)
    with _connect(addresses, deadline, late) as connection:
        # A host name the settings accept is one IDNA encodes: the header takes only ASCII.
        name = host if host.isascii() else host.encode("idna").decode("ascii")
        authority = f"{url_host(name)}:{port}".encode("ascii")
        request = (
            b"GET " + path.encode("ascii") + b" HTTP/1.1\r\nHost: " + authority + b"\r\n"
            b"User-Agent: share-gateway-health\r\nConnection: close\r\n\r\n"
        )
        try:
            connection.settimeout(_remaining(deadline, late))
            connection.sendall(request)
            head = b""
            while b"\r\n" not in head:
                if len(head) > MAX_STATUS_LINE_BYTES:
                    raise ProbeFailed("answered, but not in HTTP")
                # Each read gets what is left of the whole: a server that sends its answer a
                # byte at a time still runs out of time at the deadline.
                connection.settimeout(_remaining(deadline, late))
                chunk = connection.recv(4096)
                if not chunk:
                    raise ProbeFailed("closed the connection without answering")
                head += chunk
        except TimeoutError:
            raise late from None
        except OSError as exc:
            raise ProbeFailed(f"connection lost: {exc.strerror or exc}") from exc
    status = _STATUS_LINE.fullmatch(head.partition(b"\r\n")[0])
    if status is None:
        raise ProbeFailed("answered, but not in HTTP")
    return int(status.group(1))


def _remaining(deadline: float, late: ProbeFailed) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise late
    return left


def _resolve(host: str, port: int, deadline: float, late: ProbeFailed) -> list[AddressInfo]:
    # The resolver takes no timeout, and a name server that does not answer holds it for far
    # longer than a probe may take: it runs aside, and is left behind at the deadline (a daemon
    # thread, gone when the command exits).
    found: list[AddressInfo] = []
    failed: list[OSError] = []

    def look_up() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    worker = threading.Thread(target=look_up, name="health-probe-lookup", daemon=True)
    worker.start()
    worker.join(_remaining(deadline, late))
    if worker.is_alive():
        raise late
    if failed:
        raise ProbeFailed(f"could not resolve {host}: {failed[0].strerror or failed[0]}")
    if not found:
        raise ProbeFailed(f"could not resolve {host}: no address")
    return found


def _connect(addresses: list[AddressInfo], deadline: float, late: ProbeFailed) -> socket.socket:
    problem = OSError("no address to connect to")
    for family, kind, proto, _, address in addresses:
        connection = socket.socket(family, kind, proto)
        try:
            connection.settimeout(_remaining(deadline, late))
            connection.connect(address)
        except TimeoutError:
            connection.close()
            raise late from None
        except OSError as exc:
            connection.close()
            problem = exc
            continue
        except BaseException:
            connection.close()
            raise
        return connection
    raise ProbeFailed(f"could not connect: {problem.strerror or problem}")


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 if the gateway answers 200, 1 (with one line on stderr) if not."""
    if settings.listen.port == 0:
        print(
            "share-gateway health: the gateway listens on any free port (listen.port: 0), "
            "which no probe can know: give it a port",
            file=sys.stderr,
        )
        return EXIT_USAGE
    host, port = probe_address(settings.listen)
    path = "/_gateway/ready" if args.ready else "/_gateway/health"
    url = f"http://{url_host(host)}:{port}{path}"
    try:
        status = ask(host, port, path, args.timeout)
    except ProbeFailed as exc:
        print(f"share-gateway health: {url} {exc}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(f"share-gateway health: {url} answered {status}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK

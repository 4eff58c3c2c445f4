"""Partner origins: the scheme, host and port of a contract's base URL, parsed once.

Apart from the client in `gateway.upstream`, which pools its connections by them: checking a
contract's base URL (`contracts validate`) must not import the HTTP client to do it.
"""

from __future__ import annotations

import contextlib
import ipaddress
from functools import lru_cache
from typing import NamedTuple


class Origin(NamedTuple):
    """Where a partner listens; connections are pooled per origin."""

    scheme: str  # lower-cased
    host: str  # lower-cased, an IPv6 literal without its brackets
    port: int  # the scheme's own when the URL names none
    authority: str  # the Host header, as the URL wrote it

    @property
    def key(self) -> tuple[str, str, int]:
        """The origin however it was written: what connections are pooled and capped by."""
        return self.scheme, _host_key(self.host), self.port


@lru_cache(maxsize=1024)
def _host_key(host: str) -> str:
    """One spelling per host: a fully qualified name's final dot dropped (`partner.example.`),
    an IPv6 address compressed (`0:0::1` is `::1`). Else one partner, written two ways in two
    contracts, would have twice its cap of connections."""
    if ":" in host:
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(host).compressed
        return host
    return host.removesuffix(".")


@lru_cache(maxsize=1024)
def origin_of(base: str) -> Origin:
    """Parse `scheme://host[:port]` (a contract's base URL up to its path), once per origin."""
    scheme, sep, authority = base.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _PORTS or not authority or "@" in authority:
        raise ValueError(f"not an http(s) origin: {base!r}")
    if authority.startswith("["):  # an IPv6 literal
        host, _, rest = authority[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else rest
    else:
        host, _, port_text = authority.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise ValueError(f"not an http(s) origin: {base!r}")
    port = int(port_text) if port_text else _PORTS[scheme]
    if not 0 < port < 65536:
        raise ValueError(f"not an http(s) origin: {base!r}")
    if not authority.isascii():
        # The Host header is ASCII (RFC 9110 7.2): a name in another script goes as its
        # A-label (`xn--bcher-kva.example`), the name the resolver looks up. One IDNA cannot
        # encode stays as written, for the contract check to refuse.
        with contextlib.suppress(UnicodeError):
            authority = host.encode("idna").decode("ascii") + authority[len(host) :]
    return Origin(scheme, host.lower(), port, authority)


_PORTS = {"http": 80, "https": 443}

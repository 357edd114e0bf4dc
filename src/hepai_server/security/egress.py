"""The egress guard: where the platform may connect on a user's behalf.

A worker tells the platform its address, and the platform then calls it with its callers'
requests and relays the answers. So registering a worker asks the platform to connect somewhere
and hand back what it reads there; without a guard, any key holder could name the cloud
metadata service, a database, or a keyless model server inside the institute's network. The
guard holds in three places:

- At registration, ``parse_address`` takes the address apart once: http(s) only, no userinfo,
  query or fragment, a normalised path prefix, and the host canonicalised, so every spelling of
  an IP (decimal, hex, octal, short forms, IPv4 inside IPv6) is judged as the IP it is. Every
  call URL is then built from the parsed parts and a fixed path of the hepai protocol.
- ``EgressPolicy`` judges an IP: link-local (cloud metadata), unspecified, multicast, broadcast
  and reserved addresses never; anything else only inside the operator's allowed networks
  (``HEPAI_SERVER_WORKER_ALLOWED_NETWORKS``), unless the worker's owner is trusted (the
  platform's admins and its own service account).
- When a connection is opened, ``EgressPolicy.socket_factory`` checks the very address the
  socket is about to connect to, after DNS: a name that resolves (or is rebound) to a refused
  address is never connected to. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from hepai_server.errors import AddressRefused, InvalidRequest

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: What aiohttp's connector calls to make each socket, with the address it will connect to.
SocketFactory = Callable[[Any], socket.socket]

#: Characters no host may contain (WHATWG's forbidden host code points, and ``%``: a host is
#: never percent-encoded here).
_FORBIDDEN_HOST = frozenset(" \t\r\n#%/:<>?@[\\]^|\"'`{}")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
#: IPv4's "this network" (0.0.0.0/8) and the reserved block with the broadcast address.
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_RESERVED = ipaddress.IPv4Network("240.0.0.0/4")
MAX_PREFIX = 256


@dataclass(frozen=True, slots=True)
class WorkerAddress:
    """A worker's address, taken apart once: where to connect, and its route prefix."""

    scheme: str
    #: A canonical IP (dotted IPv4, compressed IPv6) or a lowercase ASCII host name.
    host: str
    port: int
    #: The path the worker's routes sit under (hepai workers: ``/apiv2``), or "".
    prefix: str

    @property
    def ip(self) -> IP | None:
        """The host as an IP, when it is one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port != default else "")

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """A URL of the worker's: its origin and prefix, a fixed path of the protocol, and a
        query encoded here (never one the worker's owner wrote)."""
        if not path.startswith("/"):
            raise ValueError("protocol paths start with /")
        url = self.origin + self.prefix + path
        return f"{url}?{urlencode(query)}" if query else url

    def __str__(self) -> str:
        return self.origin + self.prefix


def parse_address(raw: object) -> WorkerAddress:
    """A worker address as the platform will call it; InvalidRequest naming the rule when it
    is not one the platform calls."""
    try:
        return _parse(raw)
    except BadAddress as exc:
        raise InvalidRequest(
            f"'worker_address' {exc}", param="network_info.worker_address"
        ) from None


def parse_base_url(raw: str) -> str:
    """A provider's base URL an admin entered, taken apart and put together the same way: an
    http(s) URL without user name, password, query or fragment (its path kept, normalised)."""
    try:
        return str(_parse(raw))
    except BadAddress as exc:
        raise InvalidRequest(f"the base URL {exc}", param="base_url") from None


def parse_server_url(raw: object) -> WorkerAddress:
    """An external MCP server's URL an admin entered, taken apart as a worker's address is
    (its path is the server's endpoint)."""
    try:
        return _parse(raw)
    except BadAddress as exc:
        raise InvalidRequest(f"the MCP server URL {exc}", param="url") from None


def _parse(raw: object) -> WorkerAddress:
    if not isinstance(raw, str) or not raw or len(raw) > 512:
        raise BadAddress("must be an http(s) URL of at most 512 characters")
    if any(ord(c) < 0x21 or c == "\x7f" for c in raw) or "\\" in raw:
        raise BadAddress("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise BadAddress(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadAddress("must use http or https")
    if "@" in parts.netloc:
        raise BadAddress("must not carry a user name or password")
    if parts.query or "?" in raw:
        raise BadAddress("must not carry a query")
    if parts.fragment or "#" in raw:
        raise BadAddress("must not carry a fragment")
    if parts.hostname is None or not parts.hostname:
        raise BadAddress("must name a host")
    return WorkerAddress(
        scheme=scheme,
        host=canonical_host(parts.netloc.rsplit(":", 1)[0] if port else parts.netloc),
        port=port if port is not None else (443 if scheme == "https" else 80),
        prefix=normalised_prefix(parts.path),
    )


def canonical_host(host: str) -> str:
    """The host as the platform judges and connects to it: an IP in its canonical form
    whatever its spelling, else a lowercase ASCII (IDNA) name."""
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            raise BadAddress("has an invalid IPv6 literal (zone ids are not accepted)")
        try:
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise BadAddress("has an invalid IPv6 literal") from None
        # IPv4-mapped and -compatible addresses reach the IPv4 host: judged and called as it.
        return str(same_host_ipv4(ip) or ip)
    if not host or any(c in _FORBIDDEN_HOST for c in host):
        raise BadAddress("has a host with characters no host name may contain")
    name = host.rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadAddress("has a host that is not a valid domain name") from None
    if not name:
        raise BadAddress("must name a host")
    labels = name.split(".")
    if _is_numeric(labels[-1]):
        # WHATWG: a host whose last label is a number is an IPv4 address, in any of the
        # spellings inet_aton accepts (127.1, 0x7f.1, 0177.0.0.1, 2130706433), or invalid.
        return str(_parse_ipv4(labels))
    return name


def _is_numeric(label: str) -> bool:
    if label.isdigit():
        return True
    return label[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in label[2:])


def _parse_ipv4(labels: list[str]) -> ipaddress.IPv4Address:
    if len(labels) > 4:
        raise BadAddress("has a host that is not a valid IPv4 address")
    numbers = []
    for label in labels:
        try:
            if label[:2] in ("0x", "0X"):
                numbers.append(int(label[2:] or "0", 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label, 8))
            else:
                numbers.append(int(label, 10))
        except ValueError:
            raise BadAddress("has a host that is not a valid IPv4 address") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise BadAddress("has a host that is not a valid IPv4 address")
    value = last
    for position, number in enumerate(head):
        value += number << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def normalised_prefix(path: str) -> str:
    """The route prefix: no dot segments, no encoded separators, no empty segments, no
    trailing slash ("/apiv2/" is "/apiv2")."""
    if "%" in path:
        decoded = unquote(path)
        if any(c in decoded for c in "/\\.%?#") and decoded != path:
            raise BadAddress("must not carry encoded separators or dots in its path")
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise BadAddress("must not carry . or .. in its path")
    if any(not all(c.isalnum() or c in "-_~.!$&'()*+,;=:@" for c in s) for s in segments):
        raise BadAddress("has a path with characters a route prefix may not contain")
    prefix = "/" + "/".join(segments) if segments else ""
    if len(prefix) > MAX_PREFIX:
        raise BadAddress(f"has a path longer than {MAX_PREFIX} characters")
    return prefix


def same_host_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address is another spelling of: IPv4-mapped (::ffff:a.b.c.d)
    and IPv4-compatible (::a.b.c.d)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    value = int(ip)
    if value >> 32 == 0 and value > 1:
        return ipaddress.IPv4Address(value)
    return None


def embedded_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries or leads to, whatever the mechanism: the two
    spellings of ``same_host_ipv4``, NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16)
    and Teredo (2001::/32, its client address)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if (same := same_host_ipv4(ip)) is not None:
        return same
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class EgressPolicy:
    """Which IPs the platform connects to on whose behalf."""

    def __init__(self, allowed: Iterable[Network]) -> None:
        self.allowed: tuple[Network, ...] = tuple(allowed)

    @classmethod
    def from_strings(cls, networks: Sequence[str]) -> EgressPolicy:
        return cls(ipaddress.ip_network(network, strict=False) for network in networks)

    def refusal(self, ip: IP, *, trusted: bool) -> str | None:
        """Why the platform may not connect to ``ip`` (for a trusted owner or not), or None."""
        inner = embedded_ipv4(ip)
        if inner is not None:
            if isinstance(ip, ipaddress.IPv6Address) and same_host_ipv4(ip) is not None:
                return self.refusal(inner, trusted=trusted)
            # A translated address (NAT64, 6to4, Teredo): refused when what it leads to is,
            # and allowed only when the translated address itself is.
            if reason := self.refusal(inner, trusted=trusted):
                return reason
        if reason := self._never(ip):
            return reason
        if trusted or any(ip in network for network in self.allowed):
            return None
        return (
            f"{ip} is outside the networks workers may use (HEPAI_SERVER_WORKER_ALLOWED_NETWORKS)"
        )

    @staticmethod
    def _never(ip: IP) -> str | None:
        if ip.is_link_local:
            return f"{ip} is link-local (cloud metadata and the like), never reachable"
        if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
            return f"{ip} is an unspecified address, never reachable"
        if ip.is_multicast:
            return f"{ip} is a multicast address, never reachable"
        if isinstance(ip, ipaddress.IPv4Address) and ip in _RESERVED:
            return f"{ip} is a reserved or broadcast address, never reachable"
        return None

    def check(self, address: WorkerAddress, *, trusted: bool) -> None:
        """Refuse (AddressRefused, naming the rule) an address the platform may not call:
        an IP judged as it is, a name judged by every address it resolves to now."""
        ip = address.ip
        ips = [ip] if ip is not None else resolve(address.host, address.port)
        for candidate in ips:
            if reason := self.refusal(candidate, trusted=trusted):
                raise AddressRefused(
                    f"'worker_address' {address} is refused: {reason}",
                    param="network_info.worker_address",
                )

    def socket_factory(self, *, trusted: bool) -> SocketFactory:
        """For aiohttp's connector: a socket for an address that passes, else OSError. It is
        called with the address each connection is about to be made to, after DNS."""

        def make(addr_info: Any) -> socket.socket:
            family, kind, proto, _name, sockaddr = addr_info
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if reason := self.refusal(ip, trusted=trusted):
                raise EgressRefused(reason)
            return socket.socket(family=family, type=kind, proto=proto)

        return make


class EgressRefused(ConnectionRefusedError):
    """A connection the egress policy refused to open."""


def resolve(host: str, port: int) -> list[IP]:
    """Every address a host name resolves to now; a name that does not resolve is refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AddressRefused(
            f"worker host {host!r} does not resolve", param="network_info.worker_address"
        ) from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


class BadAddress(ValueError):
    """An address not in a form the platform calls; the message names the rule."""

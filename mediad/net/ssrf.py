"""The SSRF guard: refuses every connection to an address that is not public on the Internet.

The check runs in aiohttp's `socket_factory`, on the address about to be connected, so it sees
every redirect hop and every DNS answer (rebinding included), not just the URL as written.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import aiohttp

from mediad import errors

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# Each range with the reason a refusal names. Python's `is_global` is not enough on its own:
# its tables change between releases, and 3.11 calls 64:ff9b::a00:1 (NAT64 to 10.0.0.1) global.
_BLOCKED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_BLOCKED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(cidr), reason)
    for cidr, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::/96", "IPv4-compatible"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "IETF protocol assignments"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "SRv6 SIDs"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

# Only 2000::/3 is allocated for global unicast; anything else not named above is reserved.
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")


class BlockedAddressError(errors.PermanentFetchError):
    """A fetch would have connected to an address that is not public and not allowed."""

    error_code = "blocked_address"

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class BlockedConnectionError(OSError):
    """The socket factory refused an address; an OSError so aiohttp treats it as a connect failure.

    `blocked` is the BlockedAddressError behind it.
    """

    # Constant on purpose: when every resolved address fails, aiohappyeyeballs re-raises the
    # original exception only if all of them have the same str(); otherwise it builds a bare
    # OSError and this class, with the address, would be lost.
    STRERROR = "address refused by mediad's SSRF guard"

    def __init__(self, blocked: BlockedAddressError) -> None:
        super().__init__(errno.EACCES, self.STRERROR)
        self.blocked = blocked
        self.address = blocked.address


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """Parse `download.allowed_networks`; a ValueError names the first bad entry."""
    networks: list[Network] = []
    for cidr in cidrs:
        try:
            # strict: "10.0.0.1/8" in a security allowlist is a typo we should not guess about.
            network = ipaddress.ip_network(cidr.strip(), strict=True)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad allowed network {cidr!r}: {exc}") from exc
        # Addresses are unwrapped from ::ffff:a.b.c.d before matching, so the network must be too.
        if isinstance(network, IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            network = IPv4Network(
                (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
            )
        networks.append(network)
    return tuple(networks)


def check_address(ip: str | Address, allowed: Sequence[Network]) -> None:
    """Return if `ip` is public or inside `allowed`; raise BlockedAddressError otherwise."""
    addr = _parse(ip)
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    # A translator or relay delivers to the embedded IPv4 address, so it must pass on its own,
    # even when an operator has allowed the translation prefix itself (e.g. 64:ff9b::/96 on a
    # DNS64 host).
    for embedded in _embedded_ipv4(addr):
        try:
            check_address(embedded, allowed)
        except BlockedAddressError as exc:
            raise BlockedAddressError(
                f"{addr} embeds the refused IPv4 address {embedded}: {exc}", address=str(addr)
            ) from exc
    if any(addr.version == net.version and addr in net for net in allowed):
        return
    reason = _refusal_reason(addr)
    if reason is not None:
        raise BlockedAddressError(f"{addr} is a {reason} address", address=str(addr))


def guarded_socket_factory(
    allowed: Sequence[Network],
) -> Callable[[aiohttp.AddrInfoType], socket.socket]:
    """A `TCPConnector(socket_factory=...)` that refuses a non-public address before connecting."""
    frozen = tuple(allowed)

    def factory(addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        try:
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise BlockedAddressError(
                    f"address family {family!r} is not IP", address=str(sockaddr)
                )
            check_address(str(sockaddr[0]), frozen)
        except BlockedAddressError as exc:
            raise BlockedConnectionError(exc) from exc
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def make_connector(
    allowed: Sequence[Network], *, limit: int, limit_per_host: int
) -> aiohttp.TCPConnector:
    """The connector of mediad's one ClientSession: every connection it opens is guarded."""
    return aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        # Caching DNS is safe: the guard checks the address connected, not the name.
        ttl_dns_cache=60,
        socket_factory=guarded_socket_factory(allowed),
    )


def blocked_cause(exc: BaseException) -> BlockedAddressError | None:
    """Find the guard's refusal inside what aiohttp raised, or None if the failure was another."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BlockedAddressError):
            return current
        if isinstance(current, BlockedConnectionError):
            return current.blocked
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, BaseException):
            stack.append(os_error)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def _parse(ip: str | Address) -> Address:
    if isinstance(ip, IPv4Address):
        return ip
    if isinstance(ip, IPv6Address):
        # A scope id (fe80::1%eth0) changes nothing about where the address points.
        return IPv6Address(int(ip)) if ip.scope_id else ip
    try:
        # Only the strict dotted/colon forms parse here; "2130706434" or "0x7f.1" are refused
        # rather than guessed, since the kernel's resolver would read them as 127.0.0.x.
        return ipaddress.ip_address(ip.partition("%")[0])
    except ValueError as exc:
        raise BlockedAddressError(f"{ip!r} is not an IP address", address=str(ip)) from exc


def _embedded_ipv4(addr: Address) -> list[IPv4Address]:
    if isinstance(addr, IPv4Address):
        return []
    found: list[IPv4Address] = []
    if addr in _NAT64 or (addr in _IPV4_COMPATIBLE and int(addr) > 1):
        found.append(IPv4Address(int(addr) & 0xFFFFFFFF))
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    return found


def _refusal_reason(addr: Address) -> str | None:
    if isinstance(addr, IPv4Address):
        for net4, reason in _BLOCKED_V4:
            if addr in net4:
                return reason
    else:
        for net6, reason in _BLOCKED_V6:
            if addr in net6:
                return reason
        if addr not in _GLOBAL_UNICAST_V6:
            return "reserved"
    # Belt and braces: whatever this Python's tables know that ours do not.
    if not addr.is_global or addr.is_multicast or addr.is_reserved:
        return "non-global"
    return None

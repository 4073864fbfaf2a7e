"""The SSRF guard: the address table without sockets, then real requests to loopback servers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from mediad import errors
from mediad.net import ssrf

REFUSED = [
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "100.64.0.1",
    "100.127.255.254",
    "192.0.0.1",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "198.19.255.254",
    "192.88.99.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "::ffff:127.0.0.2",
    "::ffff:7f00:2",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "::8.8.8.8",
    "64:ff9b::a00:1",
    "64:ff9b::7f00:1",
    "64:ff9b::808:808",
    "64:ff9b:1::a00:1",
    "2002:a00:1::1",
    "2002:7f00:1::1",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "5f00::1",
    "4000::1",
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "157.240.22.35",
    "2606:4700:4700::1111",
    "2a03:2880:f12f:83:face:b00c::25de",
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("ip", REFUSED)
def test_check_address_refuses_non_public(ip: str) -> None:
    """Every private, loopback, link-local, multicast, reserved or tunnel address is refused."""
    with pytest.raises(ssrf.BlockedAddressError) as info:
        ssrf.check_address(ip, [])
    assert info.value.error_code == "blocked_address"
    assert info.value.address


@pytest.mark.parametrize("ip", PUBLIC)
def test_check_address_passes_public(ip: str) -> None:
    """Public unicast addresses, IPv4 and IPv6, pass with no allowlist."""
    ssrf.check_address(ip, [])


def test_check_address_accepts_address_objects() -> None:
    """IPv4Address and IPv6Address objects are checked like their strings."""
    ssrf.check_address(IPv4Address("8.8.8.8"), [])
    with pytest.raises(ssrf.BlockedAddressError):
        ssrf.check_address(IPv6Address("fe80::1%eth0"), [])


@pytest.mark.parametrize("ip", ["2130706434", "0x7f.1", "127.1", "017700000002", "", "localhost"])
def test_check_address_refuses_non_canonical_forms(ip: str) -> None:
    """Legacy numeric forms the kernel would read as 127.x are refused, not guessed at."""
    with pytest.raises(ssrf.BlockedAddressError):
        ssrf.check_address(ip, [])


def test_blocked_address_error_is_permanent_fetch_error() -> None:
    """A blocked address is a permanent fetch failure: retrying cannot mend it."""
    exc = ssrf.BlockedAddressError("nope", address="10.0.0.1")
    assert isinstance(exc, errors.PermanentFetchError)
    assert not isinstance(exc, errors.TransientError)


def test_allowed_network_lets_its_addresses_through() -> None:
    """127.0.0.1/32 allows 127.0.0.1 and its mapped form, and nothing beside them."""
    allowed = ssrf.parse_networks(["127.0.0.1/32"])
    ssrf.check_address("127.0.0.1", allowed)
    ssrf.check_address("::ffff:127.0.0.1", allowed)
    for ip in ("127.0.0.2", "::1", "::ffff:127.0.0.2", "10.0.0.1"):
        with pytest.raises(ssrf.BlockedAddressError):
            ssrf.check_address(ip, allowed)


def test_allowed_ipv6_network() -> None:
    """An allowed IPv6 range (a ULA) lets its addresses through and no others."""
    allowed = ssrf.parse_networks(["fd00:1234::/32"])
    ssrf.check_address("fd00:1234::5", allowed)
    with pytest.raises(ssrf.BlockedAddressError):
        ssrf.check_address("fd00:9999::5", allowed)


def test_allowed_nat64_prefix_still_checks_embedded_ipv4() -> None:
    """Allowing 64:ff9b::/96 opens public IPv4 through NAT64, never a private one."""
    allowed = ssrf.parse_networks(["64:ff9b::/96"])
    ssrf.check_address("64:ff9b::808:808", allowed)
    with pytest.raises(ssrf.BlockedAddressError, match="embeds"):
        ssrf.check_address("64:ff9b::a00:1", allowed)


def test_allowed_embedded_ipv4_does_not_open_the_tunnel_range() -> None:
    """Allowing 10.0.0.0/8 does not allow reaching it through 6to4 or NAT64 prefixes."""
    allowed = ssrf.parse_networks(["10.0.0.0/8"])
    for ip in ("2002:a00:1::1", "64:ff9b::a00:1"):
        with pytest.raises(ssrf.BlockedAddressError):
            ssrf.check_address(ip, allowed)


def test_parse_networks_accepts_cidrs_and_bare_addresses() -> None:
    """CIDRs and bare addresses parse; a mapped IPv6 network becomes its IPv4 network."""
    nets = ssrf.parse_networks(["10.0.0.0/8", " 192.168.1.7 ", "fd00::/8", "::ffff:127.0.0.0/104"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "127.0.0.0/8"]


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0.0/33", "not-a-network", "", "2130706434/32"])
def test_parse_networks_names_the_bad_entry(bad: str) -> None:
    """A bad entry raises ValueError whose message quotes it."""
    with pytest.raises(ValueError, match=repr(bad)[1:-1] or "''"):
        ssrf.parse_networks(["127.0.0.0/8", bad])


def _addr_info(host: str, port: int = 80) -> aiohttp.AddrInfoType:
    # AI_NUMERICHOST: the libc parse of the literal only, never a DNS query.
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]


@pytest.mark.parametrize("host", ["2130706434", "127.0.0.2", "::1", "::ffff:127.0.0.2"])
def test_socket_factory_refuses_before_any_socket_exists(host: str) -> None:
    """The factory raises BlockedConnectionError, an OSError carrying the refusal and address."""
    factory = ssrf.guarded_socket_factory(ssrf.parse_networks(["127.0.0.1/32"]))
    with pytest.raises(ssrf.BlockedConnectionError) as info:
        factory(_addr_info(host))
    assert isinstance(info.value, OSError)
    assert ssrf.blocked_cause(info.value) is info.value.blocked
    assert info.value.address == info.value.blocked.address


def test_socket_factory_refuses_non_ip_families() -> None:
    """A non-IP family (a Unix socket path) is refused rather than connected."""
    factory = ssrf.guarded_socket_factory([])
    with pytest.raises(ssrf.BlockedConnectionError):
        factory((socket.AF_UNIX, socket.SOCK_STREAM, 0, "", ("/run/docker.sock",)))


def test_socket_factory_returns_a_socket_for_allowed_address() -> None:
    """An allowed address gets a fresh unconnected socket of the family asked for."""
    factory = ssrf.guarded_socket_factory(ssrf.parse_networks(["127.0.0.1/32"]))
    with factory(_addr_info("127.0.0.1")) as sock:
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM


def test_blocked_cause_walks_chains_and_groups() -> None:
    """blocked_cause finds the refusal through os_error, __cause__, __context__ and groups."""
    blocked = ssrf.BlockedAddressError("no", address="10.0.0.1")
    conn = ssrf.BlockedConnectionError(blocked)
    try:
        try:
            raise conn
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert ssrf.blocked_cause(wrapped) is blocked
        assert ssrf.blocked_cause(ExceptionGroup("g", [ValueError(), wrapped])) is blocked
    assert ssrf.blocked_cause(ConnectionRefusedError()) is None


# --- real requests, loopback only ------------------------------------------------------------


@dataclass
class Origin:
    """A test origin listening on 127.0.0.1 and 127.0.0.2 (same port), recording each path hit."""

    port: int
    hits: list[str] = field(default_factory=list)
    local_addresses: list[str] = field(default_factory=list)
    ipv6: bool = False


def _ipv6_loopback_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """Serve on 127.0.0.1 and, on the same port, 127.0.0.2 (and [::1] if present)."""
    state = Origin(port=0)

    async def ok(request: web.Request) -> web.Response:
        state.hits.append(request.path)
        assert request.transport is not None
        state.local_addresses.append(request.transport.get_extra_info("sockname")[0])
        return web.Response(text="ok")

    async def redirect(request: web.Request) -> web.Response:
        state.hits.append(request.path)
        raise web.HTTPFound(f"http://127.0.0.2:{state.port}/secret")

    app = web.Application()
    app.router.add_get("/", ok)
    app.router.add_get("/secret", ok)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        first = web.TCPSite(runner, "127.0.0.1", 0)
        await first.start()
        state.port = runner.addresses[0][1]
        # Listening on the refused addresses too makes the guard, not ECONNREFUSED, the reason.
        await web.TCPSite(runner, "127.0.0.2", state.port).start()
        if _ipv6_loopback_usable():
            try:
                await web.TCPSite(runner, "::1", state.port).start()
                state.ipv6 = True
            except OSError:
                pass
        yield state
    finally:
        await runner.cleanup()


def _guarded_session(allowed: Sequence[str] = ("127.0.0.1/32",)) -> aiohttp.ClientSession:
    connector = ssrf.make_connector(ssrf.parse_networks(allowed), limit=10, limit_per_host=4)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))


async def _assert_refused(url: str, origin: Origin) -> None:
    before = list(origin.hits)
    async with _guarded_session() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(url)
    cause = ssrf.blocked_cause(info.value)
    assert cause is not None, info.value
    assert cause.error_code == "blocked_address"
    assert origin.hits == before


async def test_guarded_get_to_allowed_loopback_succeeds(origin: Origin) -> None:
    """With 127.0.0.1/32 allowed, a GET to the origin on 127.0.0.1 succeeds."""
    async with (
        _guarded_session() as session,
        session.get(f"http://127.0.0.1:{origin.port}/") as resp,
    ):
        assert resp.status == 200
        assert await resp.text() == "ok"
    assert origin.hits == ["/"]


async def test_unguarded_control_reaches_127_0_0_2(origin: Origin) -> None:
    """Control: without the guard 127.0.0.2 and its mapped form answer, so refusals are real."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.2:{origin.port}/") as resp:
            assert resp.status == 200
        async with session.get(f"http://[::ffff:127.0.0.2]:{origin.port}/") as resp:
            assert resp.status == 200
    assert origin.local_addresses == ["127.0.0.2", "127.0.0.2"]


async def test_guarded_get_to_127_0_0_2_is_refused(origin: Origin) -> None:
    """A GET to 127.0.0.2 is refused by the guard before connecting, recognisably so."""
    await _assert_refused(f"http://127.0.0.2:{origin.port}/", origin)


async def test_guarded_get_to_mapped_ipv6_is_refused(origin: Origin) -> None:
    """A GET to [::ffff:127.0.0.2] is unwrapped to 127.0.0.2 and refused."""
    await _assert_refused(f"http://[::ffff:127.0.0.2]:{origin.port}/", origin)


async def test_guarded_get_to_ipv6_loopback_is_refused(origin: Origin) -> None:
    """A GET to [::1] is refused, [::1] not being in the allowed networks."""
    if not origin.ipv6:
        pytest.skip("no IPv6 loopback here")
    await _assert_refused(f"http://[::1]:{origin.port}/", origin)


async def test_guarded_get_to_numeric_ipv4_is_refused(origin: Origin) -> None:
    """http://2130706434/ (127.0.0.2) never connects: aiohttp or the guard refuses it."""
    async with _guarded_session() as session:
        # aiohttp >= 3.14 rejects the form itself; older ones resolve it and the guard refuses.
        with pytest.raises((aiohttp.InvalidUrlClientError, aiohttp.ClientConnectorError)) as info:
            await session.get(f"http://2130706434:{origin.port}/")
    if isinstance(info.value, aiohttp.ClientConnectorError):
        assert ssrf.blocked_cause(info.value) is not None
    assert origin.hits == []


async def test_redirect_to_refused_address_is_refused_at_the_hop(origin: Origin) -> None:
    """A redirect from the allowed origin to 127.0.0.2 is refused at that hop."""
    async with _guarded_session() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(f"http://127.0.0.1:{origin.port}/redirect")
    assert ssrf.blocked_cause(info.value) is not None
    assert origin.hits == ["/redirect"]


class _StaticResolver(AbstractResolver):
    """Answers every name with fixed addresses, standing in for a rebinding DNS server."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.hosts = hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": h,
                "port": port,
                "family": socket.AF_INET6 if ":" in h else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for h in self.hosts
        ]

    async def close(self) -> None:
        pass


def _resolving_session(hosts: Sequence[str]) -> aiohttp.ClientSession:
    factory = ssrf.guarded_socket_factory(ssrf.parse_networks(["127.0.0.1/32"]))
    connector = aiohttp.TCPConnector(
        resolver=_StaticResolver(hosts), use_dns_cache=False, socket_factory=factory
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))


async def test_name_resolving_to_refused_addresses_is_refused(origin: Origin) -> None:
    """A name whose every address is refused fails, the refusal recoverable, with no connection."""
    # Mixed families make aiohappyeyeballs race several refusals in one call; the cause must
    # survive its merging of their errors.
    async with _resolving_session(["127.0.0.2", "::1", "127.0.0.3", "fe80::1"]) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(f"http://media.example:{origin.port}/")
    assert ssrf.blocked_cause(info.value) is not None
    assert origin.hits == []


async def test_name_with_one_allowed_address_connects_only_there(origin: Origin) -> None:
    """When a name resolves to a refused and an allowed address, only the allowed one is used."""
    async with (
        _resolving_session(["127.0.0.2", "127.0.0.1"]) as session,
        session.get(f"http://media.example:{origin.port}/") as resp,
    ):
        assert resp.status == 200
    assert origin.local_addresses == ["127.0.0.1"]

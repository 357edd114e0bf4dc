"""The egress guard's rules, as pure functions: how a worker address is taken apart, which IPs
it may lead to, and that the connection-time check refuses what registration would."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from hepai_server.errors import AddressRefused, InvalidRequest
from hepai_server.security.egress import (
    EgressPolicy,
    EgressRefused,
    parse_address,
    parse_base_url,
)

DEFAULT = EgressPolicy.from_strings(
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
)
NARROW = EgressPolicy.from_strings(["10.12.0.0/16"])


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("http://127.0.0.1:42601/apiv2", "http://127.0.0.1:42601/apiv2"),
        ("http://2130706433:8000/", "http://127.0.0.1:8000"),
        ("http://0x7f000001:8000", "http://127.0.0.1:8000"),
        ("http://0177.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.1:8000", "http://127.0.0.1:8000"),
        ("http://0x7f.1:8000", "http://127.0.0.1:8000"),
        ("http://[::ffff:127.0.0.1]:8000", "http://127.0.0.1:8000"),
        ("http://[::ffff:7f00:1]:8000/apiv2/", "http://127.0.0.1:8000/apiv2"),
        ("http://[::7f00:1]:8000", "http://127.0.0.1:8000"),
        ("HTTP://LocalHost.:8000//apiv2//", "http://localhost:8000/apiv2"),
        ("https://gpu-3.example.org/apiv2", "https://gpu-3.example.org/apiv2"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_every_spelling_of_an_address_comes_out_canonical(spelling: str, canonical: str) -> None:
    assert str(parse_address(spelling)) == canonical


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("http://user:pass@10.0.0.1:80/apiv2", "user name or password"),
        ("http://@10.0.0.1/", "user name or password"),
        ("http://10.0.0.1/apiv2?x=1", "query"),
        ("http://10.0.0.1/apiv2?", "query"),
        ("http://10.0.0.1/apiv2#x", "fragment"),
        ("ftp://10.0.0.1/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://10.0.0.1/a/../b", ". or .."),
        ("http://10.0.0.1/a%2fb", "encoded"),
        ("http://10.0.0.1/%2e%2e/b", "encoded"),
        ("http://evil.example\\@10.0.0.1/", "backslashes"),
        ("http://10.0.0.1 /", "spaces"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://1.2.3.4.5/", "IPv4"),
        ("http://256.0.0.1/", "IPv4"),
        ("http://0x1ffffffff/", "IPv4"),
        ("http://10.0.0.1:99999/", "not a valid URL"),
        ("http:///apiv2", "host"),
        (123, "http(s) URL"),
    ],
)
def test_addresses_a_worker_may_not_register_are_refused_naming_the_rule(
    address: object, rule: str
) -> None:
    with pytest.raises(InvalidRequest, match="worker_address") as caught:
        parse_address(address)
    assert rule in caught.value.message
    assert caught.value.param == "network_info.worker_address"


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",  # cloud metadata
        "fe80::1",
        "0.0.0.0",
        "0.1.2.3",
        "::",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
        "240.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "2002:a9fe:a9fe::",  # 6to4 of it
    ],
)
def test_addresses_never_reachable_are_refused_even_for_admins(ip: str) -> None:
    address = ipaddress.ip_address(ip)
    assert DEFAULT.refusal(address, trusted=True) is not None
    assert DEFAULT.refusal(address, trusted=False) is not None


def test_the_allow_list_binds_users_and_not_admins() -> None:
    loopback, gpu, public = (ipaddress.ip_address(a) for a in ("127.0.0.1", "10.12.3.4", "8.8.8.8"))
    assert DEFAULT.refusal(loopback, trusted=False) is None
    assert "outside the networks" in (DEFAULT.refusal(public, trusted=False) or "")
    assert NARROW.refusal(gpu, trusted=False) is None
    assert NARROW.refusal(loopback, trusted=False) is not None
    assert NARROW.refusal(loopback, trusted=True) is None
    # An IPv6 spelling of a refused IPv4 address is refused as that address.
    assert NARROW.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), trusted=False) is not None
    # A translated address is allowed only when the translated address itself is.
    assert DEFAULT.refusal(ipaddress.ip_address("64:ff9b::7f00:1"), trusted=False) is not None


def test_checking_a_name_judges_every_address_it_resolves_to() -> None:
    with pytest.raises(AddressRefused, match="outside the networks"):
        NARROW.check(parse_address("http://localhost:8000/apiv2"), trusted=False)
    NARROW.check(parse_address("http://localhost:8000/apiv2"), trusted=True)
    with pytest.raises(AddressRefused, match="does not resolve"):
        NARROW.check(parse_address("http://no-such-host.invalid/"), trusted=True)


def test_the_connection_time_check_refuses_what_registration_would() -> None:
    make = NARROW.socket_factory(trusted=False)
    with pytest.raises(EgressRefused, match="outside the networks"):
        make((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(EgressRefused, match="link-local"):
        NARROW.socket_factory(trusted=True)(
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:169.254.169.254", 80, 0, 0))
        )
    sock = make((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.12.0.9", 80)))
    sock.close()


def test_call_urls_are_the_protocols_paths_with_the_platforms_own_query() -> None:
    address = parse_address("http://10.0.0.1:42601/apiv2")
    url = address.url("/worker_unified_gate/", {"model": "a/b?c#d", "function": "x&y=z"})
    assert (
        url
        == "http://10.0.0.1:42601/apiv2/worker_unified_gate/?model=a%2Fb%3Fc%23d&function=x%26y%3Dz"
    )
    with pytest.raises(ValueError):
        address.url("worker_unified_gate")


def test_provider_base_urls_keep_their_path_and_lose_nothing_else() -> None:
    assert parse_base_url("https://api.openai.com/v1/") == "https://api.openai.com/v1"
    assert parse_base_url("http://10.0.0.5:8000/v1") == "http://10.0.0.5:8000/v1"
    for refused in (
        "https://key:secret@api.example/v1",
        "https://api.example/v1?x=1",
        "gopher://x/",
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse_base_url(refused)
        assert caught.value.param == "base_url"

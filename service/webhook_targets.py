"""Where a webhook may go: public http(s) addresses only (no server-side request forgery).

A job's webhook URL is checked when the job is submitted and again at every delivery, since DNS
may change in between. A URL is refused when its scheme is not http(s), its host is a cloud
metadata name, or any address its host resolves to is loopback, private, link-local, multicast,
reserved, unspecified or otherwise not globally routable (IPv4 and IPv6; an IPv6 address that
embeds an IPv4 one, as IPv4-mapped, 6to4, Teredo and NAT64 addresses do, is judged by the IPv4
address too). Numeric hosts in every spelling the resolver accepts (`2130706433`, `0177.0.0.1`,
`0x7f.1`) are read as the address they spell. Networks in DFKD_WEBHOOK_ALLOWED_NETWORKS are
allowed whatever their class (an operator's internal receiver).

A delivery connects to an address checked here, never to the name again (`pinned_request`), so
a name that changes between the check and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
# names that answer with a cloud instance's credentials; refused whatever they resolve to
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.platformequinix.com",
        "metadata.tencentyun.com",
    }
)
RESOLVE_TIMEOUT_SECONDS = 3.0


class WebhookTargetRefused(Exception):
    """The URL may not receive webhooks; the message says why and what to do."""


class HostDoesNotResolve(Exception):
    """The host has no address now (offline or split-horizon DNS, a typo)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses it may be delivered to, in the resolver's order."""

    url: str
    scheme: str
    host: str  # as written in the URL, lower case, IPv6 without brackets
    port: int
    addresses: tuple[IPAddress, ...]


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the seam tests replace to simulate DNS). Bounded in
    time: a resolver that hangs counts as no answer (its thread is left to end on its own; a
    fresh thread each time, so no pool crosses a worker's fork)."""
    answer: list[list[IPAddress] | Exception] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.append([ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos])
        except (OSError, UnicodeError, ValueError) as error:
            answer.append(error)

    thread = threading.Thread(target=lookup, name="dfkd-resolve", daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_SECONDS)
    if not answer:
        raise HostDoesNotResolve(f"{host} did not resolve within {RESOLVE_TIMEOUT_SECONDS:g}s")
    if isinstance(answer[0], Exception):
        raise HostDoesNotResolve(f"{host} does not resolve ({answer[0]})")
    if not answer[0]:
        raise HostDoesNotResolve(f"{host} has no address")
    return list(dict.fromkeys(answer[0]))


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host spells, in any form inet_aton reads (1 to 4 parts, each
    decimal, octal with a leading 0, or hex with 0x), or an IPv6 literal; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if parts and parts[-1] == "":  # a trailing dot is allowed
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    try:
        numbers = [_ipv4_part(part) for part in parts]
    except ValueError:
        return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return int(lowered[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    if not part.isdigit():
        raise ValueError(part)
    return int(part)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(address: IPAddress) -> str | None:
    """Why `address` may not receive webhooks (`a loopback address`, `a private address`, ...),
    or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_class(embedded)
            if reason is not None:
                return f"an IPv6 address holding {embedded}, {reason}"
    for reason, flagged in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    ):
        if flagged:
            return f"a {reason} address"
    return None


def _allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in allowed
    )


def _refuse_address(address: IPAddress, host: str, allowed: Sequence[IPNetwork]) -> None:
    reason = address_class(address)
    if reason is None or _allowed(address, allowed):
        return
    spelled = "" if host == str(address) else f"{host} resolves to {address}: "
    raise WebhookTargetRefused(
        f"{spelled}{reason}; webhooks go to public addresses only (an operator can "
        "allow an internal network with DFKD_WEBHOOK_ALLOWED_NETWORKS)"
    )


def _parts(url: str) -> tuple[str, str, int]:
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as error:
        raise WebhookTargetRefused(f"not a URL a webhook can be sent to ({error})") from None
    scheme = split.scheme.lower()
    if scheme not in SCHEMES:
        raise WebhookTargetRefused(
            f"scheme {scheme or '(none)'!r}: webhooks are sent over http or https only"
        )
    host = (split.hostname or "").rstrip(".").lower()
    if not host:
        raise WebhookTargetRefused("the URL names no host")
    if host in METADATA_NAMES:
        raise WebhookTargetRefused(
            f"{host} is a cloud metadata service: webhooks go to public receivers only"
        )
    return scheme, host, port or (443 if scheme == "https" else 80)


def check_target(url: str, allowed: Sequence[IPNetwork] = (), resolve_names: bool = True) -> Target:
    """The URL's checked delivery target. Raises WebhookTargetRefused when it may not receive
    webhooks, HostDoesNotResolve when its host has no address now (when `resolve_names`)."""
    scheme, host, port = _parts(url)
    numeric = numeric_host(host)
    if numeric is not None:
        addresses = [numeric]
    elif resolve_names:
        addresses = resolve_host(host, port)
    else:
        addresses = []
    for address in addresses:  # every one: a client may connect to any of them
        _refuse_address(address, host, allowed)
    return Target(url, scheme, host, port, tuple(addresses))


def check_at_submission(url: str, allowed: Sequence[IPNetwork]) -> None:
    """At POST: refuse what is refused now; a name that does not resolve is accepted (offline
    and split-horizon DNS are common, and every delivery is checked anyway)."""
    try:
        check_target(url, allowed)
    except HostDoesNotResolve:
        check_target(url, allowed, resolve_names=False)


def pinned_request(target: Target) -> tuple[str, dict[str, str], dict[str, str]]:
    """URL, headers and httpx extensions that send a request to the target's first checked
    address while naming its host: the Host header, and for https the TLS server name (SNI and
    certificate check) are the URL's host, so no second lookup takes place."""
    address = target.addresses[0]
    split = urlsplit(target.url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    default_port = 443 if target.scheme == "https" else 80
    netloc = literal if target.port == default_port else f"{literal}:{target.port}"
    url = split._replace(scheme=target.scheme, netloc=netloc).geturl()
    host_header = split.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, {"host": host_header}, extensions

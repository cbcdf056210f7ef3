"""Webhook targets (no server-side request forgery): refused at POST /v1/jobs and again at every
delivery, for each address class, spelling and scheme; DNS is simulated at the resolver seam
(service.webhook_targets.resolve_host), everything else is real (the API, SQLite, HTTP)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from ipaddress import ip_network

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from service.settings import Settings
from service.webhook_targets import (
    HostDoesNotResolve,
    IPAddress,
    Target,
    WebhookTargetRefused,
    check_at_submission,
    numeric_host,
    pinned_request,
)
from tests.service.test_webhooks import SECRET, Receiver

# (URL, the words the refusal must name): one row per address class and spelling
REFUSED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://2130706433/", "loopback"),  # decimal
    ("http://0177.0.0.1/", "loopback"),  # octal
    ("http://0x7f.0.0.1/", "loopback"),  # hex
    ("http://0x7f.1/", "loopback"),  # two parts
    ("http://[::1]:8080/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "holding 127.0.0.1, a loopback"),  # IPv4-mapped IPv6
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd12:3456::1]/", "private"),  # unique local
    ("http://[::ffff:10.0.0.1]/", "holding 10.0.0.1, a private"),
    ("http://[2002:a00:1::]/", "holding 10.0.0.1, a private"),  # 6to4
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # AWS, GCP, Azure metadata
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00:ec2::254]/", "private"),  # AWS metadata over IPv6
    ("http://[64:ff9b::a9fe:a9fe]/", "holding 169.254.169.254, a link-local"),  # NAT64
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://[4000::1]/", "reserved"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://100.64.0.1/", "not globally routable"),  # carrier-grade NAT (Alibaba's metadata)
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://metadata.goog/", "cloud metadata"),
    ("http://instance-data.ec2.internal./", "cloud metadata"),
    ("ftp://example.com/hook", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("gopher://example.com:70/", "http or https"),
]


def fake_dns(answers: dict[str, list[str]]) -> Callable[[str, int], list[IPAddress]]:
    """A resolver answering from `answers` (changeable while the test runs); other names do not
    resolve. Records every lookup in `.lookups`."""
    lookups: list[str] = []

    def resolve(host: str, _port: int) -> list[IPAddress]:
        lookups.append(host)
        if host not in answers:
            raise HostDoesNotResolve(f"{host} does not resolve")
        return [ipaddress.ip_address(a) for a in answers[host]]

    resolve.lookups = lookups  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(("url", "named"), REFUSED)
def test_each_address_class_spelling_and_scheme_is_refused(url: str, named: str) -> None:
    with pytest.raises(WebhookTargetRefused, match=named):
        check_at_submission(url, [])


@pytest.mark.parametrize(
    ("answers", "named"),
    [
        (["10.1.2.3"], "10.1.2.3: a private"),
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1: a loopback"),  # every address counts
        (["2606:4700::1", "fe80::2"], "fe80::2: a link-local"),
    ],
)
def test_a_name_is_judged_by_every_address_it_resolves_to(
    monkeypatch: pytest.MonkeyPatch, answers: list[str], named: str
) -> None:
    monkeypatch.setattr(
        "service.webhook_targets.resolve_host", fake_dns({"hooks.example.com": answers})
    )
    with pytest.raises(WebhookTargetRefused, match=f"hooks.example.com resolves to {named}"):
        check_at_submission("https://hooks.example.com/dfkd", [])


def test_public_addresses_unresolvable_names_and_allowed_networks_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "service.webhook_targets.resolve_host", fake_dns({"hooks.example.com": ["93.184.215.14"]})
    )
    check_at_submission("https://hooks.example.com/dfkd", [])
    check_at_submission("http://8.8.8.8:8080/", [])
    check_at_submission("http://[2606:4700:4700::1111]/", [])
    check_at_submission("https://not-yet.example.net/", [])  # no address now: checked at delivery
    allowed = [ip_network("10.20.0.0/16"), ip_network("127.0.0.0/8")]
    check_at_submission("http://10.20.3.4:9000/hook", allowed)
    check_at_submission("http://[::ffff:10.20.3.4]/hook", allowed)
    check_at_submission("http://2130706433/", allowed)
    with pytest.raises(WebhookTargetRefused, match="private"):
        check_at_submission("http://10.21.0.1/", allowed)
    with pytest.raises(WebhookTargetRefused, match="cloud metadata"):  # names stay refused
        check_at_submission("http://metadata.google.internal/", [ip_network("0.0.0.0/0")])


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7F.0x0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.258", "10.0.1.2"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("256.1.1.1", None),
        ("1.2.3.4.5", None),
        ("08.0.0.1", None),  # 8 is not an octal digit
        ("example.com", None),
    ],
)
def test_numeric_hosts_are_read_as_the_resolver_reads_them(host: str, address: str | None) -> None:
    read = numeric_host(host)
    assert (None if read is None else str(read)) == address


def test_a_delivery_connects_to_the_checked_address_and_names_the_host() -> None:
    target = Target(
        "https://user@Hooks.Example.com:8443/in?x=1",
        "https",
        "hooks.example.com",
        8443,
        (ipaddress.ip_address("2606:4700::1"), ipaddress.ip_address("93.184.215.14")),
    )
    url, headers, extensions = pinned_request(target)
    assert url == "https://[2606:4700::1]:8443/in?x=1"
    assert headers == {"host": "Hooks.Example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}  # TLS verifies the name
    plain = Target("http://hooks.example.com/in", "http", "hooks.example.com", 80, target.addresses)
    assert pinned_request(plain) == (
        "http://[2606:4700::1]/in",
        {"host": "hooks.example.com"},
        {},
    )


# --- through the API


def job_body(teacher_id: str, url: str) -> dict[str, object]:
    return {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 2,
        "webhook": {"url": url, "secret": SECRET},
    }


def test_post_refuses_each_class_with_422_naming_why(
    client: TestClient, teacher_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "service.webhook_targets.resolve_host", fake_dns({"rebind.example.com": ["10.9.8.7"]})
    )
    http_rows = [row for row in REFUSED if row[0].startswith("http")]
    for url, named in [*http_rows, ("https://rebind.example.com/", "10.9.8.7: a private")]:
        response = client.post("/v1/jobs", json=job_body(teacher_id, url))
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "webhook_url_refused", (url, error)
        assert error["message"].startswith("webhook.url: ") and named in error["message"], error
        assert "DFKD_WEBHOOK_ALLOWED_NETWORKS" in error["message"] or "metadata" in named
    for url in ("ftp://example.com/", "file:///etc/passwd"):  # not even a URL of the schema
        assert client.post("/v1/jobs", json=job_body(teacher_id, url)).status_code == 422
    assert client.get("/v1/jobs").json()["items"] == []  # nothing stored


def test_post_accepts_a_name_that_does_not_resolve(client: TestClient, teacher_id: str) -> None:
    # .invalid never resolves (RFC 6761): accepted, every delivery is checked anyway
    url = "https://hooks.dfkd-test.invalid/in"
    response = client.post("/v1/jobs", json=job_body(teacher_id, url))
    assert response.status_code == 202, response.text


def events(client: TestClient, job_id: str) -> list[str]:
    items = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    return [e["message"] for e in items if e["kind"] == "webhook"]


def test_a_delivery_is_refused_when_the_name_now_resolves_to_a_private_address(
    client: TestClient, teacher_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(failures=0)  # on loopback, where the name will point
    dns = {"hooks.customer.example": ["93.184.215.14"]}  # public when the job is submitted
    monkeypatch.setattr("service.webhook_targets.resolve_host", fake_dns(dns))
    port = receiver.server.server_address[1]
    try:
        response = client.post(
            "/v1/jobs", json=job_body(teacher_id, f"http://hooks.customer.example:{port}/in")
        )
        assert response.status_code == 202, response.text
        dns["hooks.customer.example"] = ["127.0.0.1"]  # rebound before the delivery
        job_id = response.json()["id"]
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    finally:
        receiver.server.shutdown()
    assert receiver.received == []
    attempts = events(client, job_id)
    assert len(attempts) == 1, attempts  # a refusal is not retried
    assert (
        "refused, not sent: hooks.customer.example resolves to 127.0.0.1: a loopback"
        in (attempts[0])
    )


def test_a_delivery_goes_to_the_address_checked_with_the_name_as_host(
    client: TestClient, settings: Settings, teacher_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.webhook_allowed_networks = [ip_network("127.0.0.0/8")]  # the app holds this object
    receiver = Receiver(failures=0)
    resolve = fake_dns({"hooks.customer.test": ["127.0.0.1"]})  # unknown to the real DNS
    monkeypatch.setattr("service.webhook_targets.resolve_host", resolve)
    port = receiver.server.server_address[1]
    try:
        url = f"http://hooks.customer.test:{port}/in"
        job_id = client.post("/v1/jobs", json=job_body(teacher_id, url)).json()["id"]
        client.post(f"/v1/jobs/{job_id}/cancel")
    finally:
        receiver.server.shutdown()
    assert len(receiver.received) == 1, events(client, job_id)
    headers, body = receiver.received[0]
    assert headers["host"] == f"hooks.customer.test:{port}"
    assert Webhook(SECRET).verify(body, headers)["type"] == "job.cancelled"
    assert resolve.lookups == ["hooks.customer.test"] * 2  # at POST, at delivery; no other


def test_a_redirect_is_not_followed(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    settings.webhook_allowed_networks = [ip_network("127.0.0.0/8")]
    target = Receiver(failures=0)
    redirecting = Receiver(failures=0, answer=307, headers={"location": target.url})
    try:
        job_id = client.post("/v1/jobs", json=job_body(teacher_id, redirecting.url)).json()["id"]
        client.post(f"/v1/jobs/{job_id}/cancel")
    finally:
        redirecting.server.shutdown()
        target.server.shutdown()
    assert len(redirecting.received) == 1 and target.received == []
    assert events(client, job_id) == [
        f"attempt 1 to {redirecting.url}: HTTP 307: redirects are not followed"
    ]

"""Fault injection, rate limiting and HTTP plumbing of the sandbox servers."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandbox import FaultConfig, FaultInjector, RateLimiter, Sandbox

pytestmark = pytest.mark.e2e  # the sandbox served over HTTP

KANTATA = {"Authorization": "Bearer sandbox-kantata-token"}
NOKO = {"X-NokoToken": "sandbox-noko-token", "User-Agent": "kantata-sync-tests/1.0"}


def admin_url(base: str) -> str:
    root = base.rsplit("/api/v1", 1)[0] if "/api/v1" in base else base.rsplit("/v2", 1)[0]
    return root + "/_sandbox"


def statuses(client: httpx.Client, path: str, count: int) -> list[int]:
    return [client.get(path).status_code for _ in range(count)]


def test_rate_limiter_slows_a_burst_then_refuses() -> None:
    """At 2/s with burst 5: one request passes, five wait up to 2.5 s, the seventh is refused."""
    limiter = RateLimiter(2.0, burst=5)
    waits = [limiter.acquire("client", 100.0) for _ in range(7)]
    assert waits == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, None]
    assert limiter.acquire("other", 100.0) == 0.0
    assert limiter.acquire("client", 103.0) == 0.0


def test_noko_rate_limit_answers_empty_429_beyond_the_burst() -> None:
    """Concurrent requests over the limit: the burst is slowed down, the rest get EMPTY 429s."""
    with Sandbox() as box:
        clients = [httpx.Client(base_url=box.noko_url, headers=NOKO) for _ in range(10)]
        for client in clients:  # connect first, so the timed requests arrive together
            assert client.get("/current_user").status_code == 200
        box.noko.set_rate_limit(2.5, burst=3)
        box.noko.reset_stats()
        barrier = threading.Barrier(len(clients))

        def call(client: httpx.Client) -> httpx.Response:
            barrier.wait()
            return client.get("/projects")

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            responses = list(pool.map(call, clients))
        elapsed = time.monotonic() - started
        for client in clients:
            client.close()
        ok = [r for r in responses if r.status_code == 200]
        limited = [r for r in responses if r.status_code == 429]
        assert len(ok) == 4
        assert len(limited) == 6
        assert all(r.content == b"" and r.headers["content-length"] == "0" for r in limited)
        assert elapsed >= 1.1  # the third slowed request waited 3 x 400 ms
        stats = box.noko.state()["stats"]
        assert stats["count_429"] == 6
        assert stats["rate_limited"] == 6
        admin = httpx.get(admin_url(box.noko_url) + "/state")
        assert admin.status_code == 200, "admin paths are never rate limited"


def test_kantata_429_faults_have_a_json_body_and_retry_after_on_about_half(box: Sandbox) -> None:
    """Kantata 429s carry its JSON error; `Retry-After: 1` comes on roughly half of them."""
    box.kantata.set_faults(FaultConfig(seed=3, rate_429=1.0))
    with httpx.Client(base_url=box.kantata_url, headers=KANTATA) as client:
        responses = [client.get("/invoices") for _ in range(40)]
    assert {r.status_code for r in responses} == {429}
    assert responses[0].json()["errors"][0]["type"] == "system"
    with_retry = [r for r in responses if r.headers.get("retry-after") == "1"]
    assert 10 <= len(with_retry) <= 30
    box.kantata.set_faults(FaultConfig(seed=3, rate_429=1.0, retry_after=False))
    with httpx.Client(base_url=box.kantata_url, headers=KANTATA) as client:
        assert all("retry-after" not in client.get("/invoices").headers for _ in range(10))


def test_noko_429_faults_are_empty(box: Sandbox) -> None:
    """Injected Noko 429s have an empty body, like Noko's own."""
    box.noko.set_faults(FaultConfig(rate_429=1.0))
    with httpx.Client(base_url=box.noko_url, headers=NOKO) as client:
        response = client.get("/projects")
    assert response.status_code == 429
    assert response.content == b""


def test_5xx_faults_mix_500_502_html_and_503_json(box: Sandbox) -> None:
    """5xx faults are 500, 502 (an HTML proxy page) and 503 (a JSON error)."""
    box.kantata.set_faults(FaultConfig(seed=1, rate_5xx=1.0))
    with httpx.Client(base_url=box.kantata_url, headers=KANTATA) as client:
        responses = [client.get("/invoices") for _ in range(30)]
    by_status = {r.status_code: r for r in responses}
    assert set(by_status) == {500, 502, 503}
    assert by_status[502].headers["content-type"].startswith("text/html")
    assert "Bad Gateway" in by_status[502].text
    assert by_status[503].json()["errors"][0]["message"] == "Service is unavailable"


def test_faults_are_reproducible_with_a_seed() -> None:
    """The same seed and request sequence give the same faults; another seed differs."""

    def run(seed: int) -> list[int]:
        config = FaultConfig(seed=seed, rate_429=0.2, rate_5xx=0.2)
        with (
            Sandbox(noko_faults=config) as box,
            httpx.Client(base_url=box.noko_url, headers=NOKO) as client,
        ):
            return statuses(client, "/projects", 40)

    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first != other
    assert {200, 429} <= set(first)
    injector = FaultInjector(FaultConfig(seed=5, rate_429=0.5))
    decisions = [injector.decide("/x", creating=False).status for _ in range(20)]
    injector.set_config(FaultConfig(seed=5, rate_429=0.5))
    assert [injector.decide("/x", creating=False).status for _ in range(20)] == decisions


def test_drop_after_commit_applies_the_write_then_closes_the_socket(box: Sandbox) -> None:
    """A dropped create gets no response at all, yet the object exists afterwards."""
    box.noko.set_faults(FaultConfig(drop_after_commit_rate=1.0))
    project_id = box.noko.add_project("Acme")
    with httpx.Client(base_url=box.noko_url, headers=NOKO) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(
                "/expenses", json={"date": "2024-01-01", "project_id": project_id, "price": 5}
            )
        assert [e["price"] for e in box.noko.state()["expenses"]] == [5]
        assert client.get("/projects").status_code == 200, "reads are never dropped"
        refused = client.post("/expenses", json={"project_id": project_id})
        assert refused.status_code == 400, "a refused write is answered, not dropped"
    write = box.noko.state()["stats"]["writes"][0]
    assert (write["dropped"], write["fault"]) == (True, "drop")

    invoice_id = box.kantata.add_invoice(lines=[{"kind": "additional_item", "amount_in_cents": 1}])
    box.kantata.set_faults(FaultConfig(drop_after_commit_rate=1.0))
    ref = {"service_name": "noko", "service_model": "Invoice", "service_model_ref": "9"}
    with (
        httpx.Client(base_url=box.kantata_url, headers=KANTATA) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.put(f"/invoices/{invoice_id}", json={"invoice": {"external_reference": ref}})
    assert box.kantata.external_references(invoice_id)[0]["service_model_ref"] == "9"


def test_timeouts_and_latency_delay_answers(box: Sandbox) -> None:
    """`timeout_rate` makes the server sleep past the client timeout; latency delays every call."""
    box.noko.set_faults(FaultConfig(timeout_rate=1.0, timeout_sleep_s=0.5))
    with (
        httpx.Client(base_url=box.noko_url, headers=NOKO, timeout=0.1) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/projects")
    box.noko.set_faults(FaultConfig(latency_ms=80))
    with httpx.Client(base_url=box.noko_url, headers=NOKO) as client:
        started = time.monotonic()
        assert client.get("/projects").status_code == 200
        assert time.monotonic() - started >= 0.08


def test_only_paths_limits_faults_to_matching_requests(box: Sandbox) -> None:
    """With `only_paths` (relative or full paths), requests to other paths are never faulted."""
    box.noko.set_faults(FaultConfig(rate_429=1.0, only_paths=("/invoices",)))
    with httpx.Client(base_url=box.noko_url, headers=NOKO) as client:
        assert client.get("/projects").status_code == 200
        assert client.get("/invoices").status_code == 429
    box.noko.set_faults(FaultConfig(rate_429=1.0, only_paths=("/v2/expenses",)))
    with httpx.Client(base_url=box.noko_url, headers=NOKO) as client:
        assert client.get("/invoices").status_code == 200
        assert client.get("/expenses").status_code == 429


def test_faults_are_replaced_at_run_time_over_http(box: Sandbox) -> None:
    """`POST /_sandbox/faults` swaps the config; admin paths are never faulted; stats reset."""
    admin = admin_url(box.kantata_url)
    config = {"seed": 2, "rate_5xx": 1.0, "only_paths": ["/invoices"]}
    assert httpx.post(admin + "/faults", json=config).json()["rate_5xx"] == 1.0
    assert box.kantata.injector.config.only_paths == ("/invoices",)
    with httpx.Client(base_url=box.kantata_url, headers=KANTATA) as client:
        assert client.get("/invoices").status_code >= 500
        assert httpx.get(admin + "/state").status_code == 200
        assert httpx.post(admin + "/faults", json={}).status_code == 200
        assert client.get("/invoices").status_code == 200
    stats = httpx.get(admin + "/stats").json()
    assert stats["requests"] == {"GET /invoices": 2}
    assert stats["faults"]
    assert httpx.post(admin + "/reset_stats").status_code == 204
    assert httpx.get(admin + "/stats").json()["total"] == 0
    assert httpx.post(admin + "/faults", json={"rate_429": 2}).status_code == 400
    assert httpx.post(admin + "/faults", json={"bogus": 1}).status_code == 400


def test_fault_config_round_trips_through_json() -> None:
    """`FaultConfig.from_json(to_json())` is the same config; bad values are ValueErrors."""
    config = FaultConfig(seed=9, rate_429=0.1, latency_ms=5, only_paths=("/v2/invoices",))
    assert FaultConfig.from_json(config.to_json()) == config
    assert FaultConfig.from_json(None) == FaultConfig()
    with pytest.raises(ValueError, match="retry_after"):
        FaultConfig.from_json({"retry_after": "yes"})


def test_keep_alive_responses_have_exact_content_length(box: Sandbox) -> None:
    """Two requests on one raw connection both get complete answers with Content-Length."""
    host, port = box.noko_url.split("//")[1].split("/")[0].split(":")
    request = (
        f"GET /v2/projects HTTP/1.1\r\nHost: {host}\r\nUser-Agent: raw/1\r\n"
        "X-NokoToken: sandbox-noko-token\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        reader = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(request)
            status = reader.readline()
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = reader.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 200")
            assert body == b"[]"
            assert "connection" not in headers


def test_serve_forever_returns_after_stop() -> None:
    """`serve_forever` blocks while serving and returns once `stop()` is called."""
    box = Sandbox()
    thread = threading.Thread(target=box.serve_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not box.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert httpx.get(admin_url(box.noko_url) + "/faults").status_code == 200
    box.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(admin_url(box.noko_url) + "/faults", timeout=1)

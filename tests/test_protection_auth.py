"""API keys: every route but health, metrics and docs refuses a missing or wrong key; keys are
compared in constant time, kept and logged only as digests/fingerprints, and rotate from a file.
Also: security headers on every response, CORS off unless `CORS_ORIGINS` is set.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import httpx
import openai
import pytest

from service.app import create_app
from service.protection import auth
from service.protection.auth import ApiKeys, FailedAuthLimiter, fingerprint
from tests.helpers.app import make_settings, running_app
from tests.helpers.server import start_service

KEY, OTHER_KEY = "sk-auth-test-1", "sk-auth-test-2"
QUESTION = [{"role": "user", "content": "hi"}]
OPEN_PATHS = {"/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/", "/playground"}
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer sk-wrong"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": KEY},
    {"Authorization": "Bearer "},
    {"X-API-Key": KEY},
]


# Stored objects of the Responses API: unknown ids, found by neither key (404 once past auth).
_OBJECT_IDS = {
    "{response_id}": "resp_unknown",
    "{conversation_id}": "conv_unknown",
    "{item_id}": "msg_unknown",
}
_BODIES: dict[str, dict[str, object]] = {
    "/v1/chat/completions": {"model": "echo", "messages": QUESTION},
    "/v1/responses": {"model": "echo", "input": "hi"},
    "/v1/conversations": {},
    "/v1/conversations/conv_unknown": {"metadata": {}},
    "/v1/conversations/conv_unknown/items": {"items": [{"role": "user", "content": "hi"}]},
}


def _concrete(path: str) -> str:
    path = path.replace("{model_id:path}", "echo").replace("{model_id}", "echo")
    for placeholder, value in _OBJECT_IDS.items():
        path = path.replace(placeholder, value)
    return path


async def test_every_route_except_health_metrics_and_docs_refuses_a_missing_or_wrong_key() -> None:
    # (Failed authentications are not limited here: this client sends hundreds of wrong keys.)
    app = create_app(make_settings(api_keys=f"{KEY},{OTHER_KEY}", auth_failure_limit=""))
    # Every operation of the schema (a route added later is covered without editing this test).
    protected = [
        (method.upper(), _concrete(path))
        for path, operations in app.openapi()["paths"].items()
        if path not in OPEN_PATHS
        for method in sorted(operations)
    ]
    assert {path for _, path in protected} >= {"/v1/chat/completions", "/v1/models", "/v1/models/echo"}
    async with running_app(app) as client:
        for method, path in protected:
            body = _BODIES[path] if method == "POST" else None
            for headers in BAD_CREDENTIALS:
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                error = response.json()["error"]
                assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
                assert response.headers["www-authenticate"] == "Bearer"
                assert KEY not in response.text
            for key in (KEY, OTHER_KEY):
                response = await client.request(
                    method, path, json=body, headers={"Authorization": f"Bearer {key}"}
                )
                found = not any(value in path for value in _OBJECT_IDS.values())
                assert response.status_code == (200 if found else 404), (method, path, response.text)
        for path in OPEN_PATHS:
            assert (await client.get(path)).status_code == 200, path
        metrics = (await client.get("/metrics")).text
        assert (
            f'autogen_rejected_total{{reason="unauthorized"}} {len(protected) * len(BAD_CREDENTIALS)}.0'
            in metrics
        )


async def test_the_openapi_schema_declares_bearer_auth() -> None:
    app = create_app(make_settings(api_keys=KEY))
    async with running_app(app) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": auth.bearer_scheme.model.description,
    }
    assert schema["paths"]["/v1/chat/completions"]["post"]["security"] == [{"APIKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_the_official_sdk_gets_an_authentication_error_from_the_real_service(tmp_path: Path) -> None:
    with start_service(tmp_path, API_KEYS=KEY) as service:
        wrong = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="echo", messages=QUESTION)  # type: ignore[arg-type]
        right = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key=KEY, max_retries=0)
        assert (
            right.chat.completions.create(model="echo", messages=QUESTION).choices[0].message.content == "hi"
        )  # type: ignore[arg-type]
        assert httpx.get(f"{service.base_url}/metrics").status_code == 200
        logs = service.logs()
    assert KEY not in logs and "sk-wrong" not in logs
    assert fingerprint(KEY) in logs  # the start-up line names the keys by fingerprint
    assert "API KEY AUTHENTICATION IS OFF" not in logs


def test_without_keys_auth_is_off_and_the_start_up_log_says_so_loudly(tmp_path: Path) -> None:
    with start_service(tmp_path) as service:
        response = httpx.post(
            f"{service.base_url}/v1/chat/completions",
            json={"model": "echo", "messages": QUESTION},
            timeout=30,
        )
        assert response.status_code == 200
        warnings = [line for line in service.logs().splitlines() if "API KEY AUTHENTICATION IS OFF" in line]
    assert warnings and all('"level": "WARNING"' in line for line in warnings)


class _CountingHmac:
    def __init__(self, compared: list[bytes]) -> None:
        self.compared = compared

    def compare_digest(self, a: bytes, b: bytes) -> bool:
        self.compared.append(a)
        return hmac.compare_digest(a, b)


def test_keys_are_kept_as_digests_and_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = ApiKeys([KEY, OTHER_KEY, "sk-third"])
    assert KEY not in repr(vars(keys)) and KEY.encode() not in b"".join(keys._digests())
    compared: list[bytes] = []
    monkeypatch.setattr(auth, "hmac", _CountingHmac(compared))
    for presented in (KEY, "sk-third", "wrong", "", KEY[:-1]):
        compared.clear()
        keys.verify(presented)
        assert len(compared) == 3  # every key is compared, whichever matches (no early exit)
    assert keys.verify(KEY) == fingerprint(KEY) and keys.verify("wrong") is None
    assert fingerprint(KEY).startswith("key-") and len(fingerprint(KEY)) == 16


def test_key_file_rotation_without_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = tmp_path / "api-keys"
    key_file.write_text("# current keys\nsk-old\n")
    now = [0.0]
    keys = ApiKeys(key_file=key_file, check_interval_s=10, clock=lambda: now[0])
    assert keys.enabled and keys.verify("sk-old") and not keys.verify("sk-new")
    key_file.write_text("sk-old\nsk-new\n")  # step 1: add the new key
    now[0] += 11
    assert keys.verify("sk-new") and keys.verify("sk-old")
    key_file.write_text("sk-new\n")  # step 3: remove the old one, once clients moved
    now[0] += 11
    with caplog.at_level(logging.INFO, logger="service.protection.auth"):
        assert keys.verify("sk-new") and not keys.verify("sk-old")
    assert "sk-old" not in caplog.text and "sk-new" not in caplog.text
    key_file.unlink()  # a Secret briefly missing during an update: keep the last keys
    now[0] += 11
    assert keys.verify("sk-new")


def test_an_empty_key_file_refuses_everyone_and_an_unreadable_one_stops_start_up(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# no keys yet\n")
    keys = ApiKeys(key_file=empty)
    assert keys.enabled and keys.verify("") is None and keys.verify("anything") is None
    with pytest.raises(RuntimeError, match="API_KEYS_FILE"):
        create_app(make_settings(api_keys_file=tmp_path / "missing"))


async def test_security_headers_on_every_response_and_cors_off_by_default() -> None:
    app = create_app(make_settings(api_keys=KEY))
    async with running_app(app) as client:
        for response in (
            await client.get("/healthz"),
            await client.get("/v1/models"),  # a 401
            await client.post("/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {KEY}"}),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["content-security-policy"].startswith("default-src 'none'")
            assert "server" not in response.headers or "uvicorn" not in response.headers["server"]
        # Pages get a policy of their own: only the service's own files (tests/test_browser_*.py).
        for page in ("/", "/playground", "/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200 and response.headers["x-frame-options"] == "DENY"
            policy = response.headers["content-security-policy"]
            assert policy.startswith("default-src 'none'; script-src 'self'"), (page, policy)
        preflight = await client.options(
            "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code in (401, 405)


async def test_cors_when_origins_are_set() -> None:
    app = create_app(make_settings(api_keys=KEY, cors_origins="https://app.example"))
    async with running_app(app) as client:
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200  # answered before auth: browsers send no key on preflight
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        response = await client.get(
            "/v1/models", headers={"Origin": "https://app.example", "Authorization": f"Bearer {KEY}"}
        )
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-ratelimit-remaining" in response.headers["access-control-expose-headers"].lower()
        other = await client.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def _client_at(app: object, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_wrong_keys_are_limited_per_client_and_logged_once_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(api_keys=KEY, auth_failure_limit="3/minute"))
    wrong, right = {"Authorization": "Bearer sk-guess"}, {"Authorization": f"Bearer {KEY}"}
    guesser, other = _client_at(app, "198.51.100.7"), _client_at(app, "198.51.100.8")
    async with running_app(app) as local, guesser, other:
        with caplog.at_level(logging.INFO, logger="service.protection.auth"):
            statuses = [(await guesser.get("/v1/models", headers=wrong)).status_code for _ in range(8)]
            assert statuses == [401] * 3 + [429] * 5
            limited = await guesser.post(
                "/v1/chat/completions", json={"model": "echo", "messages": QUESTION}, headers=right
            )
            # Past the limit even a right key is refused, or the answer would tell which guess was right.
            assert limited.status_code == 429
            error = limited.json()["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "too_many_auth_failures"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            # Other clients are not affected, and a missing key is not a guess.
            assert (await other.get("/v1/models", headers=right)).status_code == 200
            assert [(await local.get("/v1/models")).status_code for _ in range(5)] == [401] * 5
            assert (await local.get("/v1/models", headers=right)).status_code == 200
        metrics = (await local.get("/metrics")).text
    assert 'autogen_rejected_total{reason="auth_failures"} 6.0' in metrics
    assert 'autogen_rejected_total{reason="unauthorized"} 8.0' in metrics
    invalid = [r for r in caplog.records if r.getMessage() == "request with an invalid API key refused"]
    blocked = [r for r in caplog.records if r.getMessage().startswith("too many invalid API keys")]
    assert len(invalid) == 1 and len(blocked) == 1  # once per client and window, not per request
    assert blocked[0].__dict__["client"] == "198.51.100.7" and blocked[0].levelno == logging.WARNING
    assert "sk-guess" not in caplog.text


def test_failed_authentications_are_counted_in_fixed_windows_in_bounded_memory() -> None:
    now = [0.0]
    limiter = FailedAuthLimiter(2, 60.0, max_clients=100, clock=lambda: now[0])
    assert [limiter.failed("192.0.2.1") for _ in range(2)] == [1, 2]
    assert limiter.retry_after("192.0.2.1") == 60.0 and limiter.retry_after("192.0.2.2") is None
    now[0] = 59.0
    assert limiter.retry_after("192.0.2.1") == 1.0
    now[0] = 60.0
    assert limiter.retry_after("192.0.2.1") is None  # a new window
    for number in range(1000):
        limiter.failed(f"10.0.{number // 256}.{number % 256}")
    assert len(limiter._windows) == 100  # the least recently seen clients are forgotten first
    # One IPv6 subscriber (a /64) is one client; an IPv4-mapped address is its IPv4 address.
    assert FailedAuthLimiter.client_of("2001:db8:1:2::1") == FailedAuthLimiter.client_of("2001:db8:1:2:ff::9")
    assert FailedAuthLimiter.client_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert FailedAuthLimiter.client_of("not-an-address") == "not-an-address"

"""schemathesis against the live service's own OpenAPI schema (gunicorn + uvicorn worker, auth on).

The schemathesis CLI generates up to `MAX_EXAMPLES` requests per operation, valid and invalid, in
its examples, coverage and fuzzing phases, with a fixed seed so a run is reproducible.
Checks: no 5xx; status codes, content types, headers and bodies (JSON and each SSE event) as the
schema documents them; schema-invalid data refused with a 4xx; auth really enforced; unsupported
methods refused. (`positive_data_acceptance` is left out: a conversation needs a user message
with text, a rule beyond the JSON schema, so a schema-valid request may rightly get a 400.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import start_service

API_KEY = "sk-schemathesis-key"
MAX_EXAMPLES = 50


DELETABLE = 40  # objects per delete operation: each succeeds once, later calls get the documented 404


def stored_objects(base_url: str) -> str:
    """A schemathesis config that sends the ids of real stored objects to the operations that read
    and delete them (otherwise they only ever answer 404 and their logic is never reached)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def post(path: str, body: dict[str, object]) -> str:
        response = httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    response = post("/v1/responses", {"model": "echo", "input": "hi"})
    conversation = post("/v1/conversations", {"items": [{"role": "user", "content": "hi"}]})
    listed = httpx.get(f"{base_url}/v1/conversations/{conversation}/items", headers=headers).json()
    deletable = {
        "responses": [post("/v1/responses", {"model": "echo", "input": "hi"}) for _ in range(DELETABLE)],
        "conversations": [post("/v1/conversations", {}) for _ in range(DELETABLE)],
    }
    operations: dict[str, dict[str, str | dict[str, str]]] = {
        "GET /v1/responses/{response_id}": {"path.response_id": response},
        "GET /v1/responses/{response_id}/input_items": {"path.response_id": response},
        "DELETE /v1/responses/{response_id}": {"path.response_id": {"dictionary": "responses"}},
        "GET /v1/conversations/{conversation_id}": {"path.conversation_id": conversation},
        "POST /v1/conversations/{conversation_id}": {"path.conversation_id": conversation},
        "GET /v1/conversations/{conversation_id}/items": {"path.conversation_id": conversation},
        "POST /v1/conversations/{conversation_id}/items": {"path.conversation_id": conversation},
        "GET /v1/conversations/{conversation_id}/items/{item_id}": {
            "path.conversation_id": conversation,
            "path.item_id": listed["data"][0]["id"],
        },
        "DELETE /v1/conversations/{conversation_id}": {
            "path.conversation_id": {"dictionary": "conversations"}
        },
    }
    # TOML (schemathesis.toml); its strings here are plain ASCII, written as JSON strings.
    lines = []
    for name, values in deletable.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    for name, parameters in operations.items():
        pairs = ", ".join(
            f"{json.dumps(key)} = "
            + (
                f"{{ dictionary = {json.dumps(value['dictionary'])} }}"
                if isinstance(value, dict)
                else json.dumps(value)
            )
            for key, value in parameters.items()
        )
        lines += ["[[operations]]", f"include-name = {json.dumps(name)}", f"parameters = {{ {pairs} }}", ""]
    return "\n".join(lines)


@pytest.mark.slow
def test_the_service_honours_its_own_schema(tmp_path: Path) -> None:
    # High limits: the limiters are on the request path but never the reason for an answer (the
    # auth checks send wrong keys on purpose).
    with start_service(
        tmp_path, API_KEYS=API_KEY, RATE_LIMIT="100000/minute", AUTH_FAILURE_LIMIT="100000/minute"
    ) as service:
        (tmp_path / "schemathesis.toml").write_text(stored_objects(service.base_url))
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{service.base_url}/openapi.json",
                "--phases",
                "examples,coverage,fuzzing",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "20261125",
                "--header",
                f"Authorization: Bearer {API_KEY}",
                "--request-timeout",
                "30",
            ],
            cwd=tmp_path,  # reports and caches stay out of the repository
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
        assert "No issues found" in result.stdout, result.stdout[-4000:]
        assert httpx.get(f"{service.base_url}/readyz").status_code == 200
        logs = service.logs()
    assert "Traceback" not in logs and API_KEY not in logs

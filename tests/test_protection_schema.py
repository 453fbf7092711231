"""schemathesis against the live service's own OpenAPI schema (gunicorn + uvicorn worker, auth on).

The schemathesis CLI generates up to `MAX_EXAMPLES` requests per operation, valid and invalid, in
its examples, coverage and fuzzing phases, with a fixed seed so a run is reproducible.
Checks: no 5xx; status codes, content types, headers and bodies (JSON and each SSE event) as the
schema documents them; schema-invalid data refused with a 4xx; auth really enforced; unsupported
methods refused. (`positive_data_acceptance` is left out: a conversation needs a user message
with text, a rule beyond the JSON schema, so a schema-valid request may rightly get a 400.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers.server import start_service

API_KEY = "sk-schemathesis-key"
MAX_EXAMPLES = 50


def test_the_service_honours_its_own_schema(tmp_path: Path) -> None:
    # High limits: the limiters are on the request path but never the reason for an answer (the
    # auth checks send wrong keys on purpose).
    with start_service(
        tmp_path, API_KEYS=API_KEY, RATE_LIMIT="100000/minute", AUTH_FAILURE_LIMIT="100000/minute"
    ) as service:
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
        assert "No issues found" in result.stdout
        assert httpx.get(f"{service.base_url}/readyz").status_code == 200
        logs = service.logs()
    assert "Traceback" not in logs and API_KEY not in logs

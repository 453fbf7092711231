"""Open WebUI as a user would run it, offline, in its own venv; and the two admin calls the check needs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import httpx

from loadtests.procs import ServerProcess, free_port
from uicheck.procs import spawn

OPENWEBUI_VERSION = "0.12.4"

# Settings a user's shell may carry that would change what this check sees; Open WebUI reads them at start.
_FOREIGN_PREFIXES = ("OPENAI_", "OLLAMA_", "WEBUI_", "TASK_MODEL", "ENABLE_", "RAG_", "HF_", "DATABASE_URL")


def openwebui_env(
    data_dir: Path, openai_base_url: str, api_key: str, task_model: str, egress_trap: str | None
) -> dict[str, str]:
    """The environment of an offline Open WebUI whose only model connection is ``openai_base_url``.

    ``task_model`` is the model Open WebUI uses for its background tasks (titles, tags, follow-ups);
    empty means "the chat's own model", Open WebUI's default. ``egress_trap`` (``http://host:port``) is set
    as the HTTP(S) proxy, so a library that tries to reach the internet is seen (and refused) there.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "WEBUI_SECRET_KEY": secrets.token_urlsafe(32),
            # Nothing downloaded at start or later: no hub models, no version check, no Ollama probe use.
            "OFFLINE_MODE": "true",
            "HF_HUB_OFFLINE": "1",
            "RAG_EMBEDDING_ENGINE": "openai",
            "ENABLE_OLLAMA_API": "false",
            "WEBUI_AUTH": "false",
            "ENABLE_OPENAI_API": "true",
            "OPENAI_API_BASE_URLS": openai_base_url,
            "OPENAI_API_KEYS": api_key,
            "TASK_MODEL_EXTERNAL": task_model,
            # The defaults, spelled out: these are the background requests the check is about.
            "ENABLE_TITLE_GENERATION": "true",
            "ENABLE_TAGS_GENERATION": "true",
            "ENABLE_FOLLOW_UP_GENERATION": "true",
            "ANONYMIZED_TELEMETRY": "false",
            "DO_NOT_TRACK": "true",
            "SCARF_NO_ANALYTICS": "true",
            "GLOBAL_LOG_LEVEL": "INFO",
        }
    )
    if egress_trap:
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env[key] = egress_trap
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env


def spawn_openwebui(venv: Path, workdir: Path, env: dict[str, str], log_path: Path) -> ServerProcess:
    """``open-webui serve`` on a free loopback port, in its own session; await ``/health`` next."""
    exe = venv / "bin" / "open-webui"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run `make ui-check` (it installs Open WebUI into {venv})")
    port = free_port()
    # cwd: it writes .webui_secret_key relative to it (unused here: WEBUI_SECRET_KEY is set)
    cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
    return spawn("open-webui", cmd, env, workdir, log_path, port)


class OpenWebUIAdmin:
    """Open WebUI's admin API, signed in as the single local admin that ``WEBUI_AUTH=false`` creates."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=30.0)
        self._token = ""

    async def __aenter__(self) -> OpenWebUIAdmin:
        # With WEBUI_AUTH=false any sign-in yields the local admin (created on first use).
        r = await self._client.post("/api/v1/auths/signin", json={"email": "", "password": ""})
        r.raise_for_status()
        self._token = r.json()["token"]
        self._client.headers["Authorization"] = f"Bearer {self._token}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def model_ids(self) -> list[str]:
        r = await self._client.get("/api/models")
        r.raise_for_status()
        return [m["id"] for m in r.json()["data"]]

    async def task_config(self) -> dict[str, Any]:
        r = await self._client.get("/api/v1/tasks/config")
        r.raise_for_status()
        config: dict[str, Any] = r.json()
        return config

"""Settings: typed, from the environment, with a clear message on a bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Settings, SettingsError, load_settings
from tests.helpers.server import REPO_ROOT


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORT", "WORKERS", "HOST", "API_KEYS", "LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 2)
    assert settings.otel_traces_exporter == "none" and not settings.uses_real_llm


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-11\nfile-key\n\n")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("API_KEYS", "a, b")
    monkeypatch.setenv("API_KEYS_FILE", str(keys))
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.all_api_keys == ("a", "b", "file-key")
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "eighty", "PORT"),
        ("WORKERS", "0", "WORKERS"),
        ("RATE_LIMIT", "lots", "RATE_LIMIT"),
        ("LLM_BASE_URL", "ftp://x", "LLM_BASE_URL"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
    ],
)
def test_bad_values_give_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value)


def test_llm_model_required_with_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.delenv("LLM_MODEL", raising=False)
    with pytest.raises(SettingsError, match="LLM_MODEL"):
        load_settings()


def test_cli_refuses_to_start_on_bad_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        env={"PATH": "/usr/bin:/bin", "PORT": "not-a-port"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr


def test_every_setting_is_in_the_configuration_table() -> None:
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    table = page[page.index("| variable | default | meaning |") :]
    table = table.split("\n\n", 1)[0]
    undocumented = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in table]
    assert not undocumented, f"add these to the table of docs/configuration.md: {undocumented}"

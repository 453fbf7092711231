"""Service settings: one typed class, read from the environment (and an optional `.env`)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.app_state import StateKey
from service.contract.activity import ActivityMode

_RATE_LIMIT_PATTERN = r"^\s*\d+\s*(/|per)\s*\d*\s*(second|minute|hour|day)s?\s*$"


class Settings(BaseSettings):
    """Every knob of the service. Nothing else reads `os.environ` for configuration."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=False)

    # Process and network
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=64)
    graceful_timeout_s: float = Field(310.0, gt=0, le=3600)
    # After SIGTERM: /readyz answers 503 and new chat requests are refused for this long before the
    # listener closes (then open streams finish within GRACEFUL_TIMEOUT_S).
    drain_delay_s: float = Field(1.0, ge=0, le=600)
    keepalive_s: float = Field(75.0, gt=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_prompts: bool = False
    # One JSON line per HTTP request from the server (uvicorn's access log); off leaves the service's
    # own lines (errors, rejections, lifecycle) and the per-request metrics.
    access_log: bool = True

    # Workflows and models
    workflows_dir: Path | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    demo_llm_ttft_ms: float = Field(0.0, ge=0, le=600_000)
    demo_llm_token_ms: float = Field(0.0, ge=0, le=60_000)
    # Module prefixes (besides AutoGen's and the service's) that workflow files may name as providers.
    workflow_allowed_providers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Code-bearing workflow components, each refused at load unless its setting is on (see
    # service/workflows/guard.py and docs/protection.md, "Workflow files are code"):
    # CodeExecutorAgent, code executors and code-execution tools run model-written code (or code found
    # in any message, the caller's included);
    allow_code_execution: bool = False
    # a FunctionTool's source and global_imports run in the worker when it loads;
    allow_function_tools: bool = False
    # a stdio MCP server's command is started as a process of the worker.
    allow_stdio_mcp: bool = False
    # A plain model (one model call, no team) for a chat UI's titles, tags and follow-ups.
    # `auto`: listed when an upstream LLM is configured.
    direct_model: Literal["auto", "on", "off"] = "auto"
    direct_model_id: str = Field("direct", pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    # Bounds on what an upstream LLM may send: one event of a stream, and a whole non-streamed answer.
    upstream_max_event_bytes: int = Field(1_048_576, ge=1024, le=1_073_741_824)
    upstream_max_body_bytes: int = Field(4_194_304, ge=1024, le=1_073_741_824)
    # The agent runtime of the teams: `lean`, the service's (direct dispatch, no per-message
    # serialization or telemetry; see docs/runtime.md), or `default`, AgentChat's
    # SingleThreadedAgentRuntime. A team the lean one cannot run uses the default one (logged).
    agent_runtime: Literal["lean", "default"] = "lean"
    # How the chunks of an OpenAI-compatible upstream are parsed: `lean`, by pydantic's compiled
    # validator (the SDK's own construction for a chunk off the schema), or `sdk`, by the `openai`
    # SDK's construction alone (docs/runtime.md, "The upstream path").
    upstream_parsing: Literal["lean", "sdk"] = "lean"

    # Bounds of one run
    workflow_timeout_s: float = Field(300.0, gt=0, le=86_400)
    max_agent_turns: int = Field(12, ge=1, le=1000)
    max_messages: int = Field(256, ge=1, le=100_000)
    max_message_chars: int = Field(100_000, ge=1, le=10_000_000)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # Images in requests (chat `image_url` parts, Responses `input_image`): data URLs always; http(s)
    # URLs are fetched by the service only with IMAGE_URL_FETCH on (off: the service would reach any
    # address a caller names, internal ones included). Bounds per request: count, bytes per image
    # (decoded), and the fetch's time. Data URLs also count against MAX_BODY_BYTES.
    image_url_fetch: bool = False
    max_images: int = Field(8, ge=0, le=100)
    max_image_bytes: int = Field(5_242_880, ge=1024, le=104_857_600)
    image_fetch_timeout_s: float = Field(10.0, gt=0, le=120)
    stream_queue_size: int = Field(256, ge=1, le=100_000)
    # Where a team's activity goes: `reasoning` (reasoning_content/reasoning, the answer alone in
    # content), `content` (the whole transcript in content) or `none`; a request may override it.
    stream_activity: ActivityMode = "reasoning"
    stream_keepalive_s: float = Field(15.0, gt=0, le=3600)
    # Tokens that arrive within this interval of the previous write leave together in the next
    # write (same SSE events, fewer sends); the first content token is never held back.
    stream_flush_interval_ms: float = Field(20.0, ge=0, le=1000)
    # Garbage collector of each worker: objects alive after start-up are frozen out of collections
    # and the youngest generation is collected every `gc_gen0_threshold` allocations instead of 700
    # (each team run allocates tens of thousands of objects; see service/gc_tuning.py).
    gc_freeze_after_startup: bool = True
    gc_gen0_threshold: int = Field(50_000, ge=100, le=10_000_000)

    # Protection
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None
    rate_limit: str = ""
    rate_limit_storage_uri: str = "memory://"
    max_concurrent_workflows: int = Field(64, ge=1, le=100_000)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Wrong API keys per client IP and worker (e.g. `10/minute`; empty = off): beyond it 429.
    auth_failure_limit: str = "10/minute"
    # HTTP connections, checked by each worker before the app sees a request (see
    # service/protection/connections.py): request line + headers at most `max_header_bytes` (431),
    # received within `header_timeout_s`, the body within `body_timeout_s` (408); at most
    # `max_connections` open connections per worker; the open-files limit raised to `fd_limit`.
    max_header_bytes: int = Field(65_536, ge=1024, le=16_777_216)
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    max_connections: int = Field(1000, ge=1, le=1_000_000)
    fd_limit: int = Field(65_536, ge=256, le=1_048_576)

    # Tracing: the standard OpenTelemetry variables (the OTLP exporter reads the rest itself)
    otel_service_name: str = "autogen-service"
    otel_traces_exporter: Literal["none", "console", "otlp"] = "none"
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    # autogen-core's runtime traces every internal bus message (hundreds of spans per team run);
    # off by default so the service's own span tree stays readable and cheap. On, every team runs
    # on AgentChat's default runtime (the lean one traces nothing).
    autogen_runtime_tracing: bool = False

    # State of the Responses API (stored responses, conversations, saved team state):
    # `sqlite:///<path>` (the default: `state.sqlite3` in DATA_DIR, shared by the workers of one
    # machine) or `redis://...` (shared by every pod). Opened on the first Responses request.
    data_dir: Path = Path("data")
    state_store_uri: str = ""
    state_ttl_s: int = Field(30 * 86_400, ge=1, le=10 * 365 * 86_400)
    state_max_bytes: int = Field(8_388_608, ge=4096, le=512 * 1_048_576)
    # A conversation's (or continued response's) run lock is a lease of this many seconds, renewed
    # every third of it while its turn runs: a dead worker's lock is free within this time.
    lock_lease_s: float = Field(15.0, ge=1, le=600)

    # Prometheus multiprocess mode (the variable prometheus_client itself reads)
    prometheus_multiproc_dir: Path | None = None
    # `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>` when set (401 otherwise);
    # unset, it is open (keep it off the public ingress then). See docs/observability.md.
    metrics_token: SecretStr | None = None
    # A worker renders its /metrics page at most once per this many seconds, one render at a time;
    # scrapers within it share the text (reading every worker's files is the costly part).
    metrics_cache_s: float = Field(1.0, ge=0, le=60)

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _blank_token(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("workflow_allowed_providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [prefix.strip() for prefix in value.split(",") if prefix.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        import re

        if value and not re.match(_RATE_LIMIT_PATTERN, value):
            raise ValueError("expected a limit such as '60/minute' or '10 per second', or empty for off")
        return value.strip()

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if not value.startswith(
            ("memory://", "redis://", "rediss://", "redis+sentinel://", "redis+cluster://")
        ):
            raise ValueError("expected memory:// or a redis:// URI")
        return value

    @field_validator("state_store_uri")
    @classmethod
    def _check_state_store(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
            raise ValueError("expected sqlite:///<path> or a redis:// URI (empty: SQLite in DATA_DIR)")
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and value.strip() == "":
            return None
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _check_llm(self) -> Settings:
        if self.llm_base_url and not self.llm_model:
            raise ValueError("LLM_MODEL is required when LLM_BASE_URL is set")
        return self

    @model_validator(mode="after")
    def _check_drain(self) -> Settings:
        if self.drain_delay_s >= self.graceful_timeout_s:
            raise ValueError("DRAIN_DELAY_S must be shorter than GRACEFUL_TIMEOUT_S")
        return self

    @cached_property
    def all_api_keys(self) -> tuple[str, ...]:
        """API keys from `API_KEYS` and, if set, `API_KEYS_FILE` (one key per line, `#` comments)."""
        keys = [key.get_secret_value() for key in self.api_keys]
        if self.api_keys_file is not None:
            keys.extend(parse_api_keys_file(self.api_keys_file.read_text(encoding="utf-8")))
        return tuple(dict.fromkeys(keys))

    @property
    def state_store(self) -> str:
        """The state store URI in use: `STATE_STORE_URI`, or the SQLite file in `DATA_DIR`."""
        return self.state_store_uri or f"sqlite:///{(self.data_dir / 'state.sqlite3').resolve()}"

    @property
    def uses_real_llm(self) -> bool:
        return self.llm_base_url is not None

    @property
    def direct_model_enabled(self) -> bool:
        return self.direct_model == "on" or (self.direct_model == "auto" and self.uses_real_llm)


def parse_api_keys_file(text: str) -> list[str]:
    """The keys of an `API_KEYS_FILE`: one per line; blank lines and `#` comments are skipped."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    return keys


class SettingsError(RuntimeError):
    """Raised with a readable, one-line-per-problem message when the environment is invalid."""


def load_settings() -> Settings:
    """Read and validate the settings, turning pydantic's error into a clear start-up message."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"  {field.upper()}: {error['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(problems)) from None


SETTINGS: StateKey[Settings] = StateKey("settings", Settings)

"""Client-side CPU of one streamed model call through `LLM_BASE_URL`, layer by layer.

Against the load fake LLM (its own process, no latency, `--tokens` tokens per reply), in this
process, one call at a time, interleaved rounds (the median round is kept):

- `service`: the model client the registry builds for `LLM_BASE_URL` (autogen-ext's
  `OpenAIChatCompletionClient` under the service's upstream guards and instrumentation), consumed
  as an agent does (`create_stream`), chunks parsed as `UPSTREAM_PARSING=lean` does;
- `service-sdk-parsing`: the same with `UPSTREAM_PARSING=sdk` (the SDK's own chunk construction);
- `autogen-ext`: the same client without the service's layers;
- `openai`: the `openai` SDK's `chat.completions.create(stream=True)` alone;
- `httpx`: plain HTTP with `json.loads` per SSE line (the floor of a Python client).

Run it: `python -m loadtests.upstream_call_cost --calls 200 --rounds 3` (prints JSON, ms per call).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

import httpx
import openai
from autogen_core.models import ModelInfo, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from openai.types.chat import ChatCompletionMessageParam

from loadtests.procs import start_fake_llm
from service.config import Settings
from service.workflows.preparation import DEMO_CLIENT_PROVIDER, LLM_MODEL_INFO
from service.workflows.registry import WorkflowRegistry

MESSAGES = [UserMessage(content="How much does one streamed model call cost?", source="user")]
RAW_MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "How much does one streamed model call cost?"}
]

Call = Callable[[], Awaitable[None]]


def _service_client(base_url: str, parsing: Literal["lean", "sdk"]) -> Any:
    settings = Settings(_env_file=None, llm_base_url=base_url, llm_model="fake-llm", upstream_parsing=parsing)
    registry = WorkflowRegistry(settings)
    spec = {"provider": DEMO_CLIENT_PROVIDER, "component_type": "model", "config": {}}
    return registry._instrumented(registry._configured_client_spec(spec), agent="bench", streams=True)


async def _consume(stream: Any) -> None:
    async for _ in stream:
        pass


def calls(base_url: str) -> dict[str, Call]:
    service = _service_client(base_url, "lean")
    service_sdk = _service_client(base_url, "sdk")
    plain = OpenAIChatCompletionClient(
        model="fake-llm",
        base_url=base_url,
        api_key="unused",
        model_info=cast(ModelInfo, LLM_MODEL_INFO),
        max_retries=0,
    )
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    body = {"model": "fake-llm", "messages": RAW_MESSAGES, "stream": True}

    async def via_service() -> None:
        await _consume(service.create_stream(MESSAGES))

    async def via_service_sdk() -> None:
        await _consume(service_sdk.create_stream(MESSAGES))

    async def via_autogen() -> None:
        await _consume(plain.create_stream(MESSAGES))

    async def via_openai() -> None:
        await _consume(
            await sdk.chat.completions.create(model="fake-llm", messages=RAW_MESSAGES, stream=True)
        )

    async def via_httpx() -> None:
        async with http.stream("POST", "/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])

    return {
        "service": via_service,
        "service-sdk-parsing": via_service_sdk,
        "autogen-ext": via_autogen,
        "openai": via_openai,
        "httpx": via_httpx,
    }


async def measure(base_url: str, count: int, rounds: int) -> dict[str, float]:
    layers = calls(base_url)
    for call in layers.values():  # warm-up: connections, imports, caches
        for _ in range(5):
            await call()
    per_round: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(rounds):
        for name, call in layers.items():
            started = time.process_time()
            for _ in range(count):
                await call()
            per_round[name].append((time.process_time() - started) / count * 1000.0)
    return {name: round(statistics.median(values), 3) for name, values in per_round.items()}


def main(argv: list[str] | None = None) -> None:
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m loadtests.upstream_call_cost", description=description)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)
    fake = start_fake_llm(ttft_ms=0, token_ms=0, tokens=args.tokens)
    try:
        result = asyncio.run(measure(f"{fake.url}/v1", args.calls, args.rounds))
    finally:
        fake.stop()
    print(json.dumps({"tokens": args.tokens, "ms_per_call": result}))


if __name__ == "__main__":
    main()

"""Issue 21, item 5: images in. Chat `image_url` parts and Responses `input_image` parts reach the agents
that can see as AgentChat `MultiModalMessage`s (the upstream model receives the image); a team that
cannot see, an http(s) URL while fetching is off, too many or too large images, and bytes that are not
an image get a 400 naming the image part. Real app over the ASGI transport, the official `openai` SDK,
the corpus's image shape against the scripted fake LLM. (Both modes on a real server: the corpus.)"""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from loadtests.scripted_llm import ScriptedLLMThread, start_scripted_llm_thread
from service.app import create_app
from service.workflows.registry import WorkflowRegistry
from tests.conformance.shapes import IMAGE_QUESTION, RED_SQUARE_PNG, SHAPES, client_for
from tests.helpers.app import make_settings, running_app

SHAPE = next(shape for shape in SHAPES if shape.name == "image-in")
PNG_BYTES = base64.b64decode(RED_SQUARE_PNG.split(",", 1)[1])


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMThread]:
    with start_scripted_llm_thread() as thread:
        yield thread


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-corpus")  # a dumped component masks its api_key


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A local web server with `/red.png` (the red square), `/big.png` and `/text.txt`."""
    big = io.BytesIO()
    Image.effect_noise((256, 256), 100).convert("RGB").save(big, "PNG")
    files = {"/red.png": PNG_BYTES, "/big.png": big.getvalue(), "/text.txt": b"not an image"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow.png":
                time.sleep(1.5)  # longer than the test's IMAGE_FETCH_TIMEOUT_S
            body = files.get(self.path, PNG_BYTES if self.path == "/slow.png" else None)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@asynccontextmanager
async def service(
    tmp_path: Path, llm: ScriptedLLMThread, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(data_dir=tmp_path / "data", **overrides)
    registry = WorkflowRegistry(settings)
    registry.register_component("image-in", SHAPE.build(client_for(llm.base_url), tmp_path).dump_component())
    async with running_app(create_app(settings, registry=registry)) as http:
        yield http


def sdk(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def image_parts(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        part
        for message in record["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


def check_upstream(llm: ScriptedLLMThread) -> None:
    describer, editor = llm.requests()
    [image] = image_parts(describer)
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert "What is in this picture?" in str(describer["messages"])
    assert image_parts(editor) == []  # the blind editor got the text alone (AgentChat drops images)


def with_image(url: str, count: int = 1) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is in this picture?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for _ in range(count)]
    return [{"role": "user", "content": parts}]


async def test_an_image_reaches_the_agent_that_sees_on_both_apis(
    tmp_path: Path, llm: ScriptedLLMThread
) -> None:
    async with service(tmp_path, llm) as http:
        client = sdk(http)
        llm.reset()
        llm.load_script(SHAPE.script())
        completion = await client.chat.completions.create(model="image-in", messages=[IMAGE_QUESTION])  # type: ignore[list-item]
        assert completion.choices[0].message.content == SHAPE.answer
        check_upstream(llm)

        llm.reset()
        llm.load_script(SHAPE.script())
        response = await client.responses.create(
            model="image-in",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in this picture?"},
                        {"type": "input_image", "image_url": RED_SQUARE_PNG, "detail": "auto"},
                    ],
                }
            ],
        )
        assert response.output_text == SHAPE.answer
        check_upstream(llm)


async def test_http_images_are_fetched_only_where_allowed(
    tmp_path: Path, llm: ScriptedLLMThread, image_server: str
) -> None:
    async with service(tmp_path / "off", llm) as http:
        refused = await http.post(
            "/v1/chat/completions",
            json={"model": "image-in", "messages": with_image(f"{image_server}/red.png")},
        )
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "messages.0.content.1" and "IMAGE_URL_FETCH" in error["message"]
    async with service(
        tmp_path / "on", llm, image_url_fetch=True, max_image_bytes=4096, image_fetch_timeout_s=0.5
    ) as http:
        llm.reset()
        llm.load_script(SHAPE.script())
        fetched = await http.post(
            "/v1/chat/completions",
            json={"model": "image-in", "messages": with_image(f"{image_server}/red.png")},
        )
        assert fetched.status_code == 200, fetched.text
        check_upstream(llm)
        slow = with_image(f"{image_server}/red.png")
        slow[0]["content"].append({"type": "image_url", "image_url": {"url": f"{image_server}/slow.png"}})
        response = await http.post("/v1/chat/completions", json={"model": "image-in", "messages": slow})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "messages.0.content.2"
        assert "could not be fetched in 0.5 s" in response.json()["error"]["message"]
        for path, words in (
            ("/big.png", "MAX_IMAGE_BYTES"),
            ("/text.txt", "not a readable image"),
            ("/gone", "404"),
        ):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "image-in", "messages": with_image(image_server + path)},
            )
            assert response.status_code == 400, response.text
            assert words in response.json()["error"]["message"]
            assert response.json()["error"]["param"] == "messages.0.content.1"


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        (with_image(RED_SQUARE_PNG, count=3), "messages.0.content.3", "MAX_IMAGES"),
        (with_image("data:image/png;base64,aGVsbG8="), "messages.0.content.1", "not a readable image"),
        (with_image("data:image/png;base64,***"), "messages.0.content.1", "does not decode"),
        (with_image("data:text/plain,hello"), "messages.0.content.1", "not a base64 image"),
        (with_image("ftp://example.com/a.png"), "messages.0.content.1", "data URL or an http(s) URL"),
    ],
)
async def test_images_out_of_bounds_are_refused_by_part(
    tmp_path: Path, llm: ScriptedLLMThread, messages: list[dict[str, Any]], param: str, words: str
) -> None:
    async with service(tmp_path, llm, max_images=2) as http:
        response = await http.post("/v1/chat/completions", json={"model": "image-in", "messages": messages})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"], error


async def test_a_team_that_cannot_see_refuses_the_image_by_name(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"model": "demo-team", "messages": with_image(RED_SQUARE_PNG)}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.1" and "cannot see" in error["message"]
    body = {
        "model": "demo-team",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": RED_SQUARE_PNG}]}],
    }
    response = await client.post("/v1/responses", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input.0.content.0"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "`text` and `image_url`",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": [{"type": "image_url", "image_url": {"url": RED_SQUARE_PNG}}],
                    },
                ]
            },
            "only user messages may carry images",
        ),
        (
            "/v1/responses",
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
            "Files API",
        ),
        (
            "/v1/responses",
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input_image",
        ),
    ],
)
async def test_parts_that_cannot_be_taken_are_named(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], words: str
) -> None:
    response = await client.post(path, json={"model": "demo-team", **body})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]

"""The playground at `/` in a real headless Chromium, against the real service (gunicorn).

A person, with the keyboard alone, sends a message to `demo-team`: the agents' activity shows as
it streams and folds when the final answer arrives, with time to first token and usage; the chat is
a conversation of the Conversations API, back after a reload, with copy and regenerate; answers are
Markdown, rendered and sanitized by the vendored libraries. A team with a
tool and a handoff (a Swarm whose agents replay scripted model replies through AutoGen's own
`ReplayChatCompletionClient`) shows the call, its arguments, its result and the handoff. Errors
(unknown model, 401, a stream that fails, a deadline, 429) are shown in words; the API key stays in
the tab's session storage; the page fits a 360 px screen. Screenshots go to reports/screenshots.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination, SourceMatchTermination
from autogen_agentchat.teams import RoundRobinGroupChat, Swarm
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient
from playwright.sync_api import Browser, BrowserContext, Page, expect

from service.workflows.demo_client import DemoChatCompletionClient
from tests.helpers.browser import NetworkWatch, chromium, screenshot
from tests.helpers.server import ServiceProcess, start_service

pytestmark = pytest.mark.timeout(240)

KEY = "sk-playground-test"
ANSWER_WAIT_MS = 60_000
PUBLIC_API = {"/v1/models", "/v1/responses", "/v1/conversations"}
MARKDOWN_ANSWER = (
    "# Steps\n\nRun **this** with `python`:\n\n```python\nprint('hi')\n```\n\n- one\n- two\n\n"
    "See [docs](https://example.com/docs), not [bad link](javascript:window.__pwned=3).\n\n"
    '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
)
# Records, in DOM order, when the first activity step is added and when the answer is shown; and
# whether the turn's stats (written once the stream has ended) were still empty at that moment.
ORDER_PROBE = """
window.__order = [];
new MutationObserver((records) => {
  for (const record of records) {
    const added = [...record.addedNodes].some((node) => node.classList && node.classList.contains("step"));
    if (added && !window.__order.includes("activity")) {
      const stats = document.querySelector(".turn:last-child .stats");
      window.__order.push("activity");
      window.__activityWhileStreaming = !stats || stats.textContent === "";
    }
    const target = record.target;
    if (record.type === "attributes" && target.classList.contains("answer") && !target.hidden
        && !window.__order.includes("answer")) {
      window.__order.push("answer");
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["hidden"] });
"""


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny and 21 C in {city}."


def _write_teams(folder: Path) -> None:
    """`weather`: a tool call then a handoff; `faulty`: a model that fails after 3 tokens; `slow`:
    a model that takes 0.3 s per token (time to press Stop); `ask`: a drafter, then a person
    (a `UserProxyAgent`, which the service serves by ending the run with `input_required`)."""
    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
    )
    usage = RequestUsage(prompt_tokens=12, completion_tokens=6)

    def call(call_id: str, name: str, arguments: dict[str, Any]) -> CreateResult:
        content = [FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))]
        return CreateResult(finish_reason="function_calls", content=content, usage=usage, cached=False)

    triage = AssistantAgent(
        "triage",
        model_client=ReplayChatCompletionClient(
            [call("call_1", "get_weather", {"city": "Paris"}), call("call_2", "transfer_to_writer", {})],
            model_info=info,
        ),
        tools=[FunctionTool(get_weather, description="The weather in a city.")],
        handoffs=["writer"],
    )
    writer = AssistantAgent(
        "writer",
        model_client=ReplayChatCompletionClient(["It is sunny and 21 C in Paris today."], model_info=info),
    )
    team = Swarm(
        [triage, writer], termination_condition=SourceMatchTermination(["writer"]) | MaxMessageTermination(8)
    )
    (folder / "weather.json").write_text(team.dump_component().model_dump_json())
    faulty = AssistantAgent(
        "solver", model_client=DemoChatCompletionClient(fail_after_tokens=3), model_client_stream=True
    )
    (folder / "faulty.json").write_text(faulty.dump_component().model_dump_json())
    slow = AssistantAgent(
        "solver", model_client=DemoChatCompletionClient(token_ms=300), model_client_stream=True
    )
    (folder / "slow.json").write_text(slow.dump_component().model_dump_json())
    drafter = AssistantAgent(
        "drafter", model_client=DemoChatCompletionClient(role="writer"), model_client_stream=True
    )
    ask = RoundRobinGroupChat(
        [drafter, UserProxyAgent("approver")], termination_condition=MaxMessageTermination(4)
    )
    (folder / "ask.json").write_text(ask.dump_component().model_dump_json())
    writer_md = AssistantAgent(
        "formatter", model_client=ReplayChatCompletionClient([MARKDOWN_ANSWER] * 20, model_info=info)
    )
    (folder / "markdown.json").write_text(writer_md.dump_component().model_dump_json())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("playground")
    teams = root / "workflows"
    teams.mkdir()
    _write_teams(teams)
    # Tokens 15 ms apart, so the stream really is spread over time.
    with start_service(
        root, WORKFLOWS_DIR=str(teams), DEMO_LLM_TOKEN_MS="15", ALLOW_FUNCTION_TOOLS="true"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with start_service(tmp_path_factory.mktemp("keyed"), API_KEYS=KEY) as running:
        yield running


@pytest.fixture(scope="module")
def strict_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Two writes a minute (the chat's conversation, then its first response), and a deadline the
    embedded model (5 s to its first token) misses."""
    root = tmp_path_factory.mktemp("strict")
    with start_service(
        root, RATE_LIMIT="2/minute", WORKFLOW_TIMEOUT_S="1", DEMO_LLM_TTFT_MS="5000"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context
    context.close()


def open_playground(context: BrowserContext, base_url: str) -> tuple[Page, NetworkWatch]:
    network = NetworkWatch(context)
    page = network.watch(context.new_page())
    page.add_init_script(ORDER_PROBE)
    page.goto(f"{base_url}/")
    return page, network


def chat_requests(page: Page) -> list[dict[str, Any]]:
    """The bodies of the responses the page asks for (one per message sent)."""
    bodies: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda request: (
            bodies.append(request.post_data_json)
            if urlsplit(request.url).path == "/v1/responses" and request.method == "POST"
            else None
        ),
    )
    return bodies


def send(page: Page, text: str) -> None:
    page.locator("#message").focus()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def last_turn(page: Page) -> Any:
    return page.locator("article.turn").last


def wait_done(page: Page) -> None:
    expect(page.locator("#stop")).to_be_disabled(timeout=ANSWER_WAIT_MS)


def assert_only_this_service(network: NetworkWatch, base_url: str) -> None:
    assert network.left == []
    for url in network.network_requests():
        assert url.startswith(base_url + "/"), url
        path = urlsplit(url).path
        public = path in PUBLIC_API or path.startswith("/v1/conversations/")
        assert public or path == "/" or path.startswith("/static/"), url
    assert network.console_errors == []


def test_a_person_chats_with_demo_team_using_the_keyboard(
    context: BrowserContext, service: ServiceProcess
) -> None:
    page, network = open_playground(context, service.base_url)
    bodies = chat_requests(page)
    expect(page.locator("#model")).to_have_value("demo-team")
    expect(page.locator("#status")).to_have_text("7 teams available.")

    # Tab from the top of the page to the message box: the controls come in reading order, and the
    # focused one is outlined.
    visited: list[str] = []
    for _ in range(20):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        visited.append(focused)
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", f"no visible focus on {focused}"
        if focused == "message":
            break
    assert visited[-1] == "message", visited
    assert visited.index("model") < visited.index("api-key") < visited.index("message"), visited

    page.keyboard.type("What is AutoGen?")
    page.keyboard.press("Enter")
    turn = last_turn(page)
    expect(turn.locator(".step").first).to_be_visible(timeout=ANSWER_WAIT_MS)
    wait_done(page)

    assert page.evaluate("window.__order") == ["activity", "answer"]
    assert page.evaluate("window.__activityWhileStreaming") is True
    agents = turn.locator(".step .agent").all_text_contents()
    assert {"planner", "writer"} <= set(agents), agents
    activity = turn.locator(".activity").text_content() or ""
    assert "Plan for" in activity and "Draft:" in activity
    # The answer arrived: the activity folded, one click away.
    assert turn.locator(".activity").evaluate("(node) => node.open") is False
    answer = turn.locator(".answer")
    expect(answer.locator("h3")).to_have_text("Final answer from reviewer")
    answer_text = answer.locator(".answer-text").inner_text().strip()
    assert answer_text.startswith("Review: the draft answers"), answer_text
    assert "Plan for" not in answer_text and "**" not in answer_text and "TERMINATE" not in answer_text
    stats = turn.locator(".stats").inner_text()
    assert re.search(r"Time to first token \d+\.\d+ s", stats), stats
    assert re.search(r"tokens: [1-9]\d* in, [1-9]\d* out, [1-9]\d* in all", stats), stats
    expect(page.locator("#status")).to_have_text(re.compile(r"^Answer from reviewer complete in \d"))
    expect(page.locator("#message")).to_be_focused()
    screenshot(page, "playground-demo-team")

    # The next message continues the conversation on the service: the new question only.
    page.keyboard.type("And in one line?")
    page.keyboard.press("Enter")
    wait_done(page)
    expect(page.locator("article.turn")).to_have_count(2)
    first, second = bodies
    conversation = first["conversation"]
    assert conversation.startswith("conv_")
    assert first == {
        "model": "demo-team",
        "input": "What is AutoGen?",
        "conversation": conversation,
        "stream": True,
    }
    assert second == {
        "model": "demo-team",
        "input": "And in one line?",
        "conversation": conversation,
        "stream": True,
    }
    second_answer = last_turn(page).locator(".answer-text").inner_text().strip()

    # A reload brings the chat back from the service, activity folded, and lists it.
    page.reload()
    expect(page.locator("article.turn")).to_have_count(2)
    restored = page.locator("article.turn")
    expect(restored.first.locator(".message.user .text")).to_have_text("What is AutoGen?")
    expect(restored.first.locator(".answer-text")).to_have_text(answer_text)
    expect(restored.last.locator(".answer-text")).to_have_text(second_answer)
    assert "Plan for" in (restored.first.locator(".activity").text_content() or "")
    assert restored.first.locator(".activity").evaluate("(node) => node.open") is False
    entry = page.locator(".open-conversation")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("What is AutoGen?")
    expect(entry).to_have_attribute("aria-current", "true")
    stored = page.evaluate("JSON.parse(localStorage.getItem('autogen-playground.conversations'))")
    assert [item["id"] for item in stored] == [conversation] and stored[0]["model"] == "demo-team"

    # Copy puts the answer's text on the clipboard.
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    restored.last.locator("button.copy").click()
    expect(restored.last.locator("button.copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == second_answer

    # Regenerate: only on the last answer; the conversation is forked before its question, the
    # question asked again there, and the old conversation deleted.
    expect(restored.first.locator("button.regenerate")).to_be_hidden()
    asked = len(bodies)
    restored.last.locator("button.regenerate").click()
    # The page forks the conversation first, then asks: wait for the question, then for its answer.
    deadline = time.monotonic() + ANSWER_WAIT_MS / 1000
    while len(bodies) == asked:
        assert time.monotonic() < deadline, "regenerate never asked the team again"
        page.wait_for_timeout(50)
    wait_done(page)
    expect(page.locator("article.turn")).to_have_count(2)
    regenerated = bodies[-1]
    assert regenerated["input"] == "And in one line?" and regenerated["conversation"] != conversation
    items = httpx.get(f"{service.base_url}/v1/conversations/{regenerated['conversation']}/items?order=asc")
    texts = [
        part["text"] for item in items.json()["data"] if item["type"] == "message" for part in item["content"]
    ]
    assert texts[:3] == ["What is AutoGen?", answer_text, "And in one line?"], texts
    assert httpx.get(f"{service.base_url}/v1/conversations/{conversation}").status_code == 404
    expect(page.locator(".open-conversation")).to_have_count(1)
    screenshot(page, "playground-restored-and-regenerated")
    assert_only_this_service(network, service.base_url)


def test_answers_are_markdown_rendered_and_sanitized(
    context: BrowserContext, service: ServiceProcess
) -> None:
    page, network = open_playground(context, service.base_url)
    page.locator("#model").select_option("markdown")
    send(page, "How do I run it?")
    wait_done(page)
    answer = last_turn(page).locator(".answer-text")
    expect(answer.locator("h1")).to_have_text("Steps")
    expect(answer.locator("strong")).to_have_text("this")
    expect(answer.locator("pre code")).to_have_text("print('hi')")
    expect(answer.locator("li")).to_have_count(2)
    assert answer.locator("script, img, [onerror]").count() == 0
    expect(answer).to_contain_text('<img src="x" onerror=')  # HTML in an answer is shown as text
    links = answer.locator("a").evaluate_all(
        "(nodes) => nodes.map((a) => [a.textContent, a.getAttribute('href'), a.rel])"
    )
    assert ["docs", "https://example.com/docs", "noopener noreferrer"] in links, links
    assert all(not (href or "").startswith("javascript:") for _, href, _ in links), links
    assert page.evaluate("window.__pwned") is None
    # The libraries came from the service itself.
    scripts = page.evaluate("[...document.scripts].map((s) => new URL(s.src).pathname)")
    assert scripts == ["/static/lib/marked.umd.js", "/static/lib/purify.min.js", "/static/playground.js"]
    screenshot(page, "playground-markdown")
    assert_only_this_service(network, service.base_url)


def test_tool_calls_and_handoffs_appear_in_the_activity(
    context: BrowserContext, service: ServiceProcess
) -> None:
    page, network = open_playground(context, service.base_url)
    page.locator("#model").select_option("weather")
    send(page, "What is the weather in Paris?")
    turn = last_turn(page)
    wait_done(page)

    tool = turn.locator(".tool").first
    expect(tool.locator(".tool-name")).to_have_text("get_weather")
    assert json.loads(tool.locator(".tool-args").text_content() or "") == {"city": "Paris"}
    expect(tool.locator(".tool-result")).to_contain_text("Result")
    expect(tool.locator(".tool-result")).to_contain_text("Sunny and 21 C in Paris.")
    expect(turn.locator(".handoff")).to_contain_text("to writer")
    expect(turn.locator(".activity-count")).to_contain_text("1 handoff")
    expect(turn.locator(".answer h3")).to_have_text("Final answer from writer")
    expect(turn.locator(".answer-text")).to_have_text("It is sunny and 21 C in Paris today.")
    screenshot(page, "playground-tools-and-handoff")
    assert_only_this_service(network, service.base_url)


def test_a_team_that_asks_a_person_waits_for_the_reply(
    context: BrowserContext, service: ServiceProcess
) -> None:
    page, network = open_playground(context, service.base_url)
    bodies = chat_requests(page)
    page.locator("#model").select_option("ask")
    send(page, "Draft a note to the team")
    wait_done(page)
    turn = last_turn(page)
    expect(turn.locator(".step[data-agent=approver]")).to_contain_text("Asks you")
    expect(turn.locator(".answer h3")).to_have_text("Question for you from approver")
    question = turn.locator(".answer-text").inner_text()
    assert question.startswith("Draft: here is a direct answer"), question
    expect(turn.locator(".input-required")).to_have_text(
        "approver is waiting for your reply: write it in the message box to continue."
    )
    expect(page.locator("#status")).to_have_text("approver is waiting for your reply.")
    screenshot(page, "playground-input-required")

    send(page, "Approved.")  # the reply continues the conversation
    wait_done(page)
    assert bodies[1]["input"] == "Approved." and bodies[1]["conversation"] == bodies[0]["conversation"]
    assert_only_this_service(network, service.base_url)


def test_errors_are_shown_in_words(context: BrowserContext, service: ServiceProcess) -> None:
    page, network = open_playground(context, service.base_url)
    expect(page.locator("#model")).to_have_value("demo-team")

    # A list that went stale (the team was removed after the page loaded): 404 from the service.
    page.evaluate(
        """() => {
          const option = new Option("no-such-team", "no-such-team");
          document.getElementById("model").append(option);
        }"""
    )
    page.locator("#model").select_option("no-such-team")
    send(page, "Hello?")
    error = last_turn(page).locator(".error[role=alert]")
    expect(error).to_contain_text("The model 'no-such-team' does not exist.")
    expect(error).to_contain_text("Reload the list of teams and pick one that is served.")
    expect(error.locator(".request-id")).to_contain_text("request id")
    expect(page.locator("#message")).to_have_value("Hello?")  # kept, to send again

    # The stream starts, then the team's model fails: the error event, and what came before it.
    page.locator("#message").fill("")
    page.locator("#model").select_option("faulty")
    send(page, "Solve this")
    turn = last_turn(page)
    expect(turn.locator(".error[role=alert]")).to_contain_text(
        "The team stopped with an error before finishing."
    )
    expect(turn.locator(".answer h3")).to_contain_text("Answer, incomplete")
    expect(turn.locator(".answer-text")).to_contain_text("Answer (turn")
    screenshot(page, "playground-errors")
    assert network.left == []


def test_escape_stops_the_team_and_the_service_cancels_its_run(
    context: BrowserContext, service: ServiceProcess
) -> None:
    page, network = open_playground(context, service.base_url)
    page.locator("#model").select_option("slow")
    send(page, "Take your time")
    turn = last_turn(page)
    expect(turn.locator(".answer-text")).not_to_be_empty(timeout=ANSWER_WAIT_MS)
    expect(page.locator("#stop")).to_be_enabled()
    page.keyboard.press("Escape")
    expect(turn.locator(".error[role=alert]")).to_have_text(
        "Stopped: the team's run was cancelled before it finished."
    )
    expect(page.locator("#message")).to_be_focused()
    cancelled = 'autogen_requests_total{api="responses",model="slow",outcome="cancelled",stream="true"} 1.0'
    deadline = time.monotonic() + 30
    while cancelled not in (metrics := httpx.get(f"{service.base_url}/metrics").text):
        assert time.monotonic() < deadline, [line for line in metrics.splitlines() if "slow" in line]
        time.sleep(0.2)
    assert network.left == []


def test_the_api_key_is_asked_for_and_kept_in_the_tab_only(
    context: BrowserContext, keyed_service: ServiceProcess, browser: Browser
) -> None:
    page, network = open_playground(context, keyed_service.base_url)
    settings_error = page.locator("#settings-error")
    expect(settings_error).to_contain_text("The service needs an API key")

    page.locator("#api-key").fill("sk-wrong")
    page.locator("#api-key").press("Tab")  # committing the field reloads the list of teams
    expect(settings_error).to_contain_text("The service needs an API key")
    expect(page.locator("#model")).not_to_have_value("demo-team")
    screenshot(page, "playground-401")

    page.locator("#api-key").fill(KEY)
    page.locator("#api-key").press("Tab")
    expect(page.locator("#model")).to_have_value("demo-team")
    expect(settings_error).to_be_hidden()
    headers: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            headers.append(request.headers.get("authorization"))
            if urlsplit(request.url).path in PUBLIC_API
            else None
        ),
    )
    send(page, "What is AutoGen?")
    wait_done(page)
    expect(last_turn(page).locator(".answer-text")).to_contain_text("Review:")
    assert headers and set(headers) == {f"Bearer {KEY}"}  # the conversation, then the response

    storage = page.evaluate(
        "({session: {...sessionStorage}, local: {...localStorage}, cookie: document.cookie})"
    )
    assert storage["session"]["autogen-playground.api-key"] == KEY
    # localStorage holds the list of conversations (ids, titles, models), never the key.
    assert storage["cookie"] == "" and KEY not in json.dumps(storage["local"])
    page.reload()
    expect(page.locator("#api-key")).to_have_value(KEY)  # the same tab keeps it
    expect(page.locator("#model")).to_have_value("demo-team")

    # A key that is not accepted: the list reload's 401 and the chat request's 401, in words.
    page.locator("#api-key").fill("sk-revoked")
    send(page, "Still there?")
    expect(settings_error).to_contain_text("The service needs an API key")
    expect(last_turn(page).locator(".error[role=alert]")).to_contain_text(
        "The service needs an API key, or the key entered is not valid."
    )

    other_tab = browser.new_context()  # a new session: nothing carried over
    try:
        fresh = other_tab.new_page()
        fresh.goto(f"{keyed_service.base_url}/")
        expect(fresh.locator("#settings-error")).to_contain_text("The service needs an API key")
        expect(fresh.locator("#api-key")).to_have_value("")
    finally:
        other_tab.close()
    assert network.left == []


def test_deadline_and_rate_limit_are_shown_in_words(
    context: BrowserContext, strict_service: ServiceProcess
) -> None:
    page, network = open_playground(context, strict_service.base_url)
    expect(page.locator("#model")).to_have_value("demo-team")
    send(page, "What is AutoGen?")
    wait_done(page)
    expect(last_turn(page).locator(".error[role=alert]")).to_contain_text(
        "The team did not finish within the service's time limit and was stopped."
    )
    page.locator("#message").fill("")
    send(page, "Again")
    wait_done(page)
    expect(last_turn(page).locator(".error[role=alert]")).to_contain_text(
        re.compile(r"Too many requests: the service's rate limit was reached\. Try again in \d+ s\.")
    )
    screenshot(page, "playground-deadline-and-429")
    assert network.left == []


def test_the_page_fits_a_narrow_screen(browser: Browser, service: ServiceProcess) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        page, network = open_playground(context, service.base_url)
        expect(page.locator("#model")).to_have_value("demo-team")
        send(page, "What is AutoGen?")
        wait_done(page)
        expect(last_turn(page).locator(".answer-text")).to_contain_text("Review:")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        for control in ("#model", "#api-key", "#message", "#send", "#stop", "#new-chat"):
            box = page.locator(control).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, (control, box)
        # A longer chat: the message box and Send stay on screen wherever the page is scrolled.
        send(page, "And the next step?")
        wait_done(page)
        for scroll in (
            "0",
            "document.documentElement.scrollHeight / 2",
            "document.documentElement.scrollHeight",
        ):
            page.evaluate(f"window.scrollTo(0, {scroll})")
            for control in ("#message", "#send"):
                box = page.locator(control).bounding_box()
                assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 740, (
                    scroll,
                    control,
                    box,
                )
        assert page.evaluate("document.documentElement.scrollHeight") > 740  # it did scroll
        page.screenshot(path=screenshot(page, "playground-360px"))  # the viewport as a phone shows it
        assert_only_this_service(network, service.base_url)
    finally:
        context.close()

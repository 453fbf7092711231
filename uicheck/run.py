"""`make ui-check`: the service behind a real Open WebUI, in a real browser, checked end to end.

Starts the service (or uses ``--target``), a logging proxy in front of it, Open WebUI (offline, as
installed) pointed at the proxy, and Debian's chromium driven through Playwright. Then, as a person would:
a message to ``demo-team`` with Open WebUI's default task model (the control: the proxy must see the extra
team runs), the task model set to the service's ``direct`` model in the admin settings, and a new chat of
two turns. What the page shows is compared with what the service sent (seen through the proxy);
screenshots, the proxy log, the servers' logs and a JSON report go to ``--out``. Everything started here
is stopped on every path (failure, Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Locator, async_playwright

from loadtests.procs import REPO_ROOT, ServerProcess, free_port
from uicheck.browser import ChatPage, Reply, connect, spawn_chromium
from uicheck.checks import Check, check, parse_completion, plain, snippets, task_kind
from uicheck.openwebui import OPENWEBUI_VERSION, OpenWebUIAdmin, openwebui_env, spawn_openwebui
from uicheck.procs import spawn, wait_ready
from uicheck.proxy import EgressTrap, Exchange, LoggingProxy

QUESTION_1 = "What is AutoGen?"
QUESTION_2 = "Who maintains it?"
# What Open WebUI's log says when something tried to reach the internet anyway.
_NETWORK_TROUBLE = re.compile(
    r"Temporary failure in name resolution|Name or service not known|huggingface\.co|"
    r"Failed to establish a new connection|Max retries exceeded",
    re.IGNORECASE,
)


# The operator's shell may set these for their own `make serve`; the check runs the embedded default.
_SERVICE_SETTINGS_IGNORED = (
    "LLM_",
    "API_KEYS",
    "RATE_LIMIT",
    "WORKFLOWS_DIR",
    "STREAM_ACTIVITY",
    "DIRECT_MODEL",
)


@dataclass
class Options:
    target: str | None
    api_key: str | None
    team: str
    direct: str
    out: Path
    ui_venv: Path
    service_venv: Path
    workers: int
    reply_timeout_s: float


@dataclass
class Report:
    openwebui_version: str = OPENWEBUI_VERSION
    target: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    egress_attempts: list[str] = field(default_factory=list)
    browser_external_requests: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, item: Check) -> Check:
        self.checks.append(item)
        print(item.line(), flush=True)
        return item

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)


class Stopwatch:
    def __init__(self, report: Report) -> None:
        self._report = report

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self._report.timings_s[name] = round(time.monotonic() - start, 1)


def _squash(text: str) -> str:
    """Letters and digits only: rendering changes markdown and spacing, never these."""
    return re.sub(r"[\W_]+", "", text).lower()


def spawn_service(opts: Options, api_key: str, metrics_dir: Path, log_path: Path) -> ServerProcess:
    """The service as `make serve` runs it, on a free port, with the direct model on and a key required."""
    exe = opts.service_venv / "bin" / "autogen-service"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run `make install` first")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_SETTINGS_IGNORED)}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": str(opts.workers),
            "DIRECT_MODEL": "on",
            "API_KEYS": api_key,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    return spawn("autogen-service", [str(exe)], env, REPO_ROOT, log_path, port)


async def served_models(base_url: str, api_key: str | None) -> list[str]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"{base_url}/v1/models", headers=headers)
        response.raise_for_status()
        return [m["id"] for m in response.json()["data"]]


def _since(proxy: LoggingProxy, mark: int) -> list[Exchange]:
    return [e for e in proxy.exchanges[mark:] if e.is_chat]


def _turns(exchanges: list[Exchange], model: str) -> list[Exchange]:
    return [e for e in exchanges if e.model == model and task_kind(e.messages) is None]


def _tasks(exchanges: list[Exchange]) -> list[Exchange]:
    return [e for e in exchanges if task_kind(e.messages) is not None]


def _describe_tasks(tasks: list[Exchange]) -> str:
    return ", ".join(f"{task_kind(e.messages)}->{e.model}" for e in tasks) or "none"


def check_reply(report: Report, label: str, exchange: Exchange, reply: Reply) -> None:
    """The page shows the service's answer alone, with the team's activity folded into the reasoning block."""
    sent = parse_completion(exchange.response_text, exchange.stream)
    report.add(
        check(
            f"{label}: the service streamed a complete answer",
            exchange.status == 200
            and exchange.stream
            and sent.done
            and not sent.errors
            and bool(sent.content),
            f"HTTP {exchange.status}, stream={exchange.stream}, [DONE]={sent.done}, "
            f"{len(sent.content)} answer chars, errors={sent.errors or 'none'}",
        )
    )
    report.add(
        check(
            f"{label}: the team's activity came as reasoning, from several agents",
            bool(sent.reasoning) and len(sent.reasoning_agents) >= 2,
            f"{len(sent.reasoning)} reasoning chars from {sent.reasoning_agents or 'no agent'}; "
            f"answer from {sent.content_agents or 'no agent'} (final_answer_agent={sent.final_answer_agent})",
        )
    )
    report.add(
        check(
            f"{label}: the page shows the final answer",
            bool(reply.answer) and _squash(reply.answer) == _squash(sent.content),
            f"shown {plain(reply.answer)[:160]!r} / sent {plain(sent.content)[:160]!r}",
        )
    )
    leaked = [s for s in snippets(sent.reasoning) if _squash(s) in _squash(reply.text)]
    headers = re.findall(r"\*\*[\w-]+:\*\*", sent.content)
    report.add(
        check(
            f"{label}: the answer carries none of the transcript",
            not leaked and not headers and sent.tool_calls == 0,
            f"activity fragments visible: {leaked or 'none'}; "
            f"speaker headers in content: {headers or 'none'}; tool_calls sent: {sent.tool_calls}",
        )
    )
    report.add(
        check(
            f"{label}: the team's work is a folded reasoning block",
            reply.reasoning_label is not None
            and reply.reasoning_label.startswith("Thought for ")
            and reply.reasoning_folded,
            f"block label {reply.reasoning_label!r}, folded={reply.reasoning_folded}",
        )
    )
    if reply.expanded_text:
        wanted = snippets(sent.reasoning)
        missing = [s for s in wanted if _squash(s) not in _squash(reply.expanded_text)]
        agents = [a for a in sent.reasoning_agents if a.lower() in reply.expanded_text.lower()]
        report.add(
            check(
                f"{label}: opened, the block shows the team's work",
                bool(wanted) and not missing,
                f"{len(wanted) - len(missing)}/{len(wanted)} activity fragments found; "
                f"agents named: {agents}; missing: {missing or 'none'}",
            )
        )


async def scenario(
    opts: Options, report: Report, service_url: str, api_key: str | None, stack: contextlib.ExitStack
) -> None:
    out = opts.out
    timer = Stopwatch(report)
    async with (
        EgressTrap() as trap,
        LoggingProxy(service_url, out / "proxy.jsonl") as proxy,
    ):
        data_dir = Path(tempfile.mkdtemp(prefix="ui-check-openwebui-"))
        stack.callback(shutil.rmtree, data_dir, True)  # after Open WebUI has stopped (LIFO)
        page: ChatPage | None = None
        started: list[ServerProcess] = []
        try:
            # As installed: Open WebUI's own default task model ("Current Model", i.e. the chat's model).
            env = openwebui_env(data_dir, f"{proxy.url}/v1", api_key or "none", "", trap.url)
            with timer("openwebui_start"):
                owui = spawn_openwebui(opts.ui_venv, data_dir, env, out / "openwebui.log")
                stack.callback(owui.stop)
                started.append(owui)
                await wait_ready(owui, "/health", 300)
            took = report.timings_s["openwebui_start"]
            print(f"open-webui {OPENWEBUI_VERSION}: {owui.url} (took {took} s)")
            async with OpenWebUIAdmin(owui.url) as admin:
                ids = await admin.model_ids()
                report.add(
                    check(
                        "Open WebUI lists the service's models",
                        opts.team in ids and opts.direct in ids,
                        f"{ids}",
                    )
                )
                chromium, profile = spawn_chromium(out / "chromium.log")
                stack.callback(shutil.rmtree, profile, True)
                stack.callback(chromium.stop)
                started.append(chromium)
                await wait_ready(chromium, "/json/version", 60)
                async with async_playwright() as pw:
                    browser = await connect(pw, chromium)
                    context = await browser.new_context(viewport={"width": 1280, "height": 900})
                    page = ChatPage(context, owui.url, out)
                    await page.start()
                    await control_with_default_task_model(opts, report, page, proxy)
                    await set_task_model_as_an_admin(opts, report, page, admin)
                    await chat_with_direct_task_model(opts, report, page, proxy)
                    await context.close()
        finally:
            # Stopped before the proxy closes, so no stream is left open through it (the ExitStack is a
            # backstop); what was seen is kept whatever happened.
            for server in reversed(started):
                server.stop()
            if page is not None:
                report.browser_external_requests = page.external_requests
            report.requests = [_summary(e) for e in proxy.exchanges]
            report.egress_attempts = list(trap.attempts)
    log_text = (out / "openwebui.log").read_text(errors="replace") if (out / "openwebui.log").exists() else ""
    trouble = sorted({m.group(0) for m in _NETWORK_TROUBLE.finditer(log_text)})
    report.add(
        check(
            "nothing reached for the internet (Open WebUI, its libraries, the browser)",
            not report.egress_attempts and not report.browser_external_requests and not trouble,
            f"proxy-env attempts: {report.egress_attempts or 'none'}; browser: "
            f"{report.browser_external_requests[:5] or 'none'}; Open WebUI log: {trouble or 'clean'}",
        )
    )


async def _send_and_wait(
    opts: Options, page: ChatPage, proxy: LoggingProxy, text: str, count: int
) -> tuple[Locator, float]:
    start = time.monotonic()
    await page.send(text)
    message = await page.wait_reply(count, opts.reply_timeout_s)
    # The title, tags and follow-ups requests run after (or beside) the reply: let them finish too.
    await proxy.wait_idle(quiet_s=3.0, timeout_s=opts.reply_timeout_s)
    return message, round(time.monotonic() - start, 1)


async def set_task_model_as_an_admin(
    opts: Options, report: Report, page: ChatPage, admin: OpenWebUIAdmin
) -> None:
    """Admin Panel > Settings > Interface > Tasks > External Task Model = the direct model, then Save."""
    shot = await page.set_external_task_model(opts.direct, "02-admin-external-task-model.png")
    report.screenshots.append(str(shot))
    config: dict[str, Any] = {}
    for _ in range(50):  # the Save request is asynchronous: up to 10 s for Open WebUI to store it
        config = await admin.task_config()
        if config.get("TASK_MODEL_EXTERNAL") == opts.direct:
            break
        await asyncio.sleep(0.2)
    report.add(
        check(
            "the task model is set to the direct model in Admin Settings > Interface",
            config.get("TASK_MODEL_EXTERNAL") == opts.direct,
            f"Open WebUI stored TASK_MODEL_EXTERNAL={config.get('TASK_MODEL_EXTERNAL')!r}",
        )
    )


async def chat_with_direct_task_model(
    opts: Options, report: Report, page: ChatPage, proxy: LoggingProxy
) -> None:
    mark = len(proxy.exchanges)
    await page.new_chat(opts.team)
    message, took = await _send_and_wait(opts, page, proxy, QUESTION_1, 1)
    report.timings_s["turn_1"] = took
    reply = await page.read_reply(message)
    report.screenshots.append(str(await page.screenshot("03-answer-with-folded-activity.png")))
    await page.expand_reasoning(message, reply)
    report.screenshots.append(str(await page.screenshot("04-activity-expanded.png")))
    await page.collapse_reasoning(message)
    turns = _turns(_since(proxy, mark), opts.team)
    if not turns:
        report.add(
            check("turn 1 reached the service", False, "no chat request for the team went through the proxy")
        )
        return
    first = turns[0]
    report.add(
        check(
            "Open WebUI's tool definitions are ignored, not refused",
            first.status == 200,
            f"the turn carried {first.tool_count} tool definitions; the service answered HTTP {first.status}",
        )
    )
    check_reply(report, "turn 1", first, reply)

    message2, took2 = await _send_and_wait(opts, page, proxy, QUESTION_2, 2)
    report.timings_s["turn_2"] = took2
    reply2 = await page.read_reply(message2)
    report.screenshots.append(str(await page.screenshot("05-second-turn.png")))
    exchanges = _since(proxy, mark)
    turns = _turns(exchanges, opts.team)
    if len(turns) < 2:
        report.add(check("turn 2 reached the service", False, f"{len(turns)} team requests went through"))
        return
    second = turns[1]
    answer_1 = parse_completion(first.response_text, first.stream)
    assistant = [m for m in second.messages if m.get("role") == "assistant"]
    carried = assistant[0] if assistant else {}
    content = carried.get("content") if isinstance(carried.get("content"), str) else ""
    extra_keys = sorted(set(carried) - {"role", "content"})
    report.add(
        check(
            "turn 2 sends back the answer alone as the assistant message",
            len(assistant) == 1 and (content or "").strip() == answer_1.content.strip() and not extra_keys,
            f"{len(assistant)} assistant message(s); {len(content or '')} chars vs "
            f"{len(answer_1.content)} of the answer; other fields: {extra_keys or 'none'}; "
            f"starts {(content or '')[:100]!r}",
        )
    )
    check_reply(report, "turn 2", second, reply2)

    tasks = _tasks(exchanges)
    history_leaks = [
        task_kind(e.messages)
        for e in tasks
        if any(_squash(s) in _squash(json.dumps(e.messages)) for s in snippets(answer_1.reasoning))
    ]
    report.add(
        check(
            "with the task model set to the direct model, no extra team run happens",
            len(turns) == 2 and bool(tasks) and all(e.model == opts.direct for e in tasks),
            f"{len(turns)} {opts.team} runs for 2 messages; background tasks: {_describe_tasks(tasks)}",
        )
    )
    report.add(
        check(
            "the background tasks answered and saw no transcript in the history",
            all(e.status == 200 for e in tasks) and not history_leaks,
            f"statuses {[e.status for e in tasks]}; "
            f"tasks whose prompt held activity text: {history_leaks or 'none'}",
        )
    )


async def control_with_default_task_model(
    opts: Options, report: Report, page: ChatPage, proxy: LoggingProxy
) -> None:
    """Open WebUI's default (task model = the chat's model): the check must see the extra team runs."""
    mark = len(proxy.exchanges)
    await page.new_chat(opts.team)
    _, took = await _send_and_wait(opts, page, proxy, QUESTION_1, 1)
    report.timings_s["control_turn"] = took
    report.screenshots.append(str(await page.screenshot("01-control-default-task-model.png")))
    exchanges = _since(proxy, mark)
    runs = [e for e in exchanges if e.model == opts.team]
    tasks = _tasks(exchanges)
    report.add(
        check(
            "control: with Open WebUI's default task model each background task is one more team run",
            len(runs) > 1 and all(e.model == opts.team for e in tasks),
            f"{len(runs)} {opts.team} runs for 1 message ({len(runs) - 1} extra); "
            f"tasks: {_describe_tasks(tasks)}",
        )
    )


def _summary(e: Exchange) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "method": e.method,
        "path": e.path,
        "model": e.model,
        "stream": e.stream,
        "task": task_kind(e.messages),
        "tools": e.tool_count,
        "status": e.status,
        "seconds": None if e.finished is None else round(e.finished - e.started, 3),
    }


async def amain(opts: Options, report: Report, stack: contextlib.ExitStack) -> None:
    timer = Stopwatch(report)
    api_key = opts.api_key
    if opts.target:
        service_url = opts.target.rstrip("/").removesuffix("/v1")
    else:
        api_key = api_key or f"ui-check-{secrets.token_hex(16)}"
        metrics_dir = Path(tempfile.mkdtemp(prefix="ui-check-metrics-"))
        stack.callback(shutil.rmtree, metrics_dir, True)
        with timer("service_start"):
            service = spawn_service(opts, api_key, metrics_dir, opts.out / "service.log")
            stack.callback(service.stop)
            await wait_ready(service, "/readyz", 120)
        service_url = service.url
        print(f"autogen-service: {service_url} (took {report.timings_s['service_start']} s)")
    report.target = service_url
    ids = await served_models(service_url, api_key)
    missing = [m for m in (opts.team, opts.direct) if m not in ids]
    if missing:
        hint = " (start the service with DIRECT_MODEL=on)" if opts.direct in missing else ""
        report.add(
            check("the service lists the models the check uses", False, f"missing {missing} in {ids}{hint}")
        )
        return
    await scenario(opts, report, service_url, api_key, stack)


def write_report(report: Report, out: Path) -> Path:
    path = out / "report.json"
    data = asdict(report)
    data["passed"] = report.passed
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m uicheck", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    ap.add_argument("--target", default="", help="a running service (base URL); default: start one")
    ap.add_argument("--api-key", default="", help="the key for --target, when it requires one")
    ap.add_argument("--team", default="demo-team")
    ap.add_argument("--direct", default="direct", help="the service's plain model, used as the task model")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "ui-check")
    ap.add_argument("--ui-venv", type=Path, default=REPO_ROOT / ".ui-venv")
    ap.add_argument("--service-venv", type=Path, default=REPO_ROOT / ".venv")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reply-timeout", type=float, default=180.0, help="seconds to wait for one reply")
    a = ap.parse_args(argv)
    return Options(
        target=a.target or None,
        api_key=a.api_key or None,
        team=a.team,
        direct=a.direct,
        out=a.out.resolve(),
        ui_venv=a.ui_venv.resolve(),
        service_venv=a.service_venv.resolve(),
        workers=a.workers,
        reply_timeout_s=a.reply_timeout,
    )


_signalled: list[str] = []


def _interrupt(signum: int, frame: object) -> None:
    # Ctrl-C and SIGTERM (a killed make, a CI timeout) take one path: every `finally` and the ExitStack
    # run. The name is kept because the interrupt may surface as another error (Playwright's driver, in
    # the same process group, dies of the same Ctrl-C and closes the page under a waiting locator).
    first = not _signalled
    _signalled.append(signal.Signals(signum).name)
    if first:  # a second Ctrl-C does not cut the clean-up short (every stop is bounded in time)
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    shutil.rmtree(opts.out, ignore_errors=True)
    opts.out.mkdir(parents=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    report = Report()
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            asyncio.run(amain(opts, report, stack))
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            if not _signalled:
                print(f"ui-check failed: {report.error}", file=sys.stderr)
        if _signalled:
            report.error = f"interrupted ({_signalled[0]})"
            print(f"{report.error}: stopping everything the check started", file=sys.stderr)
    report.timings_s["check_total"] = round(time.monotonic() - start, 1)
    path = write_report(report, opts.out)
    print()
    print("timings (s): " + ", ".join(f"{k}={v}" for k, v in report.timings_s.items()))
    for shot in report.screenshots:
        print(f"screenshot: {shot}")
    print(f"report: {path}")
    passed = sum(c.ok for c in report.checks)
    failed = len(report.checks) - passed
    print(f"ui-check: {passed} passed, {failed} failed" + (f" ({report.error})" if report.error else ""))
    return 0 if report.passed else 1

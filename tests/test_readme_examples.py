"""Every code block of README.md, run as a reader runs it.

The blocks are read from README.md itself, so an edited example is tested as edited:
- "The two commands": `make serve` is run for real in a folder that stands for the reader's checkout
  (the Makefile, `mk/`, `pyproject.toml`, `requirements.lock` and `.venv` linked from this one, so
  nothing is written into the repository), on a free port; the other examples run against that
  served embedded default.
- "Use it": the curl lines and every Python block (the official `openai` SDK, the Responses API, the
  OpenAI Agents SDK) run unchanged but for the address, each in a fresh `.venv/bin/python`.
- "Add a team": its script writes `workflows/research-team.json`, its shell line serves that folder,
  and the new team answers through the SDK; docs/responses.md's human-input team is served beside it
  and its client example runs as written.
- `make` targets that build or test (`make test`, `make image`, `make image-test`, `make k8s-check`)
  are the suite and `.ci/run` themselves: here they are dry-run (`make -n`), which proves that each is
  a target and runs what the README says.
A block of any other kind fails `test_every_readme_block_has_a_runner`: give it a runner here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from packaging.requirements import Requirement

from tests.helpers.server import REPO_ROOT, service_env
from tests.helpers.shell import serving_shell

pytestmark = pytest.mark.timeout(240)

README = REPO_ROOT / "README.md"
RESPONSES_DOC = REPO_ROOT / "docs" / "responses.md"
CHECKOUT_FILES = ("Makefile", "mk", "pyproject.toml", "requirements.lock", ".venv")
README_ADDRESS = "http://127.0.0.1:8000"
MAKE_COMMAND = re.compile(r"^(?P<env>(?:[A-Z_]+=\S+ )*)make (?P<target>[\w-]+)$")
# What each dry-run target must run: the proof that the README's one-line description holds.
MAKE_DRY_RUNS = {
    "test": "pytest",
    "image": "deploy/image/build.sh",
    "image-test": "tests/test_image.py",
    "k8s-check": "tests/test_deploy.py",
}
# What each "Use it" Python block must print, keyed by a call only that block makes.
USE_IT_OUTPUT = {
    "client.chat.completions.create": ("Review: the draft answers", "completion_tokens="),
    "client.responses.create": ("Review: the draft answers", "total_tokens=", "message assistant"),
    "Runner.run": ("Review: the draft answers",),
}
DEMO_TEAM_ANSWER = "Review: the draft answers"


@dataclass(frozen=True)
class Block:
    section: str  # the `## ` heading the block is under
    language: str
    code: str


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file that start at the line's beginning, with their section."""
    blocks: list[Block] = []
    section = ""
    fence = re.compile(r"^```(?P<language>\w*)\n(?P<code>.*?)^```$", re.DOTALL | re.MULTILINE)
    for part in re.split(r"^(?=## )", path.read_text(encoding="utf-8"), flags=re.MULTILINE):
        if part.startswith("## "):
            section = part.splitlines()[0][3:].strip()
        blocks += [Block(section, m["language"], m["code"]) for m in fence.finditer(part)]
    return blocks


def shell_commands(code: str) -> list[str]:
    """A bash block's commands, each on one line: continuations and open quotes joined, comments dropped."""
    commands: list[str] = []
    pending = ""
    for line in code.splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending.replace("\\\n", " "), comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        if pending.rstrip().endswith("\\"):
            continue
        if words:
            commands.append(" ".join(words))
        pending = ""
    assert not pending.strip(), f"unfinished command: {pending}"
    return commands


def readme_blocks(section: str, language: str) -> list[Block]:
    return [block for block in code_blocks(README) if block.section == section and block.language == language]


def make_env(tmp_path: Path) -> dict[str, str]:
    """The service's test environment for a make of its own, as a reader's shell runs it."""
    return {
        key: value
        for key, value in service_env(tmp_path).items()
        if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }


def reader_checkout(folder: Path) -> Path:
    # `make serve` must not try to reinstall into the linked venv from the stand-in checkout.
    stamp = subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO_ROOT, capture_output=True)
    if stamp.returncode != 0:
        pytest.fail("the .venv is older than pyproject.toml: run `make dev` first")
    folder.mkdir()
    for name in CHECKOUT_FILES:
        (folder / name).symlink_to(REPO_ROOT / name)
    return folder


def run_python(code: str, cwd: Path, base_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """A block as a reader runs it with the checkout's `.venv/bin/python`, pointed at `base_url`."""
    if base_url is not None:
        code = code.replace(README_ADDRESS, base_url)
    return subprocess.run(
        [str(cwd / ".venv" / "bin" / "python"), "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def served_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The two commands' `make serve`, run as written; yields the checkout and the base URL."""
    tmp_path = tmp_path_factory.mktemp("readme")
    (block,) = readme_blocks("The two commands", "bash")
    (serve,) = [command for command in shell_commands(block.code) if command == "make serve"]
    checkout = reader_checkout(tmp_path / "checkout")
    with serving_shell(serve, checkout, make_env(tmp_path), tmp_path / "make-serve.log") as base_url:
        yield checkout, base_url


def test_every_readme_block_has_a_runner() -> None:
    runners = {
        ("The two commands", "bash"),
        ("Use it", "bash"),
        ("Use it", "python"),
        ("Add a team", "bash"),
        ("Add a team", "python"),
        ("Deploy", "bash"),
    }
    blocks = code_blocks(README)
    assert len(blocks) >= 8, blocks
    for block in blocks:
        assert (block.section, block.language) in runners, f"no test runs this README block: {block}"
        if block.language != "bash":
            continue
        for command in shell_commands(block.code):
            made = MAKE_COMMAND.match(command)
            if made:
                target = made["target"]
                assert target == "serve" or target in MAKE_DRY_RUNS, f"no test runs `{command}`"
            else:
                assert command.startswith("curl "), f"no test runs `{command}` ({block.section})"


def test_make_serve_serves_the_embedded_default(served_default: tuple[Path, str]) -> None:
    _, base_url = served_default
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    assert {"echo", "demo-team"} <= {model.id for model in client.models.list()}


def test_the_curl_examples_work_as_written(served_default: tuple[Path, str]) -> None:
    checkout, base_url = served_default
    (block,) = readme_blocks("Use it", "bash")
    script = block.code.replace(README_ADDRESS, base_url)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=checkout, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    models, _, stream = result.stdout.partition("}]}")
    assert '"demo-team"' in models and '"object":"list"' in models, models
    events = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", stream[-500:]
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    answer = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert answer.startswith(DEMO_TEAM_ANSWER), answer


@pytest.mark.parametrize("call", sorted(USE_IT_OUTPUT))
def test_the_python_examples_work_as_written(served_default: tuple[Path, str], call: str) -> None:
    checkout, base_url = served_default
    blocks = readme_blocks("Use it", "python")
    assert all(sum(key in block.code for key in USE_IT_OUTPUT) == 1 for block in blocks), (
        "each Use it example needs exactly one entry in USE_IT_OUTPUT"
    )
    (block,) = [block for block in blocks if call in block.code]
    result = run_python(block.code, checkout, base_url)
    assert result.returncode == 0, result.stderr[-3000:]
    for expected in USE_IT_OUTPUT[call]:
        assert expected in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize("target", sorted(MAKE_DRY_RUNS))
def test_the_make_targets_named_in_the_readme_exist(target: str) -> None:
    named = {
        made["target"]
        for block in code_blocks(README)
        if block.language == "bash"
        for command in shell_commands(block.code)
        if (made := MAKE_COMMAND.match(command))
    }
    if target not in named:
        pytest.skip(f"the README no longer names `make {target}`")
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(
        ["make", "-n", target], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert MAKE_DRY_RUNS[target] in dry.stdout, dry.stdout


def test_the_add_a_team_example_works_as_written(tmp_path: Path) -> None:
    (script,) = readme_blocks("Add a team", "python")
    (shell,) = readme_blocks("Add a team", "bash")
    (command,) = shell_commands(shell.code)
    # docs/responses.md's human-input example: a team file, and a client that answers its question.
    support_script, support_client = [
        block.code for block in code_blocks(RESPONSES_DOC) if block.section == "A person's input"
    ]

    checkout = reader_checkout(tmp_path / "checkout")
    for code in (script.code, support_script):
        written = run_python(code, checkout)
        assert written.returncode == 0, written.stderr
    assert (checkout / "workflows" / "research-team.json").is_file()
    assert (checkout / "workflows" / "support-team.json").is_file()

    log = tmp_path / "make-serve.log"
    with serving_shell(command, checkout, make_env(tmp_path), log) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        models = {model.id: model for model in client.models.list()}
        assert {"research-team", "support-team"} <= set(models), f"not loaded:\n{log.read_text()[-3000:]}"
        assert models["research-team"].model_extra["description"].startswith("A researcher answers")

        # The run ends after the critic's answer, also when the user writes the word TERMINATE.
        for question in ("What is AutoGen?", "What is AutoGen? TERMINATE"):
            answer = client.chat.completions.create(
                model="research-team", messages=[{"role": "user", "content": question}]
            )
            assert answer.choices[0].finish_reason == "stop"
            assert answer.choices[0].message.content.startswith(DEMO_TEAM_ANSWER), answer

        stream = client.chat.completions.create(
            model="research-team",
            messages=[{"role": "user", "content": "What is AutoGen?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert DEMO_TEAM_ANSWER in streamed
        assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        # The helper asks, the response carries input_required, the next turn answers it.
        answered = run_python(support_client, checkout, base_url)
        assert answered.returncode == 0, answered.stderr[-3000:]
        question, answer_after = answered.stdout.strip().splitlines()
        assert 'you asked "I want a refund."' in question, answered.stdout
        assert answer_after, answered.stdout


# Pages another branch writes: a link to one of them is checked once the page exists.
PENDING_PAGES: set[str] = set()
LINKED_PAGES = [README, REPO_ROOT / "loadtests" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped, `-` for spaces)."""
    text = re.sub(r"^```.*?^```$", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_links_between_the_docs_resolve(page: Path) -> None:
    text = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            if str(linked.relative_to(REPO_ROOT)) not in PENDING_PAGES:
                broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO_ROOT)}: broken links {broken}"


def test_what_the_readme_says_to_pip_install_is_what_the_examples_were_tested_with() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {
        Requirement(line).name: Requirement(line)
        for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    }
    named = re.findall(r"pip install ([A-Za-z0-9_.\-\[\]=]+)", README.read_text(encoding="utf-8"))
    assert named, "the README names no package to install"
    for text in named:
        wanted = Requirement(text)
        assert wanted.name in pins, f"`pip install {text}`: not in pyproject.toml, so no test ran with it"
        assert not wanted.specifier or wanted.specifier == pins[wanted.name].specifier, (
            f"`pip install {text}`: pyproject.toml pins {pins[wanted.name]}"
        )

"""Real client libraries against a real server: what each one keeps as the answer, and where the
team's work goes. LangChain's `ChatOpenAI` keeps only OpenAI's own fields: it must get the answer
alone as content (it would store a transcript as the answer); `ChatDeepSeek`, LangChain's class for
servers that send `reasoning_content`, gets the team's work beside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_deepseek import ChatDeepSeek
from langchain_openai import ChatOpenAI

from tests.helpers.server import ServiceProcess, start_service

QUESTION = "What is AutoGen?"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with start_service(tmp_path_factory.mktemp("clients")) as process:
        yield process


def answer_and_activity(chunks: list[object]) -> tuple[str, str]:
    content = "".join(str(getattr(chunk, "content", "")) for chunk in chunks)
    activity = "".join(
        str(getattr(chunk, "additional_kwargs", {}).get("reasoning_content") or "") for chunk in chunks
    )
    return content, activity


def test_langchain_chat_openai_streams_the_answer_alone(service: ServiceProcess) -> None:
    model = ChatOpenAI(model="demo-team", base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0)
    content, _ = answer_and_activity(list(model.stream(QUESTION)))
    whole = model.invoke(QUESTION)
    assert content == whole.content  # what LangChain stores as the answer, streamed or not
    assert content.startswith("Review:") and "Plan for" not in content and "**planner" not in content


def test_langchain_reasoning_client_gets_the_teams_work_beside_the_answer(service: ServiceProcess) -> None:
    model = ChatDeepSeek(
        model="demo-team", api_base=f"{service.base_url}/v1", api_key="unused", max_retries=0
    )
    content, activity = answer_and_activity(list(model.stream(QUESTION)))
    assert content.startswith("Review:") and "**planner" not in content
    assert activity.index("**planner:**") < activity.index("**writer:**")
    whole = model.invoke(QUESTION)
    assert whole.content == content
    assert whole.additional_kwargs["reasoning_content"].startswith("**planner:**")

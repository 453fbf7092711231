"""What a chat-completions request gives its run besides the messages' text: its images (checked,
loaded, `service.serving.images`) and the answer's format (`service.serving.answer_format`)."""

from __future__ import annotations

from autogen_agentchat.messages import BaseChatMessage

from service.config import Settings
from service.contract.chat import Input
from service.runs.execute import Runner
from service.serving.answer_format import with_answer_format
from service.serving.images import chat_images, load_images, refuse_blind_team
from service.serving.task import to_task


async def chat_run_inputs(
    inp: Input, runner: Runner, settings: Settings
) -> tuple[list[BaseChatMessage], Runner]:
    """The task of `inp` for `runner`, and the runner that honours its `response_format`.

    Raises:
        OpenAIError: 400 naming the parameter: an image the team cannot see or that cannot be
            loaded, a `response_format` none of its models can write.
    """
    images = chat_images(inp.messages)
    refuse_blind_team(runner, images)
    runner = with_answer_format(runner, inp.answer_format, "response_format")
    task = to_task(inp.messages, await load_images(images, settings))
    return task, runner

"""Run events: every AgentChat message and event type maps onto one, nothing is dropped, and the
transcript keeps parallel agents' turns whole."""

from __future__ import annotations

from typing import Any

import pytest
from autogen_agentchat.messages import (
    BaseAgentEvent,
    CodeExecutionEvent,
    CodeGenerationEvent,
    HandoffMessage,
    MemoryQueryEvent,
    MessageFactory,
    ModelClientStreamingChunkEvent,
    MultiModalMessage,
    SelectorEvent,
    SelectSpeakerEvent,
    StopMessage,
    StructuredMessage,
    TextMessage,
    ThoughtEvent,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
    UserInputRequestedEvent,
)
from autogen_core import FunctionCall, Image
from autogen_core.code_executor import CodeBlock, CodeResult
from autogen_core.memory import MemoryContent
from autogen_core.models import FunctionExecutionResult
from pydantic import BaseModel

from service.encoders.transcript import ACTIVITY, ANSWER, Projection
from service.runs.agentchat import AgentChatTranslator
from service.runs.events import (
    Activity,
    AgentTurnEnded,
    AgentTurnStarted,
    CodeExecuted,
    CodeGenerated,
    FinalAnswer,
    Handoff,
    InputRequested,
    MemoryQueried,
    ModelUsage,
    RunEvent,
    RunStarted,
    SpeakerSelected,
    TextDelta,
    Thought,
    ThoughtDelta,
    ThoughtEnded,
    ToolCallRequested,
    ToolResult,
)


class Verdict(BaseModel):
    approved: bool


CALL = FunctionCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
RESULT = FunctionExecutionResult(content="Sunny", name="get_weather", call_id="c1", is_error=False)
SAMPLES: dict[str, tuple[Any, type]] = {
    "TextMessage": (TextMessage(source="a", content="hello"), TextDelta),
    "MultiModalMessage": (
        MultiModalMessage(
            source="a",
            content=[
                "look",
                Image.from_base64(
                    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
                ),
            ],
        ),
        TextDelta,
    ),
    "StructuredMessage": (StructuredMessage[Verdict](source="a", content=Verdict(approved=True)), TextDelta),
    "StopMessage": (StopMessage(source="a", content="stop"), Activity),
    "HandoffMessage": (HandoffMessage(source="a", target="b", content="over to b"), Handoff),
    "ToolCallSummaryMessage": (
        ToolCallSummaryMessage(source="a", content="Sunny", tool_calls=[CALL], results=[RESULT]),
        AgentTurnEnded,
    ),
    "ToolCallRequestEvent": (ToolCallRequestEvent(source="a", content=[CALL]), ToolCallRequested),
    "ToolCallExecutionEvent": (ToolCallExecutionEvent(source="a", content=[RESULT]), ToolResult),
    "ThoughtEvent": (ThoughtEvent(source="a", content="hmm"), Thought),
    "ModelClientStreamingChunkEvent": (ModelClientStreamingChunkEvent(source="a", content="tok"), TextDelta),
    "UserInputRequestedEvent": (UserInputRequestedEvent(source="a", request_id="r"), InputRequested),
    "MemoryQueryEvent": (
        MemoryQueryEvent(source="a", content=[MemoryContent(content="likes teal", mime_type="text/plain")]),
        MemoryQueried,
    ),
    "CodeGenerationEvent": (
        CodeGenerationEvent(
            source="a",
            content="```python\nprint(1)\n```",
            code_blocks=[CodeBlock(code="print(1)", language="python")],
            retry_attempt=0,
        ),
        CodeGenerated,
    ),
    "CodeExecutionEvent": (
        CodeExecutionEvent(source="a", result=CodeResult(exit_code=0, output="1"), retry_attempt=0),
        CodeExecuted,
    ),
    "SelectSpeakerEvent": (SelectSpeakerEvent(source="manager", content=["a"]), SpeakerSelected),
    "SelectorEvent": (SelectorEvent(source="manager", content="thinking"), Activity),
}


def test_every_agentchat_type_is_in_the_samples() -> None:
    registered = set(MessageFactory()._message_types)  # every type AgentChat 0.7.5 knows
    assert registered <= set(SAMPLES), registered - set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_agentchat_type_maps_onto_a_run_event(name: str) -> None:
    message, expected = SAMPLES[name]
    translator = AgentChatTranslator(members=frozenset({"a", "b"}))
    events = translator.message(message) + translator.close_turns()  # nothing held back
    assert any(isinstance(event, expected) for event in events), events


def test_an_unknown_type_becomes_an_activity_nothing_is_dropped() -> None:
    class PlanApproved(BaseAgentEvent):
        content: str = "plan approved"

        def to_text(self) -> str:
            return self.content

    events = AgentChatTranslator(members=frozenset({"a"})).message(PlanApproved(source="a"))
    assert events == [Activity("a", "PlanApproved", "plan approved")]


def test_the_requests_own_messages_are_never_the_answer() -> None:
    earlier = TextMessage(source="assistant", content="An earlier answer.")
    translator = AgentChatTranslator(members=frozenset({"a"}), task_message_ids=frozenset({id(earlier)}))
    assert translator.message(earlier) == []
    handoff = HandoffMessage(source="a", target="user", content="Transferred to user.")
    translator.message(handoff)
    answer = translator.final_answer()
    assert answer.text != "An earlier answer." and translator.input_request is not None


def test_text_before_a_tool_call_is_not_the_answer() -> None:
    translator = AgentChatTranslator(members=frozenset({"a"}))
    for token in ("Let me ", "look that up."):
        translator.token("a", token)
    translator.message(ThoughtEvent(source="a", content="Let me look that up."))  # streamed: not repeated
    translator.message(ToolCallRequestEvent(source="a", content=[CALL]))
    translator.message(ToolCallExecutionEvent(source="a", content=[RESULT]))
    for token in ("It is ", "sunny."):
        translator.token("a", token)
    events = translator.message(TextMessage(source="a", content="It is sunny."))
    assert not any(isinstance(event, TextDelta) and event.text == "It is sunny." for event in events)
    assert translator.final_answer() == FinalAnswer("a", "It is sunny.")


def transcript(events: list[RunEvent], mode: Any = "reasoning") -> tuple[str, str]:
    projection = Projection(mode)
    answer, activity = [], []
    for event in events:
        if isinstance(event, RunStarted):
            projection.start(event)
        for piece in projection.feed(event):
            (answer if piece.channel == ANSWER else activity).append(piece.text)
    return "".join(answer), "".join(activity)


def test_parallel_agents_turns_stay_whole_in_the_transcript() -> None:
    interleaved: list[RunEvent] = [RunStarted("r", "graph", ("left", "right"))]
    interleaved += [AgentTurnStarted("left"), AgentTurnStarted("right")]
    for index in range(3):
        interleaved += [TextDelta("left", f" L{index}"), TextDelta("right", f" R{index}")]
    interleaved += [AgentTurnEnded("right"), AgentTurnEnded("left"), FinalAnswer("left", "done")]
    answer, activity = transcript(interleaved)
    assert activity == "**left:**  L0 L1 L2\n\n**right:**  R0 R1 R2"
    assert answer == "done"


@pytest.mark.parametrize(
    ("mode", "answer", "activity"),
    [
        ("reasoning", "The answer.", "**planner:** plan\n\n**reviewer** writes the answer.\n"),
        ("content", "**planner:** plan\n\n**reviewer:** The answer.", ""),
        ("none", "The answer.", ""),
    ],
)
def test_the_three_activity_modes(mode: str, answer: str, activity: str) -> None:
    events: list[RunEvent] = [
        RunStarted("r", "team", ("planner", "reviewer"), live_answer_agent="reviewer"),
        AgentTurnStarted("planner"),
        TextDelta("planner", "plan"),
        AgentTurnEnded("planner"),
        AgentTurnStarted("reviewer"),
        TextDelta("reviewer", "The answer."),
        AgentTurnEnded("reviewer"),
        FinalAnswer("reviewer", "The answer."),
    ]
    assert transcript(events, mode) == (answer, activity)


def test_activity_pieces_carry_the_structured_event() -> None:
    projection = Projection("reasoning")
    pieces = projection.feed(ToolCallRequested("a", "c1", "get_weather", '{"city": "Paris"}'))
    assert pieces[0].channel == ACTIVITY
    assert pieces[0].activity == {
        "type": "tool_call",
        "agent": "a",
        "call_id": "c1",
        "tool": "get_weather",
        "arguments": '{"city": "Paris"}',
    }


R1_OUTPUT = "<think>SECRET-CHAIN the user wants 3+4.</think>The answer is 7."


def run_tokens(translator: AgentChatTranslator, agent: str, tokens: list[str]) -> list[RunEvent]:
    """A streamed model call of `agent`: its tokens, then its end (usage)."""
    events: list[RunEvent] = []
    for token in tokens:
        events += translator.token(agent, token)
    events += translator.model_call(agent, "m", 1, len(tokens), "stop")
    return events


def texts(events: list[RunEvent], kind: type) -> str:
    return "".join(event.text for event in events if isinstance(event, kind))


@pytest.mark.parametrize("cut", range(1, len(R1_OUTPUT)))
def test_streamed_reasoning_is_a_thought_however_the_tokens_split(cut: int) -> None:
    translator = AgentChatTranslator(members=frozenset({"r1"}), live_answer_agent="r1")
    events = run_tokens(translator, "r1", [R1_OUTPUT[:cut], R1_OUTPUT[cut:]])
    # What AgentChat then reports of the call: the thought, then the message without it.
    events += translator.message(ThoughtEvent(source="r1", content="SECRET-CHAIN the user wants 3+4."))
    events += translator.message(TextMessage(source="r1", content="The answer is 7."))
    events += translator.finish()
    assert texts(events, TextDelta) == "The answer is 7."
    assert texts(events, ThoughtDelta) == "SECRET-CHAIN the user wants 3+4."
    assert [type(event) for event in events].count(ThoughtEnded) == 1
    assert not any(isinstance(event, Thought) for event in events)
    assert translator.final_answer() == FinalAnswer("r1", "The answer is 7.")


def test_upstream_reasoning_content_as_agentchat_hands_it_on_is_a_thought() -> None:
    # AgentChat's OpenAI client turns `reasoning_content` deltas into `<think>` + deltas + `</think>`.
    translator = AgentChatTranslator(members=frozenset({"r1"}), live_answer_agent="r1")
    tokens = ["<think>SECRET-CHAIN", " the user", " wants 3+4.", "</think>", "The answer", " is 7."]
    events = run_tokens(translator, "r1", tokens)
    events += translator.message(ThoughtEvent(source="r1", content="SECRET-CHAIN the user wants 3+4."))
    events += translator.message(TextMessage(source="r1", content="The answer is 7."))
    assert texts(events, TextDelta) == "The answer is 7."
    assert texts(events, ThoughtDelta) == "SECRET-CHAIN the user wants 3+4."


def test_reasoning_left_in_a_whole_message_is_a_thought() -> None:
    translator = AgentChatTranslator(members=frozenset({"a"}))
    events = translator.message(TextMessage(source="a", content=R1_OUTPUT)) + translator.close_turns()
    assert [(type(event), getattr(event, "text", None)) for event in events] == [
        (AgentTurnStarted, None),
        (Thought, "SECRET-CHAIN the user wants 3+4."),
        (TextDelta, "The answer is 7."),
        (AgentTurnEnded, None),
    ]
    assert translator.final_answer() == FinalAnswer("a", "The answer is 7.")


def test_a_call_cut_while_thinking_has_no_answer_text() -> None:
    translator = AgentChatTranslator(members=frozenset({"r1"}), live_answer_agent="r1")
    events = run_tokens(translator, "r1", ["<think>still", " thinking"])
    assert texts(events, ThoughtDelta) == "still thinking"
    assert ThoughtEnded("r1") in events and not texts(events, TextDelta)


@pytest.mark.parametrize("mode", ["reasoning", "content", "none"])
def test_a_streamed_thought_reads_as_a_whole_one(mode: str) -> None:
    start = RunStarted("r", "solo", ("r1",), live_answer_agent="r1")
    streamed: list[RunEvent] = [start, AgentTurnStarted("r1"), ThoughtDelta("r1", "Hmm,")]
    streamed += [
        ThoughtDelta("r1", " 7."),
        ThoughtEnded("r1"),
        TextDelta("r1", "7"),
        AgentTurnEnded("r1"),
        FinalAnswer("r1", "7"),
    ]
    whole: list[RunEvent] = [start, AgentTurnStarted("r1"), Thought("r1", "Hmm, 7."), TextDelta("r1", "7")]
    whole += [AgentTurnEnded("r1"), FinalAnswer("r1", "7")]
    assert transcript(streamed, mode) == transcript(whole, mode)


@pytest.mark.parametrize("target", ["manager", "billing"])
def test_a_run_that_ends_at_a_handoff_answers_with_the_text_beside_it(target: str) -> None:
    translator = AgentChatTranslator(members=frozenset({"clerk", "billing"}))
    translator.message(TextMessage(source="clerk", content="An earlier reply."))
    translator.message(ThoughtEvent(source="clerk", content="This needs a manager."))
    translator.message(HandoffMessage(source="clerk", target=target, content="Transferred."))
    assert translator.final_answer() == FinalAnswer("clerk", "This needs a manager.")


def test_a_silent_handoff_out_of_the_team_answers_with_its_message() -> None:
    translator = AgentChatTranslator(members=frozenset({"clerk"}))
    translator.message(HandoffMessage(source="clerk", target="manager", content="Over to a manager."))
    assert translator.final_answer() == FinalAnswer("clerk", "Over to a manager.")


def shown(events: list[RunEvent]) -> list[tuple[str, str]]:
    """What the events show: (type, agent or text) in order, model usage left out."""
    return [
        (type(event).__name__, getattr(event, "text", None) or getattr(event, "agent", ""))
        for event in events
        if not isinstance(event, ModelUsage)
    ]


def test_a_tool_agents_answer_is_left_out_of_the_activity() -> None:
    translator = AgentChatTranslator(members=frozenset({"a"}))  # tools: no live answer agent
    events = translator.call_started() + run_tokens(translator, "a", ["Let me ", "look that up."])
    events += translator.message(ThoughtEvent(source="a", content="Let me look that up."))
    events += translator.message(ToolCallRequestEvent(source="a", content=[CALL]))
    events += translator.message(ToolCallExecutionEvent(source="a", content=[RESULT]))
    events += translator.call_started() + run_tokens(translator, "a", ["It is ", "sunny."])
    events += translator.message(TextMessage(source="a", content="It is sunny."))
    events += translator.finish()
    assert shown(events) == [
        ("AgentTurnStarted", "a"),
        ("TextDelta", "Let me look that up."),  # held back until the tool call showed it is not
        ("ToolCallRequested", "a"),
        ("ToolResult", "a"),
        ("AgentTurnEnded", "a"),
        ("FinalAnswer", "It is sunny."),
    ]


def test_held_text_joins_the_activity_when_the_next_model_call_starts() -> None:
    translator = AgentChatTranslator(members=frozenset({"a", "b"}))
    events = run_tokens(translator, "a", ["A draft."])
    events += translator.message(TextMessage(source="a", content="A draft."))
    assert shown(events) == [("AgentTurnStarted", "a")]
    events = translator.call_started()
    assert shown(events) == [("TextDelta", "A draft."), ("AgentTurnEnded", "a")]
    events = run_tokens(translator, "b", ["Final."])
    events += translator.message(TextMessage(source="b", content="Final."))
    events += translator.finish()
    assert shown(events) == [("AgentTurnStarted", "b"), ("AgentTurnEnded", "b"), ("FinalAnswer", "Final.")]


def test_the_text_beside_a_final_handoff_is_the_answer_not_activity() -> None:
    translator = AgentChatTranslator(members=frozenset({"clerk"}))
    events = translator.message(ThoughtEvent(source="clerk", content="This needs a manager."))
    events += translator.message(HandoffMessage(source="clerk", target="manager", content="Transferred."))
    events += translator.finish()
    assert shown(events) == [
        ("AgentTurnStarted", "clerk"),
        ("Handoff", "Transferred."),
        ("AgentTurnEnded", "clerk"),
        ("FinalAnswer", "This needs a manager."),
    ]


@pytest.mark.parametrize(
    ("mode", "answer", "activity"),
    [
        ("reasoning", "Final.", "**a:** A draft.\n\n**b:** gives the answer.\n"),
        ("content", "**a:** A draft.\n\n**b:** Final.", ""),
    ],
)
def test_a_turn_that_only_gave_the_answer_says_so(mode: str, answer: str, activity: str) -> None:
    events: list[RunEvent] = [RunStarted("r", "team", ("a", "b")), AgentTurnStarted("a")]
    events += [TextDelta("a", "A draft."), AgentTurnEnded("a"), AgentTurnStarted("b"), AgentTurnEnded("b")]
    events += [FinalAnswer("b", "Final.")]
    assert transcript(events, mode) == (answer, activity)

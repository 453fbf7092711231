"""The service's lean agent runtime: autogen-core's `AgentRuntime` protocol, dispatching directly.

AgentChat's `SingleThreadedAgentRuntime` puts every message in an envelope on a queue that one loop
task drains; per delivery it opens tracing blocks, serializes the message to JSON (for OTel
attributes and an event-log record) and formats an info log line, whether anyone listens or not.
That is about half the instructions of a team run (docs/runtime.md). This runtime keeps what a team
relies on and drops the rest:

- `publish_message` starts one task per recipient at once, in publish order (the order in which the
  sequential agents of AgentChat take their FIFO locks, so the order of a conversation is kept);
  the publisher is never its own recipient. No queue, no serialization, no telemetry, no log lines.
- `send_message` (RPC) runs the handler in its own task and returns its result or raises its error.
- Within a run (`run_scope`), every task it starts is cancelled with the run's cancellation token;
  a handler's unhandled exception (which the default runtime, as teams configure it, raises when it
  next goes idle) is kept, cancels the run's token, and is raised by the team as the default one
  does (`service.workflows.lean_teams`); when the run ends no task of it is left: on a normal end
  they are awaited (as the default runtime's `stop_when_idle`), on any other end cancelled.
- No intervention handlers (a team loaded from JSON cannot have any) and no message serializers
  (nothing crosses a process boundary): `add_message_serializer` accepts and ignores them.

One runtime serves one team instance (a fresh team per request), like the default embedded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast, overload

from autogen_core import (
    Agent,
    AgentId,
    AgentInstantiationContext,
    AgentMetadata,
    AgentRuntime,
    AgentType,
    CancellationToken,
    MessageContext,
    MessageHandlerContext,
    MessageSerializer,
    Subscription,
    TopicId,
)

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Agent)
AgentFactory = Callable[[], Agent | Awaitable[Agent]]

# How long the tasks of a run that ended other than normally may take to honour their cancellation.
CANCEL_GRACE_S = 5.0


class LeanAgentRuntime(AgentRuntime):
    """An `AgentRuntime` for one team: direct dispatch, one task per delivery (module docstring)."""

    def __init__(self) -> None:
        self._factories: dict[str, tuple[AgentFactory, type[Agent] | None]] = {}
        self._agents: dict[AgentId, Agent] = {}
        self._subscriptions: list[Subscription] = []
        self._recipients: dict[TopicId, tuple[AgentId, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count()
        self._run_token: CancellationToken | None = None
        self._failure: BaseException | None = None

    # --- a run ------------------------------------------------------------------------------
    @property
    def failure(self) -> BaseException | None:
        """The first unhandled exception of a published message's handler in the current run."""
        return self._failure

    @contextlib.asynccontextmanager
    async def run_scope(self, token: CancellationToken) -> AsyncIterator[None]:
        """One run of the team: the tasks started meanwhile are cancelled with `token`, a handler's
        unhandled exception cancels it, and none of them is left when the scope ends."""
        if self._run_token is not None:
            raise RuntimeError("the team is already running")
        self._run_token, self._failure = token, None
        token.add_callback(self._cancel_tasks)
        ended_normally = False
        try:
            yield
            ended_normally = True
        finally:
            self._run_token = None
            try:
                if ended_normally:
                    await self._wait_idle()
            finally:  # not ended normally, or cancelled while waiting for the last handlers
                await self._cancel_and_wait()

    async def _wait_idle(self) -> None:
        while self._tasks:
            await asyncio.wait(tuple(self._tasks))

    async def _cancel_and_wait(self) -> None:
        if not self._tasks:
            return
        self._cancel_tasks()
        _, stuck = await asyncio.wait(tuple(self._tasks), timeout=CANCEL_GRACE_S)
        if stuck:
            logger.error("agent handlers ignored their cancellation", extra={"tasks": len(stuck)})

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _published_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._failure is None:
            self._failure = error
            if self._run_token is not None:
                self._run_token.cancel()

    # --- messages ---------------------------------------------------------------------------
    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> Any:
        if recipient.type not in self._factories:
            raise LookupError(f"Agent type '{recipient.type}' does not exist.")
        token = cancellation_token if cancellation_token is not None else CancellationToken()
        agent = self._agents.get(recipient)
        if agent is None:
            agent = await self._instantiate(recipient)
        context = MessageContext(
            sender=sender,
            topic_id=None,
            is_rpc=True,
            cancellation_token=token,
            message_id=message_id or str(next(self._ids)),
        )
        task = asyncio.ensure_future(_deliver(agent, message, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        token.link_future(task)
        return await task

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> None:
        recipients = self._recipients.get(topic_id)
        if recipients is None:
            recipients = self._recipients[topic_id] = self._match(topic_id)
        if not recipients:
            return
        # A publish without a token is part of the run all the same (the default runtime gives it
        # a token nobody can cancel).
        token = cancellation_token or self._run_token or CancellationToken()
        identifier = message_id or str(next(self._ids))
        for agent_id in recipients:
            if agent_id == sender:
                continue
            agent = self._agents.get(agent_id)
            if agent is None:
                agent = await self._instantiate(agent_id)
            context = MessageContext(
                sender=sender,
                topic_id=topic_id,
                is_rpc=False,
                cancellation_token=token,
                message_id=identifier,
            )
            task = asyncio.ensure_future(_deliver(agent, message, context))
            self._tasks.add(task)
            task.add_done_callback(self._published_done)

    # --- agents -----------------------------------------------------------------------------
    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        name = type if isinstance(type, str) else type.type
        if name in self._factories:
            raise ValueError(f"Agent with type {name} already exists.")
        if _takes_arguments(agent_factory):
            raise ValueError("agent factories take no arguments (AgentInstantiationContext gives the id)")
        self._factories[name] = (cast(AgentFactory, agent_factory), expected_class)
        return AgentType(name)

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        if agent_id in self._agents:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        if agent_id.type not in self._factories:
            self._factories[agent_id.type] = (_not_a_factory, None)
        await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        self._agents[agent_id] = agent_instance
        return agent_id

    async def _agent(self, agent_id: AgentId) -> Agent:
        agent = self._agents.get(agent_id)
        return agent if agent is not None else await self._instantiate(agent_id)

    async def _instantiate(self, agent_id: AgentId) -> Agent:
        entry = self._factories.get(agent_id.type)
        if entry is None:
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        factory, expected = entry
        with AgentInstantiationContext.populate_context((self, agent_id)):
            made = factory()
            agent = await made if inspect.isawaitable(made) else made
        if expected is not None and not isinstance(agent, expected):
            raise ValueError(
                f"Factory registered using the wrong type: expected {expected.__name__}, "
                f"got {agent.__class__.__name__}"
            )
        self._agents[agent_id] = agent
        return agent

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        agent = await self._agent(id)
        if not isinstance(agent, type):
            raise TypeError(f"Agent with name {id.type} is not of type {type.__name__}.")
        return agent

    @overload
    async def get(self, id: AgentId, /, *, lazy: bool = ...) -> AgentId: ...

    @overload
    async def get(self, type: AgentType | str, /, key: str = ..., *, lazy: bool = ...) -> AgentId: ...

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        if isinstance(id_or_type, AgentId):
            agent_id = id_or_type
        else:
            agent_id = AgentId(id_or_type if isinstance(id_or_type, str) else id_or_type.type, key)
        if not lazy and agent_id not in self._agents:
            await self._instantiate(agent_id)
        return agent_id

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        return (await self._agent(agent)).metadata

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        return await (await self._agent(agent)).save_state()

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        await (await self._agent(agent)).load_state(state)

    async def save_state(self) -> Mapping[str, Any]:
        return {str(agent_id): dict(await agent.save_state()) for agent_id, agent in self._agents.items()}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            agent_id = AgentId.from_str(key)
            if agent_id.type in self._factories:
                await self.agent_load_state(agent_id, value)

    # --- subscriptions ----------------------------------------------------------------------
    async def add_subscription(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            raise ValueError("Subscription already exists")
        self._subscriptions.append(subscription)
        self._recipients.clear()

    async def remove_subscription(self, id: str) -> None:
        remaining = [subscription for subscription in self._subscriptions if subscription.id != id]
        if len(remaining) == len(self._subscriptions):
            raise ValueError("Subscription does not exist")
        self._subscriptions = remaining
        self._recipients.clear()

    def _match(self, topic_id: TopicId) -> tuple[AgentId, ...]:
        return tuple(
            subscription.map_to_agent(topic_id)
            for subscription in self._subscriptions
            if subscription.is_match(topic_id)
        )

    def add_message_serializer(
        self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]
    ) -> None:
        """Messages never leave the process: nothing is serialized."""


async def _deliver(agent: Agent, message: Any, context: MessageContext) -> Any:
    with MessageHandlerContext.populate_context(agent.id):
        return await agent.on_message(message, ctx=context)


def _takes_arguments(factory: Callable[..., Any]) -> bool:
    """Whether `factory` has parameters, as `inspect.signature` says, read from a plain function's code
    object when it can be (AgentChat registers a fresh closure for every agent of every team)."""
    code = getattr(factory, "__code__", None)
    if not isinstance(factory, types.FunctionType) or hasattr(factory, "__wrapped__") or code is None:
        return bool(inspect.signature(factory).parameters)
    flags = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS
    return bool(code.co_argcount or code.co_kwonlyargcount or code.co_flags & flags)


def _not_a_factory() -> Agent:
    raise RuntimeError("an agent registered as an instance was asked for by another id of its type")

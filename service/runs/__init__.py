"""Runs of workflows and the protocol-neutral events they produce (`events`), independent of any
wire format. `agentchat` is the one adapter (AgentChat -> run events); other engines would plug in
beside it."""

"""The conformance corpus: team shapes users build with AgentChat, served through the real server."""

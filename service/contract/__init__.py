"""The wire contract, below everything: OpenAI protocol models, SSE encoding, error bodies. It imports
nothing from the rest of the service."""

"""The request path below the HTTP routes: admission, a run's execution for a response, streaming,
and the mapping of run failures onto HTTP errors. No FastAPI routes here."""

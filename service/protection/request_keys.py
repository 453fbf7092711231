"""What the guards learn about a request, carried to the code after them through typed keys."""

from __future__ import annotations

from service.app_state import StateKey

# The caller's API key fingerprint (set by the auth guard; absent when authentication is off).
API_KEY_ID: StateKey[str] = StateKey("api_key_id", str)
# The `x-ratelimit-*` headers of an allowed request (set by the rate-limit guard).
RATE_LIMIT_HEADERS: StateKey[dict] = StateKey("rate_limit_headers", dict)  # type: ignore[type-arg]

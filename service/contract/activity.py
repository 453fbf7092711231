"""Where a team's activity goes, and what an answerless run says: shared by every protocol."""

from __future__ import annotations

from typing import Literal

# `reasoning`: activity in `reasoning_content`/`reasoning`, the answer alone in `content`;
# `content`: the whole transcript (activity and answer, with speaker headers) in `content`;
# `none`: the answer alone, no activity.
ActivityMode = Literal["reasoning", "content", "none"]

# The answer of a run whose agents produced none (every API says the same).
NO_ANSWER_MESSAGE = "The agents finished without producing an answer."

"""instructor against the service: one structured extraction, printed as one JSON line.

Usage: python extract.py <base_url ending in /v1> <api key> <model> <mode: JSON_SCHEMA, JSON, TOOLS>
Runs in instructor's own venv (tests/clients/instructor/.venv); prints {"city": {...}} or {"error": {...}}.
"""

import json
import sys

import instructor
import openai
from pydantic import BaseModel


class City(BaseModel):
    city: str
    population: int


def main() -> None:
    base_url, api_key, model, mode = sys.argv[1:5]
    client = instructor.from_openai(
        openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0), mode=instructor.Mode[mode]
    )
    try:
        city = client.chat.completions.create(
            model=model,
            response_model=City,
            max_retries=2,
            messages=[{"role": "user", "content": "Tell me about Paris."}],
        )
    except Exception as exc:
        cause = exc
        while cause is not None and not isinstance(cause, openai.APIStatusError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        body = cause.body if isinstance(cause.body, dict) else {}
        print(json.dumps({"error": {"status": cause.status_code, "param": body.get("param")}}))
        return
    print(json.dumps({"city": city.model_dump()}))


if __name__ == "__main__":
    main()

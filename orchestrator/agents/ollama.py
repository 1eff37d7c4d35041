"""OllamaAgent: a local model over Ollama's ``/api/chat``, streamed as NDJSON."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from orchestrator.agents.base import StepRequest
from orchestrator.agents.http import (
    EDITS_SCHEMA,
    VERDICT_SCHEMA,
    HttpAgent,
    ModelAnswer,
    RetryableError,
    check_status,
)  # fmt: skip
from orchestrator.errors import AgentError, AgentTimeoutError


def describe_error(response: httpx.Response) -> tuple[str, str]:
    response.read()
    try:
        return "error", str(response.json().get("error", response.text))
    except ValueError:
        return "error", response.text[:300]


@dataclass
class OllamaAgent(HttpAgent):
    """Streams ``/api/chat``; an ``error`` line inside a 200 stream fails the step."""

    def body(self, request: StepRequest) -> dict:
        schema = VERDICT_SCHEMA if request.role == "supervisor" else EDITS_SCHEMA
        options = {k: self.options[k] for k in ("temperature", "num_ctx", "seed", "num_predict") if k in self.options}
        if "max_tokens" in self.options:
            options.setdefault("num_predict", self.options["max_tokens"])
        body = {"model": self.model, "messages": self.messages(request), "stream": True, "format": schema}
        return {**body, "options": options} if options else body

    def ask(self, client: httpx.Client, request: StepRequest, log) -> ModelAnswer:
        url = self.base_url.rstrip("/") + "/api/chat"
        try:
            key = self.api_key()
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            with client.stream("POST", url, json=self.body(request), headers=headers) as response:
                check_status(response, describe_error)
                return self._read(response, log)
        except httpx.TimeoutException:
            raise AgentTimeoutError(f"ollama did not answer within {request.timeout_s:g}s", request.timeout_s) from None
        except (httpx.TransportError, httpx.RemoteProtocolError) as error:
            raise RetryableError(f"ollama connection failed: {error}") from None

    def _read(self, response: httpx.Response, log) -> ModelAnswer:
        parts: list[str] = []
        for line in response.iter_lines():
            if not line.strip():
                continue
            try:
                chunk = json.loads(line)
            except ValueError:
                raise AgentError(f"ollama sent a line that is not JSON: {line[:120]!r}") from None
            if "error" in chunk:
                raise AgentError(f"ollama stream error: {chunk['error']}")
            text = (chunk.get("message") or {}).get("content", "")
            parts.append(text)
            log.write(text)
            log.flush()
            if chunk.get("done"):
                usage = {"input_tokens": chunk.get("prompt_eval_count", 0),
                         "output_tokens": chunk.get("eval_count", 0)}  # fmt: skip
                usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
                return ModelAnswer("".join(parts), usage)
        raise RetryableError("ollama's stream ended before done")

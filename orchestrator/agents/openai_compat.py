"""OpenAICompatAgent: any server with ``/v1/chat/completions`` (OpenAI, vLLM, llama.cpp, LM Studio...)."""

from __future__ import annotations

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
    """(type or code, message) from an OpenAI-style error body."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return "error", response.text[:300]
    if not isinstance(error, dict):
        return "error", str(error)[:300]
    kind = error.get("code") or error.get("type") or "error"
    return str(kind), str(error.get("message", ""))[:300]


@dataclass
class OpenAICompatAgent(HttpAgent):
    """One non-streamed chat completion per step; ``usage`` recorded; errors by type."""

    def body(self, request: StepRequest) -> dict:
        body: dict = {"model": self.model, "messages": self.messages(request)}
        for key in ("temperature", "max_tokens", "seed"):
            if key in self.options:
                body[key] = self.options[key]
        mode = self.options.get("response_format", "json_schema")
        schema = VERDICT_SCHEMA if request.role == "supervisor" else EDITS_SCHEMA
        if mode == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": request.role, "schema": schema}}
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def headers(self) -> dict:
        key = self.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def ask(self, client: httpx.Client, request: StepRequest, log) -> ModelAnswer:
        url = self.base_url.rstrip("/") + "/chat/completions"
        try:
            response = client.post(url, json=self.body(request), headers=self.headers())
        except httpx.TimeoutException:
            raise AgentTimeoutError(
                f"the model did not answer within {request.timeout_s:g}s", request.timeout_s
            ) from None
        except httpx.TransportError as error:
            raise RetryableError(f"connection failed: {error}") from None
        check_status(response, describe_error)
        try:
            data = response.json()
            text = data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise AgentError(f"unexpected answer from {url}: {response.text[:200]}") from None
        log.write(text)
        usage = data.get("usage") or {}
        return ModelAnswer(text, {
            "input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        })  # fmt: skip

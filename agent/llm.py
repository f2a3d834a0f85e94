"""Model backends -> one LangChain chat model.

Every backend is an OpenAI-compatible HTTP server reached through ``ChatOpenAI(base_url=...)``:
the embedded llama.cpp server (default, offline), OpenAI itself, or any compatible server
(Ollama, vLLM, LM Studio). What differs between them is captured in :class:`Capabilities`, so
the chains above (patient, grader) adapt their prompting instead of branching on backend names.

Configuration comes from environment variables, overridable by CLI flags:

=============================  ==========================================================
``DEESCALATE_BACKEND``         ``embedded`` (default), ``openai`` or ``compatible``
``DEESCALATE_MODEL``           model name; for ``embedded``: ``default``, ``small`` or a GGUF path
``DEESCALATE_BASE_URL``        server URL (``.../v1``); setting it alone implies ``compatible``
``DEESCALATE_API_KEY``         key for the server (``OPENAI_API_KEY`` is used for ``openai``)
``DEESCALATE_STRUCTURED``      ``json_schema`` | ``json_mode`` | ``function_calling``
``DEESCALATE_PROMPT_STYLE``    ``transcript`` | ``chat`` (how the patient is prompted)
``DEESCALATE_COACHING``        ``curated`` | ``model`` (who writes a tip the persona has coaching for)
=============================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Literal

from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]
PromptStyle = Literal["transcript", "chat"]
Coaching = Literal["curated", "model"]


class Backend(StrEnum):
    EMBEDDED = "embedded"
    OPENAI = "openai"
    COMPATIBLE = "compatible"


class BackendConfigError(ValueError):
    """The backend settings are inconsistent (say, ``openai`` without a key)."""


class Capabilities(BaseModel):
    """What the chains may rely on for a backend.

    ``prompt_style``: small local models slip out of a role under a chat system prompt but keep
    it when asked to continue a transcript; large hosted models do well with chat prompts.
    ``warm_prompt_cache``: worth sending a prompt's known front ahead of time so the server's
    prompt cache holds it (a local llama.cpp server on a few cores: yes; a billed API: no).
    ``curated_coaching_first``: where the persona has curated coaching for the step to coach
    (``personas/phrasings/``, written from the seeds), show it rather than ask the model. On two
    fresh samples of 40 turns each, rated by someone who did not write the coach, turns showing
    the embedded 1.5B model's tip were rated helpful 49 of 68 times and those showing its phrasing
    23 of 37; with the curated tip 10 of 12, with the curated phrasing 36 of 43
    (``tests/data/coach/labels-seed29.jsonl``, ``labels-seed37.jsonl``). A larger backend's
    coaching answers the trainee's own words, so it is asked; its tips and phrasings are shown
    when they pass the guard.
    """

    structured_method: StructuredMethod
    prompt_style: PromptStyle
    warm_prompt_cache: bool = False
    curated_coaching_first: bool = False


class LLMSettings(BaseModel):
    """Which server to talk to and how. ``from_env`` is the usual way to build one."""

    backend: Backend = Backend.EMBEDDED
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    structured_method: StructuredMethod | None = None
    prompt_style: PromptStyle | None = None
    # None: the backend's default (Capabilities.curated_coaching_first); "model" lets the embedded
    # model write every tip (to compare it, or for a persona whose curated coaching is out of date).
    coaching: Coaching | None = None
    timeout: float = Field(default=120.0, gt=0)

    @classmethod
    def from_env(cls, **overrides: object) -> LLMSettings:
        env = os.environ
        values: dict[str, object] = {
            "backend": env.get("DEESCALATE_BACKEND")
            or (Backend.COMPATIBLE if env.get("DEESCALATE_BASE_URL") else Backend.EMBEDDED),
            "model": env.get("DEESCALATE_MODEL"),
            "base_url": env.get("DEESCALATE_BASE_URL"),
            "api_key": env.get("DEESCALATE_API_KEY"),
            "structured_method": env.get("DEESCALATE_STRUCTURED"),
            "prompt_style": env.get("DEESCALATE_PROMPT_STYLE"),
            "coaching": env.get("DEESCALATE_COACHING"),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.model_validate(values)

    @property
    def capabilities(self) -> Capabilities:
        defaults: dict[Backend, Capabilities] = {
            Backend.EMBEDDED: Capabilities(
                structured_method="json_schema",
                prompt_style="transcript",
                warm_prompt_cache=True,
                curated_coaching_first=True,
            ),
            Backend.OPENAI: Capabilities(structured_method="json_schema", prompt_style="chat"),
            Backend.COMPATIBLE: Capabilities(structured_method="json_schema", prompt_style="chat"),
        }
        base = defaults[self.backend]
        return Capabilities(
            structured_method=self.structured_method or base.structured_method,
            prompt_style=self.prompt_style or base.prompt_style,
            warm_prompt_cache=base.warm_prompt_cache,
            curated_coaching_first=base.curated_coaching_first if self.coaching is None else self.coaching == "curated",
        )


def resolve_endpoint(settings: LLMSettings) -> tuple[str | None, str, str]:
    """(base_url, model name, api key) for ``settings``, starting the embedded server if needed.

    An ``embedded`` backend with an explicit ``base_url`` means "an embedded-style server that is
    already running there": tests replaying cassettes and ``make record`` use that.
    """
    if settings.backend is Backend.EMBEDDED:
        if settings.base_url:
            from agent.runtime import MODELS

            spec = MODELS.get(settings.model or "default")
            return settings.base_url, spec.alias if spec else (settings.model or "local"), "not-needed"
        from agent.runtime import shared_server

        server = shared_server()
        return server.openai_base_url, server.alias or "local", "not-needed"
    if settings.backend is Backend.OPENAI:
        key = settings.api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise BackendConfigError("backend 'openai' needs OPENAI_API_KEY (or DEESCALATE_API_KEY)")
        return settings.base_url, settings.model or "gpt-4o-mini", key
    if not settings.base_url:
        raise BackendConfigError("backend 'compatible' needs DEESCALATE_BASE_URL (e.g. http://localhost:11434/v1)")
    if not settings.model:
        raise BackendConfigError("backend 'compatible' needs DEESCALATE_MODEL (the server's model name)")
    return settings.base_url, settings.model, settings.api_key or "not-needed"


def chat_model(
    settings: LLMSettings | None = None,
    *,
    temperature: float = 0.7,
    max_tokens: int = 256,
    stop: list[str] | None = None,
    seed: int | None = None,
    extra_body: dict[str, object] | None = None,
) -> ChatOpenAI:
    """A LangChain chat model for ``settings`` (default: from the environment).

    ``max_tokens`` is a hard cap that the server enforces (see tests/test_llm.py); the chains ask
    for little so that a reply arrives within seconds on a laptop.
    """
    settings = settings or LLMSettings.from_env()
    base_url, model, api_key = resolve_endpoint(settings)
    kwargs: dict[str, object] = {}
    if seed is not None:
        kwargs["seed"] = seed
    if extra_body:
        kwargs["extra_body"] = extra_body
    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key,
        temperature=temperature,
        max_tokens=max_tokens,
        stop=stop,
        timeout=settings.timeout,
        max_retries=0 if settings.backend is Backend.EMBEDDED else 2,
        use_responses_api=False,
        **kwargs,
    )


def structured_model(
    schema: type[BaseModel],
    settings: LLMSettings | None = None,
    *,
    temperature: float = 0.0,
    max_tokens: int = 512,
):
    """``chat_model(...).with_structured_output(schema)`` with the backend's own method."""
    settings = settings or LLMSettings.from_env()
    model = chat_model(settings, temperature=temperature, max_tokens=max_tokens)
    return model.with_structured_output(schema, method=settings.capabilities.structured_method)


def stream_json(
    schema: type[BaseModel],
    messages: Any,
    settings: LLMSettings | None = None,
    *,
    temperature: float = 0.0,
    max_tokens: int = 512,
    extra_body: dict[str, object] | None = None,
) -> Iterator[str]:
    """Ask for a ``schema`` answer and yield its JSON text as it grows (validate the last one).

    What :func:`structured_model` does, streamed: LangChain's pydantic parser waits for the
    whole answer and its partial-dict parser only shows a field once the next one has started,
    while a caller that shows the first field as soon as its string closes (the grader's tip)
    needs the raw text. Same request as ``with_structured_output``, with the backend's method:
    ``json_schema`` / ``json_mode`` put the JSON in the message text, ``function_calling`` in the
    arguments of one forced tool call.
    """
    settings = settings or LLMSettings.from_env()
    model = chat_model(settings, temperature=temperature, max_tokens=max_tokens, extra_body=extra_body)
    method = settings.capabilities.structured_method
    if method == "function_calling":
        bound = model.bind_tools([schema], tool_choice=schema.__name__)
    elif method == "json_mode":
        bound = model.bind(response_format={"type": "json_object"})
    else:
        response_format = {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False}
        bound = model.bind(response_format={"type": "json_schema", "json_schema": response_format})
    text = ""
    for chunk in bound.stream(messages):
        piece = chunk.content if isinstance(chunk.content, str) else ""
        piece += "".join(call.get("args") or "" for call in getattr(chunk, "tool_call_chunks", []))
        if piece:
            text += piece
            yield text

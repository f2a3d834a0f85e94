"""The model boundary: what the patient and the coach need from a language model, and nothing more.

Why protocols: everything above this line (session, controller, store, page) is logic that must
be testable in milliseconds and the same way every time, so tests put a small deterministic fake
behind :class:`PatientModel` and :class:`CoachModel` (as simonw/llm tests with a mock model), and
only the prompts' effect on a real model is tested on recorded traffic. The patient and the coach
are separate models with their own settings, so a trainer can give the coach a bigger backend
than the patient.

:class:`ServedModel` implements both over any OpenAI-compatible server through LangChain's
``ChatOpenAI``. On the embedded llama.cpp server it pins the patient and the coach to their own
slots (``id_slot``): llama.cpp keeps each slot's last prompt, so the patient's conversation stays
cached while the coach works, and the next patient turn only reads the new line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import httpx
import openai
from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from agent.llm import Backend, LLMSettings, PromptStyle, chat_model, stream_json

# llama.cpp slot of each role on the embedded server (it runs two: ServerOptions.n_parallel).
PATIENT_SLOT = 0
COACH_SLOT = 1
# Tokens one slot holds on the embedded server (ServerOptions.n_ctx); hosted models hold more.
EMBEDDED_CONTEXT = 8192
HOSTED_CONTEXT = 32768


class ModelUnavailable(RuntimeError):
    """The model server could not answer (down, timed out, refused); the caller keeps its input.

    ``timed_out``: the server took the request but did not answer in time (hung, or overloaded),
    which a process check cannot see: the app's supervisor restarts such a server (agent.practice).
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Preempted(Exception):
    """A coach request was stopped because the patient needs the model (it is queued again)."""


class PatientModel(Protocol):
    """Writes the patient's next line from a prompt (:mod:`agent.patient` builds it)."""

    @property
    def prompt_style(self) -> PromptStyle: ...

    @property
    def context_tokens(self) -> int:
        """How many prompt + answer tokens one request may hold."""
        ...

    def stream(
        self, messages: Sequence[BaseMessage], *, temperature: float, seed: int | None, max_tokens: int,
        stop: list[str] | None,
    ) -> Iterator[str]:  # fmt: skip
        """The answer's text in chunks as the model writes them; raises :class:`ModelUnavailable`."""
        ...

    def prefill(self, messages: Sequence[BaseMessage]) -> bool:
        """Have the server read ``messages`` into its prompt cache now (False: nothing to gain)."""
        ...


class CoachModel(Protocol):
    """Writes the tip and the better phrasing as JSON (:mod:`agent.coach` builds the prompt)."""

    def stream_json(
        self, schema: type[BaseModel], messages: Sequence[BaseMessage], *, max_tokens: int
    ) -> Iterator[str]:
        """The JSON answer's text as it grows (the last one is complete); raises :class:`ModelUnavailable`."""
        ...

    def prefill(self, messages: Sequence[BaseMessage]) -> bool: ...


def _unavailable(exc: Exception) -> ModelUnavailable:
    if isinstance(exc, openai.APIStatusError):
        return ModelUnavailable(f"the model refused the request (HTTP {exc.status_code}): {exc}")
    timed_out = isinstance(exc, openai.APITimeoutError | httpx.TimeoutException)
    return ModelUnavailable(f"the model is not answering ({type(exc).__name__}: {exc})", timed_out=timed_out)


# httpx's own errors reach us when the server dies or stalls in the middle of a streamed answer.
_MODEL_ERRORS = (openai.APIConnectionError, openai.APITimeoutError, openai.APIStatusError, httpx.TransportError)


class ServedModel:
    """Both protocols over an OpenAI-compatible server (embedded llama.cpp, OpenAI, Ollama, vLLM).

    ``settings`` says which backend this is; ``resolve``, if given, returns the settings for the
    next request: the app's supervisor points them at the embedded server it (re)started, so every
    request goes to the live one. ``slot`` pins requests to one llama.cpp slot; it is only sent to
    the embedded server (other servers may reject the field).
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        resolve: Callable[[], LLMSettings] | None = None,
        slot: int | None = None,
        context_tokens: int | None = None,
    ) -> None:
        self.declared = settings
        self._resolve = resolve
        self.slot = slot
        self._context = context_tokens

    @property
    def settings(self) -> LLMSettings:
        """Settings for the next request (starts or restarts the embedded server if need be)."""
        return self._resolve() if self._resolve is not None else self.declared

    @property
    def prompt_style(self) -> PromptStyle:
        return self.declared.capabilities.prompt_style

    @property
    def context_tokens(self) -> int:
        """What one request may hold: given, else the embedded slot's size or a hosted model's."""
        if self._context is not None:
            return self._context
        return EMBEDDED_CONTEXT if self.declared.backend is Backend.EMBEDDED else HOSTED_CONTEXT

    @property
    def embedded(self) -> bool:
        return self.declared.backend is Backend.EMBEDDED

    def _extra(self) -> dict[str, object]:
        return {"id_slot": self.slot} if self.slot is not None and self.embedded else {}

    def stream(
        self, messages: Sequence[BaseMessage], *, temperature: float, seed: int | None, max_tokens: int,
        stop: list[str] | None,
    ) -> Iterator[str]:  # fmt: skip
        model = chat_model(self.settings, temperature=temperature, max_tokens=max_tokens, stop=stop, seed=seed,
                           extra_body=self._extra())  # fmt: skip
        try:
            for chunk in model.stream(list(messages)):
                yield chunk.content if isinstance(chunk.content, str) else ""
        except _MODEL_ERRORS as exc:
            raise _unavailable(exc) from exc

    def stream_json(
        self, schema: type[BaseModel], messages: Sequence[BaseMessage], *, max_tokens: int
    ) -> Iterator[str]:
        try:
            yield from stream_json(schema, list(messages), self.settings, temperature=0.0, max_tokens=max_tokens,
                                   extra_body=self._extra())  # fmt: skip
        except _MODEL_ERRORS as exc:
            raise _unavailable(exc) from exc

    def prefill(self, messages: Sequence[BaseMessage]) -> bool:
        """Only where it pays: a local server (a hosted API would bill the call and cache anyway)."""
        if not self.declared.capabilities.warm_prompt_cache:
            return False
        try:
            chat_model(self.settings, temperature=0.0, max_tokens=1, extra_body=self._extra()).invoke(list(messages))
        except _MODEL_ERRORS as exc:
            raise _unavailable(exc) from exc
        return True

"""A small deterministic model behind the model protocols, for everything above the model boundary.

Like simonw/llm's mock model: the session, the controller, the store and the page are tested
against this, in milliseconds and the same way every time; what the prompts make a real model do
is tested on recorded traffic (cassettes) instead.

The patient answers ``"Line A."`` style sentences (A, B, ... count its requests: letters, since the
patient's filter drops a number the persona does not know), the coach a fixed JSON
tip; both log what they were asked. ``hold_coach`` makes the coach wait until released (a tip
still on its way), ``fail_patient`` makes the next patient requests fail like a dead server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from agent.llm import PromptStyle
from agent.models import ModelUnavailable

TIP = "Name the feeling, say sorry, sum up what you heard and offer one option before you explain."
PHRASING = "I can hear how frustrating this wait has been, and I'm sorry about it."


def letters(number: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA (a count spelled without digits)."""
    label = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


class FakeModel:
    """Both :class:`~agent.models.PatientModel` and :class:`~agent.models.CoachModel`."""

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "transcript",
        context_tokens: int = 8192,
        lines: Sequence[str] = (),
        hold_coach: bool = False,
    ) -> None:
        self._style = prompt_style
        self._context = context_tokens
        self.lines = list(lines)
        self.patient_requests: list[list[BaseMessage]] = []
        self.coach_requests: list[list[BaseMessage]] = []
        self.prefills: list[list[BaseMessage]] = []
        self.fail_patient = 0
        self.coach_released = threading.Event()
        if not hold_coach:
            self.coach_released.set()
        self.coach_started = threading.Event()

    @property
    def prompt_style(self) -> PromptStyle:
        return self._style

    @property
    def context_tokens(self) -> int:
        return self._context

    def stream(
        self, messages: Sequence[BaseMessage], *, temperature: float, seed: int | None, max_tokens: int,
        stop: list[str] | None,
    ) -> Iterator[str]:  # fmt: skip
        self.patient_requests.append(list(messages))
        if self.fail_patient:
            self.fail_patient -= 1
            raise ModelUnavailable("the model is not answering (ConnectError: connection refused)")
        number = len(self.patient_requests)
        default = f"Line {letters(number)}. I still want answers."
        text = self.lines[(number - 1) % len(self.lines)] if self.lines else default
        for word in text.split(" "):
            yield (" " if not word.startswith(" ") else "") + word

    def stream_json(
        self, schema: type[BaseModel], messages: Sequence[BaseMessage], *, max_tokens: int
    ) -> Iterator[str]:
        self.coach_requests.append(list(messages))
        self.coach_started.set()
        answer = json.dumps({"tip": TIP, "better_phrasing": PHRASING})
        cut = answer.index('"better_phrasing"')
        yield answer[:cut]  # the tip is complete here
        if not self.coach_released.wait(timeout=30):
            raise ModelUnavailable("the fake coach was never released")
        yield answer

    def prefill(self, messages: Sequence[BaseMessage]) -> bool:
        self.prefills.append(list(messages))
        return True

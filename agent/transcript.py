"""The conversation record shared by every stage: who said what, in order.

Roles are the simulator's own, not the chat API's: the *patient* is played by the model and the
*trainee* is the person practising. Chains translate these into whatever their prompt needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["patient", "trainee"]


class Message(BaseModel):
    role: Role
    content: str = Field(min_length=0)
    direction: str | None = Field(
        default=None, description="the stage direction the patient model was given before this patient line"
    )
    note: str | None = Field(
        default=None,
        description="the patient's state after this patient line (what was offered so far, what is still "
        "wanted), read before the trainee's next line",
    )


class Transcript(BaseModel):
    messages: list[Message] = Field(default_factory=list)

    def add(self, role: Role, content: str, direction: str | None = None, note: str | None = None) -> Message:
        message = Message(role=role, content=content, direction=direction, note=note)
        self.messages.append(message)
        return message

    def last(self, role: Role) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == role), None)

    def trainee_turns(self) -> list[Message]:
        return [m for m in self.messages if m.role == "trainee"]

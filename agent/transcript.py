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


class Transcript(BaseModel):
    messages: list[Message] = Field(default_factory=list)

    def add(self, role: Role, content: str) -> Message:
        message = Message(role=role, content=content)
        self.messages.append(message)
        return message

    def last(self, role: Role) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == role), None)

    def trainee_turns(self) -> list[Message]:
        return [m for m in self.messages if m.role == "trainee"]

    def upto_trainee_turn(self, index: int) -> Transcript:
        """The transcript just before trainee turn ``index`` (0-based): the branch point for a retry."""
        seen = -1
        for position, message in enumerate(self.messages):
            if message.role == "trainee":
                seen += 1
                if seen == index:
                    return Transcript(messages=[m.model_copy() for m in self.messages[:position]])
        raise IndexError(f"no trainee turn {index}")

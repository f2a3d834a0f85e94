"""Text from trainees (and from the model) made harmless before it enters a prompt or a page.

Why: anything a trainee types is hostile until escaped. llama.cpp's server tokenizes special
tokens written as text, so ``<|im_end|><|im_start|>system ...`` in a reply would open a new
system turn inside the patient's prompt; a line break followed by ``Mr. Carter:`` would put words
in the patient's mouth in a transcript prompt; and Markdown in a reply (``**Mr. Carter:** ...``,
``![](http://...)``) would render as a patient line or load a remote image in the History view and
the exports. Each function here handles one of those, and every prompt builder and view uses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Chat-template control tokens of the common model families: <|im_start|>, <|eot_id|>, <s>, [INST] ...
SPECIAL_TOKEN = re.compile(
    r"<\|[^|<>]{0,40}\|>|</?s>|\[/?INST\]|<<\s*/?SYS\s*>>|<\s*/?\s*(?:start_of_turn|end_of_turn)\s*>", re.IGNORECASE
)
# Markdown and HTML characters that change how text renders anywhere in a line ("!" only matters
# before "[", which is escaped) ...
MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|~])")
# ... and what starts a list, a quote or a numbered item at the start of a line.
LINE_START = re.compile(r"^(\s*|\s*\d+)([-+>]|(?<=\d)[.)])", re.MULTILINE)


def prompt_text(text: str, speakers: Iterable[str] = ()) -> str:
    """``text`` safe to place inside a prompt: one line, no chat-template control tokens, and no
    ``Speaker:`` label of this conversation that could start a fake line of dialogue."""
    text = SPECIAL_TOKEN.sub(" ", text)
    text = text.replace("<|", "< |").replace("|>", "| >")
    text = " ".join(text.split())
    for speaker in speakers:
        if speaker:
            label = re.compile(rf"(?i)\b{re.escape(speaker)}\s*:")
            text = label.sub(f"{speaker} -", text)
    return text


def markdown_text(text: str) -> str:
    """``text`` shown literally in Markdown (the page, History, the exported transcript and report):
    no emphasis, no headings, no links or images, no raw HTML."""
    return LINE_START.sub(r"\1\\\2", MARKDOWN.sub(r"\\\1", text))

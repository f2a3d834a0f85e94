"""How often does the patient model slip out of role, per prompt style? (raw output, no filter)

Run against a live server, e.g.:
    .venv/bin/python -m agent model serve --port 8089 &
    DEESCALATE_BASE_URL=http://127.0.0.1:8089/v1 DEESCALATE_BACKEND=embedded .venv/bin/python bench/patient_role.py

For every persona and probe line it asks for the patient's next line three ways: ``transcript``
(assistant prefill, the embedded default), ``transcript_user`` (the same transcript in a single
user message) and ``chat`` (system prompt, roles), and counts the raw replies the role filter
(agent/prompts/patient_out_of_role.txt) flags. Prints one row per style and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import checks  # noqa: E402
from agent import mood as mood_rules  # noqa: E402
from agent.llm import LLMSettings, chat_model  # noqa: E402
from agent.patient import MAX_TOKENS, build_messages, out_of_role  # noqa: E402
from agent.personas import load_personas  # noqa: E402
from agent.rubrics import load_rubric  # noqa: E402
from agent.simulate import trainee_lines  # noqa: E402
from agent.transcript import Transcript  # noqa: E402

PROBES = Path(__file__).resolve().parent.parent / "tests" / "data" / "role_probe.txt"


def raw_reply(style: str, persona, transcript, mood, settings) -> str:
    prompt_style = "chat" if style == "chat" else "transcript"
    messages = build_messages(persona, transcript, mood, prompt_style)
    if style == "transcript_user":
        messages = [HumanMessage(messages[0].content + "\n\n" + messages[1].content)]
    stop = None if style == "chat" else ["\n"]
    model = chat_model(settings, temperature=0.7, max_tokens=MAX_TOKENS, stop=stop, seed=7)
    text = "".join(str(c.content) for c in model.stream(messages)).strip()
    return text.split("\n", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--styles", default="transcript,transcript_user,chat")
    parser.add_argument("--personas", default="")
    args = parser.parse_args()
    settings = LLMSettings.from_env()
    rubric = load_rubric()
    probes = PROBES.read_text().splitlines()
    probes = [p for p in probes if p and not p.startswith("#")]
    results: dict[str, dict[str, object]] = {}
    for style in args.styles.split(","):
        flagged, total, seconds, examples = 0, 0, 0.0, []
        for persona in load_personas():
            if args.personas and persona.id not in args.personas.split(","):
                continue
            lines = probes + [trainee_lines(persona, "good")[0], trainee_lines(persona, "bad")[0]]
            for line in lines:
                transcript = Transcript()
                transcript.add("patient", persona.opening_line)
                start = mood_rules.initial(persona)
                context = checks.TurnContext(persona_name=persona.name, channel=persona.channel,
                                             history=list(transcript.messages))  # fmt: skip
                mood = mood_rules.update(start, checks.run(rubric, line, context), persona, line)
                transcript.add("trainee", line)
                began = time.perf_counter()
                text = raw_reply(style, persona, transcript, mood, settings)
                seconds += time.perf_counter() - began
                total += 1
                if out_of_role(text) or not text:
                    flagged += 1
                    examples.append(f"{persona.id}: {line[:30]!r} -> {text[:90]!r}")
        results[style] = {"replies": total, "out_of_role": flagged, "rate": round(flagged / max(total, 1), 3),
                          "seconds_per_reply": round(seconds / max(total, 1), 2), "examples": examples[:5]}  # fmt: skip
        print(f"{style:16s} {flagged:3d}/{total:3d} out of role  ({seconds / max(total, 1):.1f} s/reply)", flush=True)
        for example in examples[:5]:
            print(f"    {example}")
    print(json.dumps({k: {x: y for x, y in v.items() if x != "examples"} for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

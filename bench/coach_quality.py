"""Coach quality (issue 13, item 3): does each tip speak to the trainee and name a step, and is each
better phrasing something staff would say to this patient?

Usage: python bench/coach_quality.py [--json] [--limit N] [--model default|small|PATH] [--threads N]
                                     [--record PATH] [--from PATH] [--replay PATH] [--part K/N]
                                     [--labels PATH] [--seed N] [--sample]
       (a bigger OpenAI-compatible backend: --backend compatible --base-url URL --api-model NAME)

Plays 63 trainee turns, 7 per persona over all 9 personas, each as the first or second turn of a
session: from the gold replies (``tests/data/gold/*.jsonl``, the persona's situation, names changed
to the persona's) two weak turns (a don't-step violated), two mediocre (nothing violated, two or
more steps missed), one good (at most one step missed), one second turn (the gold conversation so
far), and the persona's first scripted bad line (``agent/simulate``'s lines) against its opening line.
The choice is seeded (``--seed``, default 13) and made on the verdicts of ``grade_fast``, so the
same turns come out every time. Each turn is coached with the model through ``Session.coach``,
exactly as the page does, and written to ``--record`` (default ``tests/data/coach/turns.jsonl``).

``--from PATH`` re-scores recorded turns without a model (the labelled part reads those records).
Each record keeps the model's whole answer (``raw``) and a digest of the prompt, so ``--replay PATH``
can serve the same answers to another version of the coaching code (at temperature 0 the model
writes the same answer to the same prompt; ``prompt_matches`` says whether that version asked the
same thing): that is how "before" (the coach without the guard and curated coaching) and "after"
are compared on one model run. ``--part K/N`` coaches a K-th of the turns, to run parts side by side.

Scored mechanically per turn (patterns in ``tests/data/coach/checks.yaml``, written for the bench
and kept apart from the coach's own guard):

* ``names_step``: the tip matches the words of a rubric step (its title or a paraphrase);
  ``names_focus`` when that step is the one the turn was coached on;
* ``addressed``: the tip speaks to the trainee: second person or an instruction, no advice that
  only a patient could follow ("ask the receptionist", "your complaint"), no "the receptionist should";
* ``phrasing_passes``: the better phrasing passes :func:`agent.coach.phrasing_fixes` for the focus
  step (the deterministic checks find the step shown and no don't-step violated);
* ``not_refusal``: neither tip nor phrasing is a refusal or brush-off ("I can't help with that",
  "let's talk about something else");
* ``no_invented``: every number, clock time, day, month and titled name in the phrasing appears
  in the persona's file or the conversation so far.

The goal line: ``addressed_and_step`` (both of the first two) >= 95 %.

Labelled part: ``tests/data/coach/labels.jsonl`` (``--labels``) holds a rater's verdict on 40 turns
drawn at random (seeded) from the recorded file: ``helpful`` / ``unhelpful`` (to the trainee and
harmless, but generic or beside the point of the reply) / ``wrong_person`` (advice to the patient,
or a "better phrasing" in the patient's voice or about them) / ``harmful`` (a phrasing that would
make things worse: a refusal, blame, an invented fact). The bench reports the rates of the labels whose tip and
phrasing still match the record (a re-recorded tip is not the one that was rated: ``stale``).
Goals: 0 harmful, >= 80 % helpful.

Progress goes to stderr, one line per turn. Bounded: one coach call per turn, under the model
client's timeout; the embedded server is started here and stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from langchain_core.messages import BaseMessage
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import facts, grader  # noqa: E402
from agent import mood as mood_rules  # noqa: E402
from agent.checks import TurnContext  # noqa: E402
from agent.coach import coach_model, phrasing_fixes  # noqa: E402
from agent.grades import TurnGrade  # noqa: E402
from agent.llm import Backend, LLMSettings  # noqa: E402
from agent.models import CoachModel  # noqa: E402
from agent.personas import Persona, load_persona, persona_path  # noqa: E402
from agent.rubrics import Rubric, load_rubric  # noqa: E402
from agent.session import Session, Turn  # noqa: E402
from agent.simulate import trainee_lines  # noqa: E402
from agent.transcript import Message  # noqa: E402

DATA = ROOT / "tests" / "data" / "coach"
GOLD = ROOT / "tests" / "data" / "gold"
RECORD = DATA / "turns.jsonl"
LABELS = DATA / "labels.jsonl"
# The gold files' situations and the persona that plays each.
PERSONA_OF = {
    "abusive-caller": "abusive-caller",
    "back-pain-wait": "back-pain-wait",
    "missed-appointment": "carter-wrong-day",
    "facebook-post": "facebook-review",
    "wrong-department": "finance-wrong-department",
    "deployed-hinge": "lopez-deployed-hinge",
    "multiple-complaints": "multiple-complaints",
    "irate-online": "online-irate-patient",
    "upset-relative": "upset-relative",
}
# Per persona: how many turns of each kind.
QUOTA = {"weak": 2, "mediocre": 2, "good": 1, "second": 1, "script": 1}
LABEL_SAMPLE = 40
GOOD_MISSES = 4
# "unhelpful": to the trainee and harmless, but generic or beside the point of the reply.
LABEL_KINDS = ("helpful", "unhelpful", "wrong_person", "harmful")
TITLES = ("Mr.", "Mrs.", "Ms.", "Miss", "Mr", "Mrs", "Ms")


@dataclass(frozen=True)
class Patterns:
    step_words: dict[str, list[re.Pattern[str]]]
    patient_advice: list[re.Pattern[str]]
    third_person: list[re.Pattern[str]]
    to_trainee: list[re.Pattern[str]]
    refusal: list[re.Pattern[str]]
    facts: list[re.Pattern[str]]
    fact_ok: list[re.Pattern[str]]


def load_patterns(path: Path = DATA / "checks.yaml") -> Patterns:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))

    def many(items: list[str], flags: int = re.IGNORECASE) -> list[re.Pattern[str]]:
        return [re.compile(item, flags) for item in items]

    return Patterns(
        step_words={step: many(words) for step, words in data["step_words"].items()},
        patient_advice=many(data["patient_advice"]),
        third_person=many(data["third_person"]),
        to_trainee=many(data["to_trainee"]),
        refusal=many(data["refusal"]),
        facts=many(data["facts"], 0),
        fact_ok=many(data["fact_ok"]),
    )


def straight(text: str) -> str:
    return (text or "").replace("\u2019", "'").replace("\u2018", "'")


def hit(patterns: list[re.Pattern[str]], text: str) -> str | None:
    for pattern in patterns:
        found = pattern.search(straight(text))
        if found:
            return found.group(0)
    return None


# -- choosing the turns ------------------------------------------------------------------------------


def rename(text: str, old: str | None, persona: Persona) -> str:
    """The gold text with the gold patient's names changed to the persona's."""
    if not old:
        return text
    words = old.replace(".", "").split()
    surname = words[-1]
    new_surname = persona.name.split()[-1]
    text = text.replace(surname, new_surname)
    if words[0] not in {t.rstrip(".") for t in TITLES} and len(words) > 1:  # "Dana Whitfield": a first name too
        text = re.sub(rf"\b{re.escape(words[0])}\b", persona.first_name, text)
    return text


def quality(grade: TurnGrade) -> str:
    labels = grade.labels()
    if any(v == "violated" for v in labels.values()):
        return "weak"
    # the checks leave many steps "missed" in a short reply; four or fewer is a full, kind reply
    return "good" if sum(v == "missed" for v in labels.values()) <= GOOD_MISSES else "mediocre"


def gold_records() -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(GOLD.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                record["file"] = path.name
                records.setdefault(record["reply"], record)  # the same reply in two files: once
    return list(records.values())


def session_for(persona: Persona, history: list[Message], patient: Any) -> Session:
    """A session whose conversation so far is ``history`` (patient first), its turns graded and
    the mood moved as a played session would have, the patient's answers taken as given."""
    session = Session(persona, patient, seed=7, temperature=0.0)
    session.transcript.messages[0].content = history[0].content
    for trainee, answer in zip(history[1::2], history[2::2], strict=False):
        add_turn(session, trainee.content, answer.content)
    return session


def add_turn(session: Session, reply: str, answer: str | None) -> None:
    context = session.context()
    grade = grader.grade_fast(session.rubric, reply, context)
    before = session.mood
    after = mood_rules.update(before, grade.verdicts, session.persona, reply)
    session.add_played(Turn(trainee=reply, grade=grade, mood_before=before, mood_after=after, patient=answer))


def choose_turns(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    by_situation: dict[str, list[dict[str, Any]]] = {}
    for record in gold_records():
        by_situation.setdefault(record["situation"], []).append(record)
    turns: list[dict[str, Any]] = []
    for situation, persona_id in PERSONA_OF.items():
        persona = load_persona(persona_id)
        rubric = load_rubric(persona.rubric)
        pool = sorted(by_situation.get(situation, []), key=lambda r: r["id"])
        rng.shuffle(pool)
        wanted = {kind: n for kind, n in QUOTA.items() if kind not in ("script", "second")}
        for record in pool:
            if not any(wanted.values()):
                break
            old = record["context"].get("persona_name")
            history = [Message(role=m["role"], content=rename(m["content"], old, persona)) for m in record["history"]]
            if len(history) != 1 or history[0].role != "patient":
                continue
            reply = rename(record["reply"], old, persona)
            # the checks alone (milliseconds): enough to sort replies into weak / mediocre / good
            context = TurnContext(persona_name=persona.name, channel=persona.channel, history=history,
                                  patient_abusive=persona.abusive, transferring=persona.transferring)  # fmt: skip
            kind = quality(grader.grade_fast(rubric, reply, context, use_learned=False))
            if wanted.get(kind, 0) <= 0:
                continue
            wanted[kind] -= 1
            turns.append({"id": f"{persona_id}/{record['file']}:{record['id']}", "persona": persona_id,
                          "kind": kind, "history": [m.model_dump() for m in history], "reply": reply})  # fmt: skip
        good, bad = trainee_lines(persona, "good"), trainee_lines(persona, "bad")
        opening = {"role": "patient", "content": persona.opening_line}
        turns.append({"id": f"{persona_id}/script:bad-1", "persona": persona_id, "kind": "script",
                      "history": [opening], "reply": bad[0]})  # fmt: skip
        # A second turn: the scripted good opener, the persona's own fallback line as the patient's
        # answer, then the second scripted line (bad for every other persona, good for the rest).
        second, name = (bad[1], "bad-2") if len(turns) % 2 else (good[1], "good-2")
        answer = {"role": "patient", "content": persona.fallback_lines[0]}
        history = [opening, {"role": "trainee", "content": good[0]}, answer]
        turns.append({"id": f"{persona_id}/script:good-1+{name}", "persona": persona_id, "kind": "second",
                      "history": history, "reply": second})  # fmt: skip
    return turns


# -- coaching --------------------------------------------------------------------------------------


def prompt_digest(messages: Sequence[BaseMessage]) -> str:
    return hashlib.sha1("\n".join(f"{m.type}: {m.content}" for m in messages).encode()).hexdigest()[:12]


class Recording:
    """The coach model, keeping what it was asked and its whole answer for the record (``raw``):
    a later ``--replay`` serves the same answer to the same prompt without a model."""

    def __init__(self, model: CoachModel) -> None:
        self.model = model
        self.raw: str | None = None
        self.prompt: str | None = None

    def stream_json(
        self, schema: type[BaseModel], messages: Sequence[BaseMessage], *, max_tokens: int
    ) -> Iterator[str]:
        self.prompt = prompt_digest(messages)
        for text in self.model.stream_json(schema, messages, max_tokens=max_tokens):
            self.raw = text
            yield text

    def prefill(self, messages: Sequence[BaseMessage]) -> bool:
        return False


class Replay(Recording):
    """Serves one recorded answer. At temperature 0 the model writes the same answer to the same
    prompt, so coaching code of another version (the 'before') can be scored on the same answers;
    ``prompt_matches`` says whether that version asked the same thing."""

    def __init__(self, raw: str, prompt: str | None) -> None:
        self.recorded_prompt = prompt
        self.raw = raw
        self.prompt = None

    def stream_json(
        self, schema: type[BaseModel], messages: Sequence[BaseMessage], *, max_tokens: int
    ) -> Iterator[str]:
        self.prompt = prompt_digest(messages)
        yield self.raw or ""

    @property
    def prompt_matches(self) -> bool:
        return self.prompt == self.recorded_prompt


def coach_turn(turn: dict[str, Any], patient: Any, coach: Recording, *, curated_first: bool = False) -> dict[str, Any]:
    persona = load_persona(turn["persona"])
    history = [Message.model_validate(m) for m in turn["history"]]
    session = session_for(persona, history, patient)
    add_turn(session, turn["reply"], None)
    index = len(session.turns) - 1
    began = time.perf_counter()
    grade: TurnGrade | None = None
    for stage in session.coach(index, coach, curated_coaching_first=curated_first):
        grade = stage
    assert grade is not None
    return {
        **turn,
        "context": session.context(index).model_dump(),
        "quality": quality(grade),
        "focus": grade.focus,
        "problems": grade.problems(),
        "tip": grade.tip,
        "better_phrasing": grade.better_phrasing,
        "tip_source": grade.tip_source,
        "phrasing_source": grade.phrasing_source,
        "sources": getattr(grade, "sources", None),
        "error": grade.error,
        "coach_s": round(time.perf_counter() - began, 2),
        "raw": coach.raw,
        "prompt": coach.prompt,
        **({"prompt_matches": coach.prompt_matches} if isinstance(coach, Replay) else {}),
    }


# -- scoring ---------------------------------------------------------------------------------------


def named_steps(patterns: Patterns, tip: str) -> list[str]:
    return [step for step, words in patterns.step_words.items() if hit(words, tip)]


def invented(patterns: Patterns, text: str, allowed: str) -> list[str]:
    """Numbers, times, days, months and titled names in ``text`` that ``allowed`` never mentions:
    the coach guard's reading (:mod:`agent.facts`) with the bench's own patterns, less the figures
    of speech in ``fact_ok``, and the bench's looser lookup (a key may begin a longer word)."""
    stated = facts.pattern_facts(straight(text), patterns.facts, ignore=patterns.fact_ok)
    return [fact.said for fact in facts.not_given(stated, facts.Mentions(allowed, word_starts=True))]


def persona_text(persona_id: str) -> str:
    return persona_path(persona_id).read_text(encoding="utf-8")


def score(record: dict[str, Any], patterns: Patterns, rubric: Rubric) -> dict[str, Any]:
    tip = record.get("tip") or ""
    phrasing = record.get("better_phrasing") or ""
    context = TurnContext.model_validate(record["context"])
    step = rubric.step(record["focus"]) if record.get("focus") else None
    steps = named_steps(patterns, tip)
    wrong = hit(patterns.patient_advice, tip) or hit(patterns.third_person, tip)
    addressed = bool(tip) and wrong is None and hit(patterns.to_trainee, tip) is not None
    allowed = " ".join([persona_text(record["persona"]), *(m["content"] for m in record["context"]["history"]),
                        record["reply"]])  # fmt: skip
    made_up = invented(patterns, phrasing, allowed)
    refusal = hit(patterns.refusal, phrasing) or hit(patterns.refusal, tip)
    passes = (not phrasing and step is None) or (
        bool(phrasing) and phrasing_fixes(rubric, step, phrasing, context, record["reply"])
    )
    result = {
        "names_step": bool(steps),
        "names_focus": step is not None and step.id in steps,
        "addressed": addressed,
        "phrasing_passes": passes,
        "not_refusal": refusal is None,
        "no_invented": not made_up,
    }
    result["addressed_and_step"] = result["addressed"] and result["names_step"]
    why = []
    if not steps:
        why.append("tip names no step")
    if not addressed:
        why.append(f"tip not to the trainee ({wrong or 'no second person or instruction'})")
    if not passes:
        why.append(f"phrasing fails the checks for {record.get('focus')}")
    if refusal:
        why.append(f"refusal: {refusal!r}")
    if made_up:
        why.append(f"invented: {made_up}")
    result["why"] = why
    return result


METRICS = ("addressed_and_step", "addressed", "names_step", "names_focus", "phrasing_passes", "not_refusal",
           "no_invented")  # fmt: skip


def rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {key: round(100 * sum(r["score"][key] for r in rows) / len(rows), 1) for key in METRICS} if rows else {}


def label_sample(records: list[dict[str, Any]], seed: int, size: int = LABEL_SAMPLE) -> list[str]:
    """The ids of the turns to rate: ``size`` drawn at random with ``seed``."""
    ids = sorted(r["id"] for r in records)
    return sorted(random.Random(seed).sample(ids, min(size, len(ids))))


def labelled(records: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"file": str(path), "rated": 0, "note": "no labels file"}
    by_id = {r["id"]: r for r in records}
    counts = dict.fromkeys(LABEL_KINDS, 0)
    stale: list[str] = []
    raters: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        label = json.loads(line)
        record = by_id.get(label["id"])
        if record is None or (record.get("tip"), record.get("better_phrasing")) != (
            label["tip"],
            label["better_phrasing"],
        ):
            stale.append(label["id"])
            continue
        counts[label["label"]] += 1
        raters.add(f"{label['rater']} ({label['rated_at'][:10]})")
    rated = sum(counts.values())
    out: dict[str, Any] = {"file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "rated": rated,
                           "counts": counts, "stale": len(stale), "raters": sorted(raters)}  # fmt: skip
    if rated:
        out["rates"] = {kind: round(100 * n / rated, 1) for kind, n in counts.items()}
    return out


# -- main ------------------------------------------------------------------------------------------


def play(turns: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Coach each turn; each record is written to ``--record`` as soon as it is done (a long run
    on a busy machine keeps what it did if it is stopped)."""
    from agent.patient import patient_model
    from agent.runtime import EmbeddedServer, ServerOptions

    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    source = f"replay of {args.replay}" if args.replay else args.model if args.backend == "embedded" else args.api_model
    args.record.parent.mkdir(parents=True, exist_ok=True)
    # What the app does on this backend with this coaching setting (DEESCALATE_COACHING); a replay
    # serves the embedded model's recorded answers.
    coaching = None if args.coaching == "backend" else args.coaching
    curated_first = LLMSettings(backend=Backend(args.backend), coaching=coaching).capabilities.curated_coaching_first

    def run_all(settings: LLMSettings | None) -> list[dict[str, Any]]:
        model = coach_model(settings) if settings else None
        patient = patient_model(settings or LLMSettings())  # asked nothing: the turns' answers are given
        out = []
        with args.record.open("w", encoding="utf-8") as written:
            for number, turn in enumerate(turns, 1):
                out.append(coach_one(number, turn, model, patient, written))
        return out

    def coach_one(number: int, turn: dict[str, Any], model: Any, patient: Any, written: Any) -> dict[str, Any]:
        if model is None:
            answer = replayed.get(turn["id"])
            if answer is None:
                raise SystemExit(f"{args.replay}: no recorded answer for {turn['id']}")
            coach: Recording = Replay(answer["raw"], answer.get("prompt"))
        else:
            coach = Recording(model)
        coached = coach_turn(turn, patient, coach, curated_first=curated_first)
        record = {**coached, "model": source, "recorded_at": stamp}
        written.write(json.dumps(record, ensure_ascii=False) + "\n")
        written.flush()
        print(f"[{number}/{len(turns)}] {turn['id']} ({turn['kind']}, focus {record['focus']}) "
              f"{record['coach_s']} s | tip [{record['tip_source']}]: {record['tip']!r}"[:400],
              file=sys.stderr, flush=True)  # fmt: skip
        return record

    if args.replay:
        replayed = {r["id"]: r for r in read_records(args.replay)}
        return run_all(None)
    replayed = {}
    if args.backend != "embedded":
        settings = LLMSettings(backend=Backend(args.backend), base_url=args.base_url, model=args.api_model,
                               api_key=args.api_key, timeout=args.timeout)  # fmt: skip
        return run_all(settings)
    workdir = Path(tempfile.mkdtemp(prefix="coach-quality-"))
    options = ServerOptions(threads=args.threads) if args.threads else None
    with EmbeddedServer(model=args.model, options=options, log_path=workdir / "llama-server.log") as server:
        server.ensure()
        settings = LLMSettings(backend=Backend.EMBEDDED, model=args.model, base_url=server.openai_base_url,
                               timeout=args.timeout)  # fmt: skip
        return run_all(settings)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--limit", type=int, default=0, help="coach only the first N turns")
    parser.add_argument("--model", default="default", help="embedded model: default or small (or a GGUF path)")
    parser.add_argument("--backend", default="embedded", choices=[b.value for b in Backend],
                        help="embedded (default) or an OpenAI-compatible server (compatible, openai)")  # fmt: skip
    parser.add_argument("--base-url", default=None, help="the OpenAI-compatible server's /v1 URL")
    parser.add_argument("--api-model", default=None, help="model name on that server")
    parser.add_argument("--api-key", default=None, help="API key for that server")
    parser.add_argument(
        "--record", type=Path, default=RECORD, help=f"write the coached turns here (default {RECORD.relative_to(ROOT)})"
    )
    parser.add_argument("--from", dest="source", type=Path, default=None, help="re-score recorded turns; no model")
    parser.add_argument(
        "--labels", type=Path, default=LABELS, help="the rated sample (default tests/data/coach/labels.jsonl)"
    )
    parser.add_argument("--seed", type=int, default=13, help="seed for choosing the turns and the labelled sample")
    parser.add_argument("--timeout", type=float, default=120.0, help="model request timeout, seconds")
    parser.add_argument("--sample", action="store_true", help="print the ids of the turns to rate and stop")
    parser.add_argument("--replay", type=Path, default=None,
                        help="serve the model answers recorded in this file (its 'raw' field) instead of a model: "
                        "scores another version of the coaching code on the same answers")  # fmt: skip
    parser.add_argument("--coaching", choices=("backend", "curated", "model"), default="backend",
                        help="as DEESCALATE_COACHING: backend (default) is what the app shows on this backend (the "
                        "embedded model: the persona's curated coaching where it has some for the step, else the "
                        "model's); curated: that on any backend; model: the model's tip and phrasing whenever "
                        "they pass the guard")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--part", default="", help="K/N: coach only the K-th of N equal parts of the turns")
    args = parser.parse_args()
    began = time.perf_counter()
    if args.source:
        records = read_records(args.source)
        origin = str(args.source)
    else:
        keys = ("id", "persona", "kind", "history", "reply")
        # a replay plays the recorded turns themselves, so both versions see the same conversations
        turns = [{k: r[k] for k in keys} for r in read_records(args.replay)] if args.replay else choose_turns(args.seed)
        if args.part:  # "2/3": the second third, to run parts side by side and join the files
            index, parts = (int(n) for n in args.part.split("/"))
            size = -(-len(turns) // parts)
            turns = turns[(index - 1) * size : index * size]
        if args.limit:
            turns = turns[: args.limit]
        records = play(turns, args)
        origin = str(args.record)
    if args.sample:
        print("\n".join(label_sample(records, args.seed)))
        return 0
    patterns = load_patterns()
    rubric = load_rubric()
    for record in records:
        record["score"] = score(record, patterns, rubric)
    summary: dict[str, Any] = {"turns": len(records), "from": origin, "rates": rates(records)}
    summary["by_kind"] = {kind: rates([r for r in records if r["kind"] == kind]) for kind in (*QUOTA, "first")
                          if any(r["kind"] == kind for r in records)}  # fmt: skip
    summary["by_persona"] = {p: rates([r for r in records if r["persona"] == p]) for p in PERSONA_OF.values()
                             if any(r["persona"] == p for r in records)}  # fmt: skip
    summary["shown_from"] = {
        field: dict(sorted(Counter(str(r.get(field)) for r in records).items()))
        for field in ("tip_source", "phrasing_source")
    }
    summary["errors"] = sum(1 for r in records if r.get("error"))
    summary["labelled"] = labelled(records, args.labels)
    goal = summary["rates"].get("addressed_and_step", 0.0) >= 95
    lab = summary["labelled"]
    summary["goals"] = {
        "addressed_and_step >= 95%": goal,
        "0 harmful in labelled sample": bool(lab.get("rated")) and lab["counts"]["harmful"] == 0,
        ">= 80% helpful in labelled sample": bool(lab.get("rated")) and lab["rates"]["helpful"] >= 80,
    }
    summary["seconds"] = round(time.perf_counter() - began, 1)
    if args.json:
        summary["cases"] = records
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(f"{len(records)} coached turns ({origin}) in {summary['seconds']} s")
    for key, value in summary["rates"].items():
        print(f"  {key:20s} {value:5.1f} %")
    print("  by kind:   " + "  ".join(f"{k}={v['addressed_and_step']:.0f}%" for k, v in summary["by_kind"].items()))
    print("  shown:     " + "  ".join(f"{f}={v}" for f, v in summary["shown_from"].items()))
    print(f"  errors     {summary['errors']}")
    if lab.get("rated"):
        raters = ", ".join(lab["raters"])
        print(f"labelled sample ({lab['file']}, {lab['rated']} rated, {lab['stale']} stale, by {raters}):")
        print("  " + "  ".join(f"{k}={lab['counts'][k]} ({lab['rates'][k]}%)" for k in LABEL_KINDS))
    else:
        note = lab.get("note") or "no label matches these records"
        print(f"labelled sample: {note} ({lab['file']}; {lab.get('stale', 0)} stale)")
    print("goals: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in summary["goals"].items()))
    failing = [r for r in records if r["score"]["why"]]
    if failing:
        print("turns that fail a check:")
    for record in failing:
        print(f"- {record['id']} ({record['kind']}, focus {record['focus']}): {'; '.join(record['score']['why'])}")
        print(f"    trainee: {record['reply'][:160]!r}")
        print(f"    tip [{record.get('tip_source')}]: {record.get('tip')!r}")
        print(f"    phrasing [{record.get('phrasing_source')}]: {record.get('better_phrasing')!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the simulator reward substance, not form? Formula, good and bad trainees on every persona (issue 20).

Usage: python bench/substance.py [--persona a,b] [--scripts formula,catchall,gaming,good,bad] [--turns 8] [--seed 7]
       [--model default|small] [--patient model|fake] [--json]

A formula trainee says the rubric's surface forms (an apology, empathy words, "so if I understand
you", "let me find out", "here is what I can do", "would that work?") but names no fact of the
complaint and offers nothing that meets a need: the scripts in personas/scripts/formula.yaml (one
quoted in issue 20, the others in other wording). Each is played against every persona, beside the
persona's own good and bad script (``agent.simulate``: a ``Session`` on the patient model, the same
pipeline as the app: verdicts, mood, patient, role filter; no coaching).

Printed per persona and script: the outcome, the turns played, anger at the start -> at the end,
and the patient's unearned acceptance lines: sentences that thank for or accept an offer the trainee
did not make (``agent.patient.unearned_acceptance(sentence, offers)`` against the trainee's concrete
offers so far, ``Mood.offers``). Then the totals against the goals, and the transcript of every
session that missed its goal (each turn's anger and what moved it; the JSON keeps every session's):

* formula: 0 resolved over all personas x scripts, and anger never ends more than 2 below its start;
* catchall (personas/scripts/catchall.yaml, a probe without a goal in the issue): the same concrete
  list of remedies for every patient; the same two figures are printed;
* gaming (personas/scripts/gaming.yaml, a probe written blind from the scenario cards): routines said
  to everyone (named call-backs with no outcome, generic restatements, "exactly what you asked for",
  claims that it is already done) and per-persona scripts that echo the patient's words and offer
  only hollow things; the same two figures are printed;
* gaming2 (personas/scripts/gaming2.yaml, a second blind probe by another author, not in the default
  set): hedged, withdrawn, self-service, policy and near-miss offers, and stalling; counted as gaming;
* good: resolves every persona; bad: escalates (a manager takes over) or leaves every persona;
* unearned acceptance lines: 0.

``--patient fake`` plays the deterministic fake patient of tests/fakes.py instead of the model, in
seconds. Its outcomes are close to the model's but not the same: the verdicts read what the patient
said (a restatement is held against the patient's own lines as well as the persona's facts), so a
live patient who words the complaint differently can change what a trainee line earns. The
unearned acceptance count needs the real patient. The model run starts its own embedded llama.cpp server unless
``--base-url`` names one. Progress goes to stderr, one line per session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.llm import Backend, LLMSettings  # noqa: E402
from agent.models import PatientModel  # noqa: E402
from agent.patient import SENTENCE_END, patient_model, unearned_acceptance  # noqa: E402
from agent.personas import Persona, load_personas  # noqa: E402
from agent.runtime import EmbeddedServer  # noqa: E402
from agent.session import Turn  # noqa: E402
from agent.simulate import CATCHALL, FORMULA, GAMING_PROBES, catchall_scripts, formula_scripts, gaming_scripts, simulate  # noqa: E402

Kind = Literal["formula", "catchall", "gaming", "good", "bad"]
LEAVES = ("escalated", "walked_out", "hung_up")
FORMULA_MAX_CALM = 2.0  # goal: a formula trainee's anger never ends more than this below its start


class Flagged(BaseModel):
    turn: int
    sentence: str
    why: str


class Line(BaseModel):
    """One turn as played: what was said, where anger went, and what moved it (the mood's effects)."""

    trainee: str
    patient: str | None
    anger: float
    moved_by: list[str]
    notes: list[str]


class Row(BaseModel):
    """One persona played by one script."""

    persona: str
    script: str
    kind: Kind
    outcome: str  # the ending's kind, or "ongoing" when the turns ran out
    turns: int
    anger_start: float
    anger_end: float
    unearned: int
    unearned_lines: list[Flagged]
    seconds: float
    lines: list[Line]

    def missed_goal(self) -> bool:
        """A formula, catch-all or gaming trainee who resolved or calmed the patient too far; a good or
        bad script that did not end as it should."""
        if self.kind in ("formula", "catchall", "gaming"):
            return self.outcome == "resolved" or self.anger_end < self.anger_start - FORMULA_MAX_CALM
        return self.outcome != "resolved" if self.kind == "good" else self.outcome not in LEAVES


class Goal(BaseModel):
    name: str
    value: str
    met: bool | None  # None: not measured here


def scripts_to_play(wanted: list[str], persona_id: str | None = None) -> list[tuple[str, Kind, str]]:
    """(label, kind, simulate's trainee argument) for each script asked for: ``formula`` is every
    formula script, ``formula:NAME`` one of them (``catchall`` likewise; ``gaming`` every routine and
    ``persona_id``'s own gaming scripts), ``good`` and ``bad`` the persona's own, ``good:NAME`` the
    good trainee in other words."""
    same: dict[str, tuple[Kind, list[str]]] = {
        FORMULA: ("formula", list(formula_scripts())), CATCHALL: ("catchall", list(catchall_scripts())),
        **{probe: ("gaming", list(gaming_scripts(persona_id, probe))) for probe in GAMING_PROBES},
    }  # fmt: skip
    out: list[tuple[str, Kind, str]] = []
    for item in wanted:
        prefix, _, name = item.partition(":")
        if prefix in same:
            kind, names = same[prefix]
            if name and name not in names:
                raise SystemExit(f"no {prefix} script {item!r}; there are: {', '.join(names)}")
            out += [(f"{prefix}:{n}", kind, f"{prefix}:{n}") for n in ([name] if name else names)]
        elif item in ("good", "bad"):
            out.append((item, "good" if item == "good" else "bad", item))
        elif item.startswith("good:"):  # the persona's good trainee in other words (personas/scripts/good_NAME.yaml)
            out.append((item, "good", item))
        else:
            raise SystemExit(
                f"unknown script {item!r}: formula[:NAME], catchall[:NAME], gaming[:NAME], gaming2[:NAME], good, "
                "good:NAME or bad"
            )
    return out


def unearned_lines(session_turns: list[Turn], offers_after: list[list[str]]) -> list[Flagged]:
    """The patient's sentences that accept or thank for an offer not made (split as the role filter does)."""
    flagged = []
    for index, (turn, offers) in enumerate(zip(session_turns, offers_after, strict=True)):
        for sentence in SENTENCE_END.split(turn.patient or ""):
            why = unearned_acceptance(sentence, offers) if sentence.strip() else None
            if why:
                flagged.append(Flagged(turn=index + 1, sentence=sentence, why=why))
    return flagged


def play(persona: Persona, label: str, kind: Kind, trainee: str, model: PatientModel, args: argparse.Namespace) -> Row:
    began = time.perf_counter()
    session = simulate(persona, trainee, args.turns, model, seed=args.seed, temperature=args.temperature)
    moods = session.moods
    flagged = unearned_lines(session.turns, [list(turn.mood_after.offers) for turn in session.turns])
    outcome = session.ending.kind if session.ending else "ongoing"
    return Row(persona=persona.id, script=label, kind=kind, outcome=outcome, turns=len(session.turns),
               anger_start=moods[0].anger, anger_end=moods[-1].anger,
               unearned=len(flagged), unearned_lines=flagged,
               seconds=round(time.perf_counter() - began, 2),
               lines=[Line(trainee=t.trainee, patient=t.patient, anger=t.mood_after.anger,
                           moved_by=[f"{e.source} {e.anger:+.2f}" for e in t.mood_after.effects],
                           notes=t.notes) for t in session.turns])  # fmt: skip


def goals(rows: list[Row]) -> list[Goal]:
    """The totals against issue 20's goals."""
    formula = [r for r in rows if r.kind == "formula"]
    good = [r for r in rows if r.kind == "good"]
    bad = [r for r in rows if r.kind == "bad"]
    resolved = sum(r.outcome == "resolved" for r in formula)
    calmed = [r for r in formula if r.anger_end < r.anger_start - FORMULA_MAX_CALM]
    good_ok = sum(r.outcome == "resolved" for r in good)
    bad_ok = sum(r.outcome in LEAVES for r in bad)
    unearned = sum(r.unearned for r in rows)
    out = []
    if formula:
        out.append(Goal(name="formula resolved (goal 0)", value=f"{resolved}/{len(formula)}", met=resolved == 0))
        out.append(Goal(name=f"formula anger ends > {FORMULA_MAX_CALM:g} below start (goal 0)",
                        value=f"{len(calmed)}/{len(formula)}", met=not calmed))  # fmt: skip
    probes = [("catch-all", [r for r in rows if r.kind == "catchall"])]
    probes += [(name, [r for r in rows if r.kind == "gaming" and r.script.partition(":")[0] == name])
               for name in GAMING_PROBES]  # fmt: skip
    for name, probe in probes:
        # No goal in issue 20: a catch-all list holding this patient's own remedy, or a gaming script
        # that stumbles on it, may rightly calm or settle the patient; the transcripts say which.
        if probe:
            settled = sum(r.outcome == "resolved" for r in probe)
            calmed_too = sum(r.anger_end < r.anger_start - FORMULA_MAX_CALM for r in probe)
            out.append(Goal(name=f"{name} resolved (probe)", value=f"{settled}/{len(probe)}", met=None))
            out.append(Goal(name=f"{name} anger ends > {FORMULA_MAX_CALM:g} below start (probe)",
                            value=f"{calmed_too}/{len(probe)}", met=None))  # fmt: skip
    if good:
        out.append(Goal(name="good resolved (goal all)", value=f"{good_ok}/{len(good)}", met=good_ok == len(good)))
    if bad:
        out.append(Goal(name="bad escalated or left (goal all)", value=f"{bad_ok}/{len(bad)}", met=bad_ok == len(bad)))
    out.append(Goal(name="unearned acceptance lines (goal 0)", value=str(unearned), met=unearned == 0))
    return out


@contextlib.contextmanager
def patient_for(args: argparse.Namespace) -> Iterator[Callable[[], PatientModel]]:
    """A factory of patient models: the fake (a fresh one per session) or the embedded server's."""
    if args.patient == "fake":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from fakes import FakeModel

        yield FakeModel
        return
    if args.base_url:
        settings = LLMSettings(backend=Backend.EMBEDDED, model=args.model, base_url=args.base_url, timeout=args.timeout)
        yield lambda: patient_model(settings)
        return
    workdir = Path(tempfile.mkdtemp(prefix="substance-"))
    with EmbeddedServer(model=args.model, log_path=workdir / "llama-server.log") as server:
        server.ensure()
        settings = LLMSettings(backend=Backend.EMBEDDED, model=args.model, base_url=server.openai_base_url,
                               timeout=args.timeout)  # fmt: skip
        yield lambda: patient_model(settings)


def table(rows: list[Row]) -> list[str]:
    lines = [f"{'persona':26s} {'script':20s} {'outcome':11s} {'turns':>5s}  {'anger':12s} {'unearned':>8s}"]
    for r in rows:
        anger = f"{r.anger_start:g} -> {r.anger_end:g}"
        lines.append(f"{r.persona:26s} {r.script:20s} {r.outcome:11s} {r.turns:5d}  {anger:12s} {r.unearned:>8d}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Formula trainees (magic phrases, no fact, no real offer) and each persona's good and bad "
        "script, against every persona: outcome, turns, anger start -> end, unearned acceptance lines, and "
        "the totals against issue 20's goals.",
        epilog="--patient fake: outcomes in seconds (they depend only on the verdicts on the trainee's lines); "
        "the model (default) also counts unearned acceptance lines.",
    )
    parser.add_argument("--persona", default="", help="comma-separated persona ids (default: all)")
    parser.add_argument("--scripts", default="formula,catchall,gaming,good,bad",
                        help="comma-separated: formula (every formula script), formula:NAME, catchall, catchall:NAME, "
                        "gaming, gaming:NAME, gaming2, gaming2:NAME, good, good:NAME "
                        "(personas/scripts/good_NAME.yaml: the good trainee in other words), bad "
                        "(default: formula,catchall,gaming,good,bad)")  # fmt: skip
    parser.add_argument("--turns", type=int, default=8, help="trainee turns per session, fewer if it ends (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="model seed; each turn adds its index (default 7)")
    parser.add_argument("--temperature", type=float, default=0.7, help="patient sampling temperature (app: 0.7)")
    parser.add_argument("--model", choices=("default", "small"), default="default",
                        help="the embedded model that plays the patient (default: default)")  # fmt: skip
    parser.add_argument("--patient", choices=("model", "fake"), default="model",
                        help="model: the embedded model plays the patient; fake: the deterministic fake")  # fmt: skip
    parser.add_argument("--base-url", default="", help="use this OpenAI-compatible llama.cpp server instead")
    parser.add_argument("--timeout", type=float, default=120.0, help="model request timeout, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    wanted = {p for p in args.persona.split(",") if p}
    personas = [p for p in load_personas() if not wanted or p.id in wanted]
    if unknown := wanted - {p.id for p in personas}:
        parser.error(f"unknown persona(s) {sorted(unknown)}")
    wanted_scripts = [s for s in args.scripts.split(",") if s]
    plays = {p.id: scripts_to_play(wanted_scripts, p.id) for p in personas}
    began = time.perf_counter()
    rows: list[Row] = []
    with patient_for(args) as patient:
        for persona in personas:
            for label, kind, trainee in plays[persona.id]:
                row = play(persona, label, kind, trainee, patient(), args)
                rows.append(row)
                print(f"{row.persona:26s} {row.script:20s} {row.outcome:11s} {row.turns} turns "
                      f"anger {row.anger_start:g} -> {row.anger_end:g}  {row.seconds:.1f} s", file=sys.stderr,
                      flush=True)  # fmt: skip
    seconds = round(time.perf_counter() - began, 1)
    patient_name = "fake" if args.patient == "fake" else args.model
    summary = {"patient": patient_name, "temperature": args.temperature, "seed": args.seed, "turns": args.turns,
               "personas": len(personas), "sessions": len(rows), "seconds": seconds}  # fmt: skip
    results = goals(rows)
    if args.json:
        print(json.dumps({**summary, "goals": [g.model_dump() for g in results],
                          "rows": [r.model_dump() for r in rows]}, indent=2))  # fmt: skip
        return 0
    print(f"{len(rows)} sessions ({len(personas)} personas, {len(rows) // max(len(personas), 1)} scripts each, "
          f"up to {args.turns} turns) "
          f"on the {patient_name} patient in {seconds} s")  # fmt: skip
    print("\n".join(table(rows)))
    print()
    for goal in results:
        mark = "?" if goal.met is None else ("ok" if goal.met else "MISSED")
        print(f"  {goal.name:48s} {goal.value:>8s}  {mark}")
    for row in (r for r in rows if r.missed_goal()):
        print(f"\n{row.persona} / {row.script}: {row.outcome}, anger {row.anger_start:g} -> {row.anger_end:g}")
        for number, line in enumerate(row.lines, start=1):
            print(f"  {number}. trainee: {line.trainee}\n     [anger {line.anger:g}; {', '.join(line.moved_by) or '-'}]"
                  f"\n     patient: {line.patient}")  # fmt: skip
    flagged = [(r, f) for r in rows for f in r.unearned_lines]
    if flagged:
        print("\nunearned acceptance lines:")
    for row, line in flagged:
        print(f"- {row.persona} / {row.script} turn {line.turn}: {line.sentence!r} ({line.why})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Grounded verdicts for the content steps: a summary restates the complaint, an offer is concrete
and meets (or misses) what the patient wants, a vague promise to find out counts once.

Why (issue 20, design.md "Substance"): the checks and the classifier judge the *form* of a reply, so
"So if I understand you, the problem is what you just described" was credited as a summary and "Let
me find out what we can do" as an offer, turn after turn. Here the verdicts those stages gave are
held against the conversation: the persona's complaint ``facts`` and what the patient said this
session (``context.history``) for a summary; the persona's ``wants`` for an offer; how often a
promise to find out was already credited (``context.earlier``).

How: words and forms (what / when / who of an offer, questions that ask the patient to explain,
blame that undercuts a restatement) are data in ``rubrics/<rubric>.grounding.yaml``; the *match* to a
fact or a remedy is by content-word overlap and the sentence encoder (cosine), thresholds chosen on
``tests/data/gold/grounded/train.jsonl``. The chat model decides nothing. Facts, remedies and the
patient's lines are embedded once and cached (they repeat every turn); only the reply's sentences are
new each turn. Without an encoder the overlap alone decides.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache, lru_cache, partial
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict

from agent import checks, embed
from agent.checks import Meets, StepVerdict, TurnContext
from agent.personas import Remedy, Wants
from agent.rubrics import Rubric

SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+|\s+-\s+")
CLAUSE = re.compile(r",\s*(?:and|or|but|then)?\s*|\s+(?:and|or|then)\s+(?=(?:i|ill|we|well|if|youll|let|the|our)\b)")
WORD = re.compile(r"[a-z0-9]+")
KINDS: dict[str, Meets] = {"resolves": "met", "rejects": "rejected", "partly": "partly"}
# When an offer names several remedies, the one that matters most to the patient decides ``meets``.
PRIORITY: dict[str, int] = {"met": 0, "rejected": 1, "partly": 2, "none": 3}
CONTENT_STEPS = ("summarize", "offer_solution", "find_out")


class GroundingData(BaseModel):
    """The grounding YAML, compiled (see the file's comments for what each list means)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    stopwords: frozenset[str]
    frame_words: frozenset[str]
    asks: tuple[re.Pattern[str], ...]
    answers: tuple[re.Pattern[str], ...]
    undercut: tuple[re.Pattern[str], ...]
    promise: tuple[re.Pattern[str], ...]
    offer_what: tuple[re.Pattern[str], ...]
    when: tuple[re.Pattern[str], ...]
    contact: tuple[re.Pattern[str], ...] = ()
    who: tuple[re.Pattern[str], ...]
    roles: tuple[re.Pattern[str], ...] = ()
    handoff: tuple[re.Pattern[str], ...] = ()
    readout: tuple[re.Pattern[str], ...] = ()
    # when a remedy is for, and what is later than that (see :func:`_too_late`)
    for_today: tuple[re.Pattern[str], ...] = ()
    for_this_week: tuple[re.Pattern[str], ...] = ()
    open_day: tuple[re.Pattern[str], ...] = ()
    later_than_today: tuple[re.Pattern[str], ...] = ()
    later_than_this_week: tuple[re.Pattern[str], ...] = ()
    failure: tuple[re.Pattern[str], ...] = ()
    find_out_topic: tuple[re.Pattern[str], ...]
    staff_does: tuple[re.Pattern[str], ...] = ()
    find_out_offer: tuple[tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...]] = ((), ())
    hedges: tuple[re.Pattern[str], ...] = ()
    # (how an offer names the remedy, what a conversation it belongs in talks about)
    remedy_objects: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = ()
    cue_determiners: frozenset[str]
    synonyms: tuple[tuple[str, ...], ...]
    text_speak: tuple[tuple[str, str], ...] = ()
    summarize_overlap: int
    summarize_cosine: float
    remedy_overlap: int
    remedy_cosine: float


def data_path(rubric: Rubric) -> Path | None:
    """``rubrics/deescalation.yaml`` -> ``rubrics/deescalation.grounding.yaml`` (None: not from a file)."""
    return None if rubric.source is None else rubric.source.with_suffix(".grounding.yaml")


def many_in(raw: dict[str, list[str]], key: str) -> tuple[re.Pattern[str], ...]:
    """The patterns listed under ``key`` of a YAML mapping (the file's top level or a nested group), compiled."""
    return tuple(re.compile(p, re.IGNORECASE) for p in raw.get(key, []))


@cache
def load_data(path: Path) -> GroundingData:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    many = partial(many_in, raw)
    limits = raw["thresholds"]
    find_out_offer = raw.get("find_out_offer") or {}
    return GroundingData(
        stopwords=frozenset(raw["stopwords"].split()),
        frame_words=frozenset(raw["frame_words"].split()),
        asks=many("asks"),
        answers=many("answers"),
        undercut=many("undercut"),
        promise=many("promise"),
        offer_what=many("offer_what"),
        when=many("when"),
        contact=many("contact"),
        handoff=many("handoff"),
        readout=many("readout"),
        for_today=many("for_today"),
        for_this_week=many("for_this_week"),
        open_day=many("open_day"),
        later_than_today=many("later_than_today"),
        later_than_this_week=many("later_than_this_week"),
        who=many("who"),
        roles=many("roles"),
        failure=many("failure"),
        find_out_topic=many("find_out_topic"),
        hedges=many("hedges"),
        remedy_objects=tuple(_remedy_object(path, i, entry) for i, entry in enumerate(raw.get("remedy_objects") or [])),
        staff_does=many("staff_does"),
        find_out_offer=(many_in(find_out_offer, "ask"), many_in(find_out_offer, "back")),
        cue_determiners=frozenset(raw.get("cue_determiners", "").split()),
        synonyms=tuple(tuple(plain(str(w)) for w in group) for group in raw.get("synonyms", [])),
        text_speak=tuple((plain(str(k)), plain(str(v))) for k, v in (raw.get("text_speak") or {}).items()),
        summarize_overlap=int(limits["summarize_overlap"]),
        summarize_cosine=float(limits["summarize_cosine"]),
        remedy_overlap=int(limits["remedy_overlap"]),
        remedy_cosine=float(limits["remedy_cosine"]),
    )


def _remedy_object(path: Path, index: int, entry: object) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One ``remedy_objects`` entry: (how an offer names the remedy, the topic it belongs to)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("offer"), str):
        raise ValueError(f"{path}: remedy_objects[{index}]: expected a mapping with an 'offer' pattern")
    offer = re.compile(entry["offer"], re.IGNORECASE)
    topic = entry.get("topic")
    return offer, re.compile(topic, re.IGNORECASE) if isinstance(topic, str) and topic else offer


def data_for(rubric: Rubric) -> GroundingData | None:
    """The rubric's grounding data, or None when it has none (its verdicts are then left as they are)."""
    path = data_path(rubric)
    return load_data(path) if path is not None and path.is_file() else None


# -- text ------------------------------------------------------------------------------------------


def plain(text: str) -> str:
    """Lower case, apostrophes removed ("I'll" -> "ill"), as the patterns are written."""
    return "".join(c for c in text.lower() if c not in checks.APOSTROPHES)


# Where a word of a substitution map may start and end: between word boundaries (synonyms), or between
# anything but word characters and "/" (chat shorthand, whose keys include "w/").
WORD_EDGES = (r"\b", r"\b")
TOKEN_EDGES = (r"(?<![\w/])", r"(?![\w/])")


@cache
def _word_map(
    pairs: tuple[tuple[str, str], ...], edges: tuple[str, str]
) -> tuple[re.Pattern[str], dict[str, str]] | None:
    """One pattern for every key of ``pairs`` (longest first: "give you a call" before "call"), and the map."""
    mapping = dict(pairs)
    if not mapping:
        return None
    keys = sorted(mapping, key=len, reverse=True)
    return re.compile(edges[0] + "(" + "|".join(re.escape(k) for k in keys) + ")" + edges[1]), mapping


def _substitute(text: str, pairs: tuple[tuple[str, str], ...], edges: tuple[str, str]) -> str:
    found = _word_map(pairs, edges)
    if found is None:
        return text
    pattern, mapping = found
    return pattern.sub(lambda m: mapping[m.group()], text)


def spoken(text: str, data: GroundingData) -> str:
    """:func:`plain` with chat shorthand written out ("booked u in" -> "booked you in"), for the offer forms."""
    return _substitute(plain(text), data.text_speak, TOKEN_EDGES)


def sentences(text: str) -> list[str]:
    """The text's sentences ("Mr. Carter" does not end one); empty parts dropped."""
    protected = checks.TITLE_DOT.sub(lambda m: m.group(1) + "\u2024", text)
    parts = (p.replace("\u2024", ".").strip() for p in SENTENCE.split(protected))
    return [p for p in parts if WORD.search(p.lower())]


def stem(word: str) -> str:
    """A crude stem so that "waiting" meets "waited" and "days" meets "day" (content words only)."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def content_words(text: str, data: GroundingData) -> set[str]:
    ignore = data.stopwords | data.frame_words
    return {stem(w) for w in WORD.findall(plain(text)) if w not in ignore and len(w) > 1}


def _hit(patterns: tuple[re.Pattern[str], ...], text: str) -> re.Match[str] | None:
    return next((m for p in patterns if (m := p.search(text))), None)


# -- vectors, cached -------------------------------------------------------------------------------


class _Vectors:
    """Sentence vectors by text, most recent kept: facts, remedies and the patient's lines come back
    every turn of a session, so each is embedded once (per process), not once per turn. Keyed by
    the encoder too: a vector from one encoder means nothing to another."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.items: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, encoder: embed.TextEncoder, texts: list[str]) -> np.ndarray:
        owner = id(encoder)
        with self.lock:
            missing = [t for t in dict.fromkeys(texts) if (owner, t) not in self.items]
        if missing:
            found = encoder.encode(missing)
            with self.lock:
                for text, vector in zip(missing, found, strict=True):
                    self.items[(owner, text)] = vector
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
        with self.lock:
            for text in texts:
                self.items.move_to_end((owner, text))
            return np.vstack([self.items[(owner, t)] for t in texts]) if texts else np.zeros((0, embed.DIMENSIONS))


VECTORS = _Vectors()


# -- summarize -------------------------------------------------------------------------------------


class Restated(BaseModel):
    """A reply sentence that restates a fact: the sentence (evidence) and the fact (grounds)."""

    sentence: str
    fact: str
    overlap: int
    cosine: float | None


def complaint(context: TurnContext, data: GroundingData) -> list[str]:
    """What the patient's complaint is made of: the persona's facts, then each sentence the patient
    said this session (a trainer-written persona may list no facts; a gold line has only history).

    A patient sentence that answers the trainee (thanks, "Yes, I think so.": the ``answers`` patterns)
    or has fewer content words than a restatement must share ("Fine.", "Hello?") is no fact: it
    names nothing of the complaint, and by similarity alone a formula line would match it ("I
    apologize for the trouble." and the patient's "I appreciate your apology.").
    """
    said = [
        s for m in context.history if m.role == "patient" for s in sentences(m.content)
        if len(content_words(s, data)) >= data.summarize_overlap and not _hit(data.answers, plain(s))
    ]  # fmt: skip
    return list(dict.fromkeys([*context.facts, *said]))


def _summary_candidates(reply: str, data: GroundingData) -> list[str]:
    """Sentences that could restate the complaint: not a question asking the patient to explain, not
    the writer's own promise, not an offer ("The therapist can give you a plan for the two weeks")."""
    out = []
    for sentence in sentences(reply):
        text = plain(sentence)
        if _hit(data.asks, text) or _hit(data.promise, text) or _is_offer(text, data):
            continue
        out.append(sentence)
    return out


def restated(reply: str, context: TurnContext, facts: list[str], data: GroundingData,
             encoder: embed.TextEncoder | None) -> Restated | None:  # fmt: skip
    """The best sentence of ``reply`` that restates one of ``facts`` (:func:`complaint`), or None."""
    candidates = _summary_candidates(reply, data)
    if not facts or not candidates:
        return None
    fact_words = [content_words(f, data) for f in facts]
    best: Restated | None = None
    cosines = None
    if encoder is not None:
        cosines = VECTORS.get(encoder, candidates) @ VECTORS.get(encoder, facts).T
    written = set(context.facts)
    for i, sentence in enumerate(candidates):
        words = content_words(sentence, data)
        # A question restates only in the words it shares: by similarity alone "Would that work?" is
        # close to the patient's "Yes, that would be great." and names nothing of the complaint.
        similar_counts = not sentence.rstrip().endswith("?")
        for j, fact in enumerate(facts):
            overlap = len(words & fact_words[j])
            cosine = None if cosines is None else float(cosines[i, j])
            # Similarity alone restates a persona's fact (written by the trainer, in other words than
            # a trainee's); a line the patient said this session must share a content word as well:
            # a formula's kind words are close to the patient's kind answers without naming anything.
            similar = (similar_counts and (fact in written or overlap > 0)
                       and cosine is not None and cosine >= data.summarize_cosine)  # fmt: skip
            found = overlap >= data.summarize_overlap or similar
            if not found:
                continue
            score = overlap + (cosine or 0.0)
            if best is None or score > best.overlap + (best.cosine or 0.0):
                best = Restated(sentence=sentence, fact=fact, overlap=overlap, cosine=cosine)
    return best


def ground_summarize(verdict: StepVerdict, reply: str, context: TurnContext, verdicts: dict[str, StepVerdict],
                     data: GroundingData, encoder: embed.TextEncoder | None) -> StepVerdict:  # fmt: skip
    """Demonstrated only when a sentence restates a fact; a clear restatement the form checks missed
    is credited (any wording); a frame with nothing in it, or a restatement turned into blame, is missed."""
    if verdict.verdict not in ("demonstrated", "missed"):
        return verdict
    facts = complaint(context, data)
    persona = bool(context.persona_name or context.facts or context.wants)
    if not facts or not persona or (verdict.verdict == "missed" and not context.facts):
        # Grounding needs a patient the trainee is talking to (a persona), and crediting a restatement
        # the form checks missed needs its facts: against a free message alone (another register: a
        # support tweet, a counselling question) echoing its words is how any long answer begins, and
        # on the held-out human file (no persona) grounding took summarize kappa 0.094 -> -0.014.
        return verdict
    # Blame the checks quote (a classifier's guess at hostility is too often a plain restatement).
    quoted = [s for s in ("argue_back", "dismiss_feelings", "lose_cool") if s in verdicts
              and verdicts[s].verdict == "violated" and verdicts[s].source == "check"]  # fmt: skip
    hostile = quoted[0] if quoted else None
    undercut = _hit(data.undercut, plain(reply))
    found = restated(reply, context, facts, data, encoder)
    if found is not None and hostile is None and undercut is None:
        return verdict.model_copy(update={
            "verdict": "demonstrated", "evidence": found.sentence, "grounds": found.fact,
            "confidence": max(verdict.confidence, 0.8) if verdict.verdict == "missed" else verdict.confidence,
            "source": verdict.source})  # fmt: skip
    if found is not None:
        why = f"restated, then turned against the patient ({undercut.group() if undercut else hostile})"
        return StepVerdict(step_id=verdict.step_id, verdict="missed", confidence=verdict.confidence,
                           source=verdict.source, evidence=found.sentence, grounds=why)  # fmt: skip
    example = context.facts[0] if context.facts else facts[0]
    why = f'no fact of the complaint restated: restate what you were told, e.g. "{example}"'
    return StepVerdict(step_id=verdict.step_id, verdict="missed", confidence=verdict.confidence,
                       source=verdict.source, evidence=None, grounds=why)  # fmt: skip


# -- offer_solution --------------------------------------------------------------------------------


class Offer(BaseModel):
    """A concrete offer found in a reply: the sentence, and the words that made it concrete."""

    sentence: str
    what: str
    when: str | None
    who: str | None


def concrete_offer(reply: str, data: GroundingData, anchor: str | None = None) -> tuple[Offer | None, list[str]]:
    """The reply's first concrete offer (what, and when or who), or None and what was missing.

    What and a time alone make an offer only in the sentence the form checks or the classifier
    quoted as one (``anchor``), and only where that sentence does not tell what went wrong
    (``data.failure``): "now you've been told the appointment is tomorrow" names a thing and a time,
    and offers nothing. Who (the speaker committing, or a named role) makes the sentence an offer.
    """
    has_what = has_when = False
    for sentence in sentences(reply):
        text = spoken(sentence, data)
        # "Could you tell me what happened ... so I can sort it out?"; "The system shows you're booked for 3:15."
        if _hit(data.asks, text) or _read_out(text, data):
            continue
        what = _hit(data.offer_what, text)
        when = _hit(data.when, text)
        who = _who(text, data)
        has_what = has_what or what is not None
        has_when = has_when or when is not None or who is not None
        anchored = bool(anchor and (anchor in sentence or sentence in anchor))
        offered = who is not None or (anchored and not _hit(data.failure, text))
        if what is not None and offered and (when is not None or who is not None):
            return Offer(sentence=sentence, what=what.group(), when=when and when.group(),
                         who=who and who.group()), []  # fmt: skip
    missing = [] if has_what else ["what you will do (an action or a thing)"]
    if not has_when or has_what:
        missing.append("when (a time) or who (you, or a named person or role)")
    return None, missing


def _who(text: str, data: GroundingData) -> re.Match[str] | None:
    """Who commits to the offer: the speaker or a named person (``data.who``), or a named role
    (``data.roles``) in a sentence that does not tell what went wrong (``data.failure``: "nobody
    called you back", "your physio referral was sent two weeks ago and still hasn't been processed")."""
    if found := _hit(data.who, text):
        return found
    role = _hit(data.roles, text)
    return role if role is not None and not _hit(data.failure, text) else None


class Match(BaseModel):
    meets: Meets
    remedy: Remedy
    clause: str
    by: str


def _clauses(sentence: str) -> list[str]:
    parts = [p.strip() for p in CLAUSE.split(sentence) if p and len(p.split()) >= 2]
    return parts or [sentence]


@cache
def _synonym_pairs(synonyms: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, str], ...]:
    """Each word of each synonym group with the group's first word (a later group wins a shared word)."""
    return tuple((word, group[0]) for group in synonyms for word in group)


@lru_cache(maxsize=4096)  # bounded: every offer clause of every session passes through here
def _canon(text: str, synonyms: tuple[tuple[str, ...], ...]) -> str:
    """``text`` (plain) with each synonym replaced by the first word of its group."""
    return _substitute(text, _synonym_pairs(synonyms), WORD_EDGES)


@cache
def cue_pattern(cue: str, determiners: frozenset[str], synonyms: tuple[tuple[str, ...], ...]) -> re.Pattern[str]:
    """A cue as a pattern over canonical text: determiners interchangeable or left out, each other
    word in any of its endings ("result" meets "results", "process" meets "processing")."""
    dets = "|".join(sorted(determiners))
    parts = []
    for word in _canon(plain(cue), synonyms).split():
        if word in determiners:
            continue
        parts.append(re.escape(stem(word)) + r"\w*" if len(word) > 3 else re.escape(word))  # "in" is not "into"
    gap = rf"\s+(?:(?:{dets})\s+)?" if dets else r"\s+"
    return re.compile(r"\b" + gap.join(parts) + r"\b") if parts else re.compile(r"(?!)")


def cue_in(cue: str, text: str, data: GroundingData) -> bool:
    """Whether an offer's ``text`` (:func:`spoken`) names ``cue`` (see :func:`cue_pattern`)."""
    return cue_pattern(cue, data.cue_determiners, data.synonyms).search(_canon(text, data.synonyms)) is not None


def told_to(cue: str, text: str, data: GroundingData) -> bool:
    """Whether a rejected remedy's ``cue`` is in ``text`` as something the patient is left to do.

    "Call your GP yourself" is the rejection; "I'll ring your GP this morning" names the same words
    and is staff doing it for them (``data.staff_does``: the speaker or a named person committing
    right before the cue)."""
    canon = _canon(text, data.synonyms)
    for found in cue_pattern(cue, data.cue_determiners, data.synonyms).finditer(canon):
        said = canon[: found.start()] + found.group().split()[0]  # up to the cue's first word
        if not any(p.search(said) for p in data.staff_does):
            return True
    return False


def match_wants(offers: list[str], wants: Wants, data: GroundingData,
                encoder: embed.TextEncoder | None) -> Match | None:  # fmt: skip
    """Which remedy the offered clauses match: per clause the best match (the longest cue it names, else
    the remedy whose ``says`` it shares the most content words with, at least ``remedy_overlap``, else
    the remedy nearest by the encoder, if near enough); over the clauses, the one that matters most
    to the patient (met, then rejected, then partly). "An exercise plan today" names the cue "today"
    of a same-day slot and the cue "exercise plan" of the exercise sheet: it offers the sheet."""
    remedies = wants.all()
    # each clause with the remedies its sentence's day is too late for (read once per sentence)
    placed = [(clause, late) for sentence in offers
              for late in [{remedy.id for kind, remedy in remedies
                            if kind != "rejects" and _too_late(spoken(sentence, data), remedy, data)}]
              for clause in _clauses(sentence)]  # fmt: skip
    clauses = [clause for clause, _ in placed]
    cosines = None
    if encoder is not None and clauses:
        cosines = VECTORS.get(encoder, clauses) @ VECTORS.get(encoder, [r.says for _, r in remedies]).T
    # shared words count only where they say what or how, not when ("today", "this afternoon")
    remedy_words = [_said_words(_untimed(spoken(remedy.says, data), data), data) for _, remedy in remedies]
    found: list[Match] = []
    for i, (clause, late) in enumerate(placed):
        text = spoken(clause, data)
        cued = [(len(cue), kind, remedy, cue) for kind, remedy in remedies for cue in remedy.cues
                if remedy.id not in late and (told_to if kind == "rejects" else cue_in)(cue, text, data)]  # fmt: skip
        # A cue that says only when or how ("call you back by four") does not name a remedy that settles
        # the complaint: the clause is a call or a time about something else, and neither the cue nor
        # similarity decides it. (A partial remedy may be just that: "a call back at a stated time".)
        bare = [item for item in cued if item[1] == "resolves" and _generic(item[3], data)
                and not _names_what(text, item[2], data)]  # fmt: skip
        cued = [item for item in cued if item not in bare]
        if cued:
            _, kind, remedy, cue = max(cued, key=lambda item: item[0])
            found.append(Match(meets=KINDS[kind], remedy=remedy, clause=clause, by=f'cue "{cue}"'))
            continue
        words = _said_words(_untimed(text, data), data)
        shared = [(len(both), kind, remedy, both) for (kind, remedy), says in zip(remedies, remedy_words, strict=True)
                  if kind != "rejects" and remedy.id not in late
                  and len(both := words & says) >= data.remedy_overlap]  # fmt: skip
        if shared:
            _, kind, remedy, both = max(shared, key=lambda item: item[0])
            # the trainee's own words, not their stems ("chase", not "chas"), for the feedback
            said = dict.fromkeys(w for w in WORD.findall(text) if stem(_canon(w, data.synonyms)) in both)
            by = "words " + ", ".join(f'"{w}"' for w in (said or sorted(both)))
            found.append(Match(meets=KINDS[kind], remedy=remedy, clause=clause, by=by))
        elif cosines is not None and not bare:
            # Similarity never says an offer is one the patient rejects: that takes the rejected remedy's
            # own words (a cue). Measured on offers_dev.jsonl, the nearest remedy by cosine was a rejected
            # one for bookings and call-backs that met the patient's need ("keep waiting" for "booked in
            # with physio this Friday").
            allowed = np.array([kind != "rejects" and remedy.id not in late for kind, remedy in remedies])
            j = int(np.argmax(np.where(allowed, cosines[i], -1.0)))
            if allowed[j] and cosines[i, j] >= data.remedy_cosine:
                kind, remedy = remedies[j]
                by = f"similarity {cosines[i, j]:.2f}"
                found.append(Match(meets=KINDS[kind], remedy=remedy, clause=clause, by=by))
    return min(found, key=lambda m: PRIORITY[m.meets]) if found else None


def _too_late(sentence: str, remedy: Remedy, data: GroundingData) -> bool:
    """Whether an offer's ``sentence`` (:func:`spoken`) is for a later day than ``remedy`` is for: its
    ``says`` for this week and the sentence only for next week or later, or for today ("now", "seen
    next") and the sentence only for a later day. "Book him the first session next Tuesday at 8:30"
    is a near miss of "her father is seen next"; a ``says`` with no time, one that is itself for later
    ("the earliest appointment after he is back from his trip, booked now") or one that leaves the day
    open (``data.open_day``: "with a date by which she hears the result") is never too late."""
    says = spoken(remedy.says, data)
    soon = (*data.for_today, *data.for_this_week)
    if _hit(data.for_this_week, says):
        return bool(_hit(data.later_than_this_week, sentence) and not _hit(soon, sentence))
    if _hit(data.for_today, says) and not _hit((*data.later_than_today, *data.open_day), says):
        return bool(_hit(data.later_than_today, sentence) and not _hit(soon, sentence))
    return False


def _with_told(match: Match | None, reply: str, offers: Sequence[str], wants: Wants,
               data: GroundingData) -> Match | None:  # fmt: skip
    """``match``, unless a sentence beside the offers tells the patient what they reject: "I'll refund
    your parking ticket here now. The visit charge, though, you'll need to pay today and dispute
    afterwards." offers the refund and tells her to pay first. What a patient is told to do or to wait
    for is seldom an offer sentence, so the rejected remedies are read in every sentence; a rejected
    remedy outranks a partial one (and none), not one that meets the need."""
    if match is not None and PRIORITY[match.meets] <= PRIORITY["rejected"]:
        return match
    for sentence in sentences(reply):
        if sentence in offers:
            continue
        for clause in _clauses(sentence):
            text = spoken(clause, data)
            for remedy in wants.rejects:
                if cue := next((c for c in remedy.cues if told_to(c, text, data)), None):
                    return Match(meets="rejected", remedy=remedy, clause=clause, by=f'cue "{cue}"')
    return match


def _untimed(text: str, data: GroundingData) -> str:
    """``text`` (:func:`spoken`) without its times and dates (``data.when``)."""
    for pattern in data.when:
        text = pattern.sub(" ", text)
    return text


def _unspecific(text: str, data: GroundingData) -> str:
    """``text`` (:func:`spoken`) without what an offer to any patient says: its times and dates and how
    staff get back to the patient (``data.contact``: "call you back", "hear from me")."""
    for pattern in data.contact:
        text = pattern.sub(" ", text)
    return _untimed(text, data)


def _unnamed(text: str, data: GroundingData) -> str:
    """``text`` (:func:`spoken`) without its roles (``data.roles``: "the manager", "his therapist")."""
    for pattern in data.roles:
        text = pattern.sub(" ", text)
    return text


def _generic(cue: str, data: GroundingData) -> bool:
    """Whether a cue says only when, how or who ("today", "by Friday", "call you back at", "hear from
    me", "manager", "his therapist"), not what: it fits an offer to any patient ("I've passed this to
    our clinic manager"), so it points to its remedy only beside what that is."""
    return not _said_words(_unnamed(_unspecific(spoken(cue, data), data), data), data)


def _names_what(text: str, remedy: Remedy, data: GroundingData) -> bool:
    """Whether an offer's ``text`` names what ``remedy`` is, beyond when and how: a content word shared
    with what the remedy says or with one of its specific cues. "I'll get that sorted for you today"
    names only the time of Mr. Carter's same-day slot; "Dr. Patel can see you this afternoon" names it.
    A role the complaint is handed to (``data.handoff``: "I've passed this on to our clinic manager")
    is who hears about it, not what the patient gets: it names nothing."""
    said = _unspecific(text, data)
    if _hit(data.handoff, text):
        said = _unnamed(said, data)
    about = " ".join([remedy.says, *(cue for cue in remedy.cues if not _generic(cue, data))])
    return bool(_said_words(said, data) & _said_words(_unspecific(spoken(about, data), data), data))


def _said_words(text: str, data: GroundingData) -> set[str]:
    """Content words of ``text`` (:func:`spoken`) as the cues read it (synonyms as one word)."""
    return content_words(_canon(text, data.synonyms), data)


def _is_offer(text: str, data: GroundingData) -> bool:
    """Something concrete offered by the speaker or a named role (see :func:`concrete_offer`)."""
    return bool(_hit(data.offer_what, text) and _who(text, data) and not _hit(data.asks, text)
                and not _read_out(text, data))  # fmt: skip


def _read_out(text: str, data: GroundingData) -> bool:
    """What the records say, or an offer hedged into a maybe, with no promise of the speaker's
    (``data.readout``): "The system shows you're booked with Dr Stein at 3:15" offers nothing."""
    return bool(_hit(data.readout, text) and not _hit(data.promise, text))


def offer_sentences(reply: str, data: GroundingData) -> list[str]:
    """Every sentence of the reply that offers something concrete."""
    return [sentence for sentence in sentences(reply) if _is_offer(spoken(sentence, data), data)]


def foreign_remedies(offers: Sequence[str], context: TurnContext, data: GroundingData) -> list[str]:
    """The remedies the offers name (``remedy_objects``, the trainee's words) whose topic nothing in
    this conversation raised: not the persona's facts, not its wants (what each says, its cues), not
    the patient, unless the trainee named it first ("I don't need a refund, a nurse" answers an offer,
    it raises nothing). A remedy for someone else's problem: a catch-all list, not an answer."""
    texts = [spoken(offer, data) for offer in offers]
    named = [(found.group(0), topic) for offered, topic in data.remedy_objects for text in texts
             if (found := offered.search(text))]  # fmt: skip
    if not named:
        return []
    wants = [text for _, remedy in context.wants.all() for text in (remedy.says, *remedy.cues)] if context.wants else []
    persona = spoken(" ".join([*context.facts, *wants]), data)
    said: list[tuple[str, str]] = []  # each patient line, with what the trainee had said before it
    trainee = ""
    for message in context.history:
        if message.role == "patient":
            said.append((spoken(message.content, data), trainee))
        else:
            trainee += " " + spoken(message.content, data)

    def raised(topic: re.Pattern[str]) -> bool:
        return bool(topic.search(persona)) or any(topic.search(line) and not topic.search(before)
                                                  for line, before in said)  # fmt: skip

    return list(dict.fromkeys(word for word, topic in named if not raised(topic)))


def ground_offer(verdict: StepVerdict, reply: str, context: TurnContext, data: GroundingData,
                 encoder: embed.TextEncoder | None, offers: Sequence[str] | None = None) -> StepVerdict:  # fmt: skip
    """Demonstrated only when the offer is concrete; with the persona's wants, whether it meets them.

    ``offers``: the reply's concrete offer sentences (:func:`offer_sentences`) when the caller has them.

    A concrete offer the form checks did not see ("I'll print you a home exercise sheet now") is credited.
    Only in a persona's conversation (facts or wants): the what / when / who forms are the clinic's,
    and a reply in another register (a support tweet's "try resetting it") is left as the checks judged it.
    """
    if verdict.verdict not in ("demonstrated", "missed") or not (context.facts or context.wants):
        return verdict
    anchor = verdict.evidence if verdict.verdict == "demonstrated" else None
    offer, missing = concrete_offer(reply, data, anchor)
    if offer is None and verdict.verdict == "missed":
        return verdict
    if offer is None:
        return StepVerdict(step_id=verdict.step_id, verdict="missed", confidence=verdict.confidence,
                           source=verdict.source, evidence=verdict.evidence,
                           grounds="not concrete: say " + " and ".join(missing))  # fmt: skip
    update: dict[str, object] = {"verdict": "demonstrated", "evidence": offer.sentence}
    if context.wants is not None:
        offers = list(offer_sentences(reply, data) if offers is None else offers) or [offer.sentence]
        if foreign := foreign_remedies(offers, context, data):
            update |= {"meets": "none", "remedy": None,
                       "grounds": f"concrete, but it offers {_listed(foreign)}, which nothing in this conversation "
                       "is about: remedies for other problems read as a script, not an answer to this one"}  # fmt: skip
        elif (match := _with_told(match_wants(offers, context.wants, data, encoder), reply, offers, context.wants,
                                  data)) is None:  # fmt: skip
            update |= {"meets": "none", "remedy": None,
                       "grounds": "concrete, but it meets none of the patient's needs: "
                       + "; ".join(r.says for r in context.wants.resolves)}  # fmt: skip
        else:
            update |= {"meets": match.meets, "remedy": match.remedy.id, "evidence": match.clause,
                       "grounds": f"{match.remedy.says} ({match.by})"}  # fmt: skip
    else:
        update["grounds"] = f"concrete: {offer.what}" + (f", {offer.when}" if offer.when else f", {offer.who}")
    return verdict.model_copy(update=update)


def _listed(words: list[str]) -> str:
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


# -- find_out --------------------------------------------------------------------------------------


def ground_find_out(verdict: StepVerdict, reply: str, context: TurnContext, applies: bool,
                    data: GroundingData, offers: Sequence[str] = ()) -> StepVerdict:  # fmt: skip
    """A promise to find out that says neither what nor by when is credited once a session.

    A concrete offer to ask the person who knows and come back with the answer (``offers``, the reply's
    offer sentences; ``data.find_out_offer``) is the promise to find out, said the concrete way: "What I
    can do is ask our paediatric therapist myself this afternoon and call you back after four".

    A second such promise is not demonstrated: ``missed`` where the step applies this turn (the
    trainee did not know and promised nothing checkable), else ``not_applicable`` (no new failure,
    just no second credit for the same words).
    """
    if verdict.verdict == "missed" and (context.facts or context.wants):
        ask, back = data.find_out_offer
        for sentence in offers:
            text = spoken(sentence, data)
            if _hit(ask, text) and _hit(back, text):
                why = "an offer to ask someone who knows and come back with the answer"
                return StepVerdict(step_id=verdict.step_id, verdict="demonstrated", confidence=verdict.confidence,
                                   source=verdict.source, evidence=sentence, grounds=why)  # fmt: skip
    if verdict.verdict != "demonstrated" or context.earlier.get("find_out", 0) < 1:
        return verdict
    text = plain(reply)
    deadline = next((m for p in data.when if (m := p.search(text)) and m.group().strip() != "now"), None)
    topic = _hit(data.find_out_topic, text)
    if deadline is not None or topic is not None:
        return verdict
    return StepVerdict(step_id=verdict.step_id, verdict="missed" if applies else "not_applicable",
                       confidence=verdict.confidence, source=verdict.source, evidence=verdict.evidence,
                       grounds="a second vague promise: say what you'll find out and by when")  # fmt: skip


# -- all together ----------------------------------------------------------------------------------


def ground(rubric: Rubric, reading: checks.Reading, context: TurnContext, verdicts: dict[str, StepVerdict],
           encoder: embed.TextEncoder | None = None) -> dict[str, StepVerdict]:  # fmt: skip
    """The verdicts with the content steps held against the conversation (see the module docstring).

    Reads the reply without its meta parts (``reading.kept``): text to the grader restates nothing.
    A rubric without grounding data, or without these steps, is returned unchanged.
    """
    data = data_for(rubric)
    if data is None:
        return verdicts
    reply = reading.kept
    out = dict(verdicts)
    if "summarize" in out:
        out["summarize"] = ground_summarize(out["summarize"], reply, context, out, data, encoder)
    offers: list[str] = []
    if "offer_solution" in out:
        offers = offer_sentences(reply, data)
        out["offer_solution"] = ground_offer(out["offer_solution"], reply, context, data, encoder, offers)
    if "find_out" in out:
        applies = bool(checks.conditions_met(rubric, reply, context) & set(rubric.step("find_out").applies_when))
        out["find_out"] = ground_find_out(out["find_out"], reply, context, applies, data, offers)
    offered = out.get("offer_solution")
    offered_care = offers if offered is not None and offered.verdict == "demonstrated" else []
    return release_guesses(rubric, out, offered_care, data)


# Grounded do-steps whose quoted sentence is care for the patient: it restates their complaint,
# offers something concrete, or promises to find out.
CARE_STEPS = ("summarize", "offer_solution", "find_out")
# The don't-step whose check quotes an admission of not knowing ("I'm honestly not sure", "no idea").
ADMIT_STEP = "say_i_dont_know"


def _same_sentence(one: str, other: str) -> bool:
    return bool(one and other) and (one in other or other in one)


def release_guesses(
    rubric: Rubric, verdicts: dict[str, StepVerdict], offers: Sequence[str] = (), data: GroundingData | None = None
) -> dict[str, StepVerdict]:
    """A don't-step the classifier alone found gives way where its sentence is grounded care.

    The classifier reads a sentence's vector, and a restatement of the complaint ("Our system has
    you down for tomorrow, and you're off out of town first thing"), a concrete offer ("I'll strike
    that charge off your account now") or a question share their words with the replies it learnt
    as blame or invention. Where grounding quotes the same sentence as a restated fact, a concrete
    offer or a promise to find out, that guess is dropped; a question asserts nothing, so it
    invents nothing either. ``offers``: every sentence of the reply that offers something concrete
    (where offer_solution is demonstrated), not only the one it quotes: "Would it help if I booked you
    in for when you're back? I've got the 23rd at 2." is one offer in two sentences. A violation a
    pattern quoted always stands (blame the checks see
    undercuts the summary itself, :func:`ground_summarize`).

    An admission of not knowing invents nothing either: where the checks quote "I'm honestly not
    sure" or "no idea" inside the sentence the classifier read as ``make_things_up``, and the sentence
    hedges no claim (``data.hedges``: "probably", "usually", "I'd say"), the guess gives way. The
    admission itself stays graded as ``say_i_dont_know``; "I'm not sure, but it probably will" is
    still a guess.
    """
    care = [
        v.evidence for step in CARE_STEPS if (v := verdicts.get(step)) and v.verdict == "demonstrated" and v.evidence
    ] + list(offers)
    out = dict(verdicts)
    admitted = verdicts.get(ADMIT_STEP)
    quoted = admitted is not None and admitted.verdict == "violated" and admitted.source == "check"
    admission = admitted.evidence if quoted and admitted is not None else None
    for step in rubric.turn_steps():
        verdict = out.get(step.id)
        if step.kind != "dont" or verdict is None or verdict.verdict != "violated" or verdict.source != "learned":
            continue
        sentence = verdict.evidence or ""
        because = next((f"grounded care: {c}" for c in care if _same_sentence(sentence, c)), None)
        if because is None and step.id == "make_things_up" and sentence.rstrip().endswith("?"):
            because = "a question"
        if (because is None and step.id == "make_things_up" and admission and _same_sentence(sentence, admission)
                and not (data is not None and _hit(data.hedges, plain(sentence)))):  # fmt: skip
            because = f'an admission of not knowing ("{admission}"), no claim'
        if because is not None:
            why = f"the classifier's guess gave way to {because}"
            out[step.id] = StepVerdict(step_id=step.id, verdict="ok", confidence=verdict.confidence,
                                       source="learned", grounds=why)  # fmt: skip
    return out

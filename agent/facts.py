"""Facts a text states that the known material does not give.

Three places ask this one question. The coach's better phrasing must not hand the trainee a 2:15
slot or a Dr. Patel that the situation and the conversation never mention
(:func:`agent.coach.invented_facts`); the patient must not complain of "four hours" when the
persona waited forty minutes (:func:`agent.patient.invented`); and ``bench/coach_quality.py``
counts the phrasings that invent one. Each reads the text into :class:`Fact` s (what was
written, and the key it is looked up by) and keeps those whose key the known material does not
hold (:func:`not_given`). They differ only in how a text is read, and that is chosen by composing
one reader with one form of the known material:

* :func:`quantity_facts` with a set of :func:`quantities` (the patient): numbers, times, durations
  and named days or months, number words included, each as one canonical key, and the known
  material read the same way, so "forty minutes" is given by "40 minutes".
* :func:`pattern_facts` with :class:`Mentions` (the coach): whatever a list of patterns matches,
  keyed by its words (a titled name by its surname), looked up as a run of whole words anywhere
  in the known material, which need not be phrased as a fact to give one ("Mr. Carter" is given
  by a persona file that says "Carter"). The bench reads the same way with its own patterns (kept
  apart from the guard's, so the guard is judged by lists it does not read) and the looser lookup
  it has always scored with (``Mentions(..., word_starts=True)``).
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass

# Title words: a titled name is looked up by its surname ("Dr. Patel" is given by "Patel").
TITLES = frozenset({"dr", "doctor", "nurse", "mr", "mrs", "ms", "miss"})
# Words as :class:`Mentions` compares them: a clock time ("2:15") stays one word, "Dr." becomes "dr".
_WORD = re.compile(r"[a-z0-9:]+")


@dataclass(frozen=True)
class Fact:
    """One fact as the text writes it (``said``: "Dr. Patel", "forty minutes") and the key it is
    looked up by in the known material (``key``: "patel", "40"), so a caller can report the one
    and compare the other."""

    said: str
    key: str


def not_given(facts: Iterable[Fact], given: Container[str]) -> list[Fact]:
    """The ``facts`` whose key ``given`` (the known material, read for keys) does not hold, in the
    order the text states them: the facts a speaker made up."""
    return [fact for fact in facts if fact.key not in given]


# -- facts as patterns match them (the coach) ---------------------------------------------------------


def words(text: str) -> list[str]:
    """``text`` as lower-case words of letters, digits and colons, punctuation dropped, so that
    "Dr. Patel's" and "dr patel s" compare equal."""
    return _WORD.findall(text.lower())


def pattern_facts(text: str, patterns: Iterable[re.Pattern[str]], ignore: Iterable[re.Pattern[str]] = ()) -> list[Fact]:
    """What ``patterns`` match in ``text``, pattern by pattern, each keyed by its :func:`words`.

    A titled name is keyed by its last word, because the known material may name the person
    without the title. What ``ignore`` matches is blanked first: figures of speech that state no
    fact ("one moment", "two minutes"). A match without a word to look up states nothing.
    """
    for pattern in ignore:
        text = pattern.sub(" ", text)
    facts = []
    for pattern in patterns:
        for match in pattern.finditer(text):
            key = words(match.group(0))
            if key and key[0] in TITLES:
                key = key[-1:]
            if key:
                facts.append(Fact(match.group(0).strip(), " ".join(key)))
    return facts


class Mentions(Container[str]):
    """The known material, to look a fact's key up in.

    A key is given when it appears as whole :func:`words`, in order: "3" is not given by "30", nor
    "ten" by "tenant". With ``word_starts`` it is also given at the start of a longer word, in the
    known text lower-cased with its dots read as spaces ("2" by "2pm", "patel" by "Patels", but also
    "3" by "30"): the looser lookup ``bench/coach_quality.py`` has always scored with, kept as an
    option so that the bench's counts on recorded turns still compare with earlier ones.
    """

    def __init__(self, text: str, *, word_starts: bool = False) -> None:
        self._word_starts = word_starts
        if word_starts:
            self._text = " ".join(text.lower().split()).replace(".", " ")
        else:
            self._text = f" {' '.join(words(text))} "

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if self._word_starts:
            return re.search(rf"\b{re.escape(key)}", self._text) is not None
        return f" {key} " in self._text


# -- quantities (the patient) ------------------------------------------------------------------------

_UNITS = r"(?:hours?|days?|weeks?|months?|years?)"
_SMALL = tuple(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ]
)
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
# Named days and months; not "may", a verb far more often than a month.
_NAMED = tuple(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)
_QUANTITY = re.compile(
    r"(?P<clock>\b\d{1,2}:\d{2}\b)"
    r"|(?P<digits>\d+(?:[.,]\d+)?)"
    r"|\b(?P<half>half an? " + _UNITS + r")"
    r"|\b(?P<tens>" + "|".join(_TENS) + r")(?:[- ](?P<unit>" + "|".join(_SMALL[1:10]) + r"))?\b"
    r"|\b(?P<small>" + "|".join(_SMALL[2:]) + r"|dozen|hundred|thousand)\b"
    r"|(?<!once )(?<!twice )(?<!times )(?<!per )\b(?P<one>one|an?) (?=" + _UNITS + r"\b)"
    r"|\b(?P<named>" + "|".join(_NAMED) + r"|noon|midnight)\b",
    re.IGNORECASE,
)


def quantity_facts(text: str) -> list[Fact]:
    """The numbers, times, durations and named days or months in ``text``, each keyed by one
    canonical token (``"forty minutes"`` -> ``"40"``, ``"10:00"`` -> ``"10"``, ``"an hour"`` ->
    ``"1"``, ``"Friday"`` -> ``"friday"``), so that a figure written in words is given by the same
    figure in digits."""
    found = []
    for match in _QUANTITY.finditer(text):
        kind = match.lastgroup if match.lastgroup != "unit" else "tens"
        word = match.group(kind).lower()
        if kind == "clock":
            hour, minute = word.split(":")
            key = str(int(hour)) if minute == "00" else f"{int(hour)}:{minute}"
        elif kind == "digits":
            key = word.replace(",", "")
        elif kind == "half":
            key = "0.5"
        elif kind == "tens":
            key = str(_TENS[word] + (_SMALL.index(match.group("unit").lower()) if match.group("unit") else 0))
        elif kind == "small":
            key = {"dozen": "12", "hundred": "100", "thousand": "1000"}.get(word) or str(_SMALL.index(word))
        elif kind == "one":
            key = "1"
        else:
            key = {"noon": "12", "midnight": "12"}.get(word, word)
        found.append(Fact(match.group(0).strip(), key))
    return found


def quantities(text: str) -> set[str]:
    """The keys of :func:`quantity_facts`: what a text gives, to look a patient's line up in."""
    return {fact.key for fact in quantity_facts(text)}

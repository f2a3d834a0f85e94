"""Facts a text states that the known material does not give (agent/facts.py): the shared notion
behind the coach guard, the patient filter and the coach bench, tested on its own."""

from __future__ import annotations

import re

from agent.facts import Fact, Mentions, not_given, pattern_facts, quantities, quantity_facts

# A small stand-in for the coach guard's fact patterns, so these tests do not move with its YAML.
FIGURES = re.compile(r"\b\d+([:.]\d+)?\b")
DAYS = re.compile(r"(?i:\b(monday|friday)\b)")
NAMES = re.compile(r"\b(?i:dr|mr|nurse)\.?\s+[A-Z][a-z]+")
SAYINGS = re.compile(r"\bone (moment|minute)\b", re.IGNORECASE)


def said(facts: list[Fact]) -> list[str]:
    return [fact.said for fact in facts]


# -- not_given: the one comparison ---------------------------------------------------------------------


def test_not_given_keeps_the_facts_whose_key_is_unknown_in_the_order_stated():
    stated = [Fact("Friday", "friday"), Fact("forty", "40"), Fact("2:15", "2:15")]
    assert not_given(stated, {"40"}) == [Fact("Friday", "friday"), Fact("2:15", "2:15")]
    assert not_given(stated, set()) == stated
    assert not_given(stated, {"friday", "40", "2:15"}) == []


# -- the patient's reading: quantities -----------------------------------------------------------------


def test_number_words_and_digits_give_the_same_key():
    assert quantities("forty minutes") == quantities("40 minutes") == {"40"}
    assert quantities("twenty-five past") == quantities("twenty five past") == {"25"}
    assert quantities("four hours, a dozen times") == {"4", "12"}
    assert quantities("an hour") == quantities("one hour") == {"1"}
    assert quantities("half an hour") == {"0.5"}


def test_times_days_and_months_are_quantities_but_figures_of_speech_are_not():
    assert quantities("at 10:00, or 2:30") == {"10", "2:30"}
    assert quantities("Friday at noon, in March") == {"friday", "12", "march"}
    assert quantities("Someone said no one may come twice a day, once a week.") == set()


def test_quantity_facts_keep_what_was_written_next_to_the_key():
    assert quantity_facts("Four hours! Since 9:00.") == [Fact("Four", "4"), Fact("9:00", "9")]


def test_a_figure_in_words_is_given_by_the_same_figure_in_digits():
    known = quantities("The wait was 40 minutes; the appointment is on Friday.")
    assert said(not_given(quantity_facts("Forty minutes, and now Friday is gone."), known)) == []
    assert said(not_given(quantity_facts("Four hours I've been here, since Monday!"), known)) == ["Four", "Monday"]


# -- the coach's reading: patterns looked up as words ------------------------------------------------


def test_pattern_facts_go_pattern_by_pattern_and_key_a_titled_name_by_its_surname():
    stated = pattern_facts("Dr. Patel can see you Friday at 2:15, Mr Carter.", [FIGURES, DAYS, NAMES])
    assert stated == [
        Fact("2:15", "2:15"),
        Fact("Friday", "friday"),
        Fact("Dr. Patel", "patel"),
        Fact("Mr Carter", "carter"),
    ]


def test_what_ignore_matches_states_no_fact():
    assert pattern_facts("One moment, it's 3 doors down.", [re.compile(r"(?i)\bone\b"), FIGURES]) == [
        Fact("One", "one"),
        Fact("3", "3"),
    ]
    assert pattern_facts("One moment, it's 3 doors down.", [re.compile(r"(?i)\bone\b"), FIGURES], [SAYINGS]) == [
        Fact("3", "3")
    ]


def test_a_match_with_no_word_to_look_up_states_nothing():
    assert pattern_facts("Well -- then...", [re.compile(r"-+|\.+")]) == []


def test_mentions_look_a_key_up_as_whole_words_in_order():
    known = Mentions("Carter's appointment: Tuesday at 2:15, room 30. Dr. Patel.")
    assert "carter" in known  # the possessive does not hide the name
    assert "patel" in known and "2:15" in known and "tuesday" in known
    assert "3" not in known  # not given by "30"
    assert "15" not in known  # "2:15" is one word
    assert "room 30" in known and "30 room" not in known
    assert "friday" not in known
    assert 30 not in known  # only text keys are looked up


def test_mentions_with_word_starts_also_accept_the_start_of_a_longer_word():
    assert "2" not in Mentions("at 2pm")
    assert "2" in Mentions("at 2pm", word_starts=True)
    assert "3" in Mentions("room 30", word_starts=True)
    assert "ten" in Mentions("The tenant called.", word_starts=True)
    assert "ant" not in Mentions("The tenant called.", word_starts=True)  # still from a word's start
    assert "2 15" in Mentions("at 2.15", word_starts=True)  # dots are read as spaces


def test_the_coach_reading_reports_what_known_material_never_mentions():
    phrasing = "Dr. Patel has a gap at 2:15 on Friday, Mr. Carter."
    stated = pattern_facts(phrasing, [FIGURES, DAYS, NAMES])
    assert said(not_given(stated, Mentions("Mr. Carter waited 40 minutes on Friday."))) == ["2:15", "Dr. Patel"]
    assert said(not_given(stated, Mentions("Carter; Patel; 2:15; friday"))) == []

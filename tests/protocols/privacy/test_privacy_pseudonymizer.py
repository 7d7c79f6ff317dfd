"""Placeholders: consistent across rounds, matched normalized, reversible, never the values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocols.privacy import detector as detector_module
from protocols.privacy import report as report_module
from protocols.privacy.config import PrivacyConfig
from protocols.privacy.detector import Detector
from protocols.privacy.pseudonymizer import Pseudonymizer
from protocols.privacy.report import CrossedMessage

CARD = "4111 1111 1111 1111"
NOTE = (
    "Reach the patient at (415) 555-0134 or ana.diaz@example.org. SSN 536-22-8761, card "
    f"{CARD}, IBAN GB82 WEST 1234 5698 7654 32, DOB: 1980-03-12, account number: 0012345678, "
    "lives at 12 Oak Lane, Apt. 4, server 10.1.2.3, portal https://clinic.example.net/ana."
)
PLANTED = [
    "(415) 555-0134",
    "ana.diaz@example.org",
    "536-22-8761",
    CARD,
    "GB82 WEST 1234 5698 7654 32",
    "1980-03-12",
    "0012345678",
    "12 Oak Lane, Apt. 4",
    "10.1.2.3",
    "https://clinic.example.net/ana",
]


def test_every_pattern_entity_is_replaced_and_restored(pattern_detector: Detector) -> None:
    pseudo = Pseudonymizer(pattern_detector)
    private = pseudo.pseudonymize(NOTE)
    for value in PLANTED:
        assert value not in private
    assert "4111" not in private and "0134" not in private
    assert pseudo.restore(private) == NOTE
    report = pseudo.report()
    assert set(report.entities) == {
        "PHONE_NUMBER",
        "EMAIL_ADDRESS",
        "US_SSN",
        "CREDIT_CARD",
        "IBAN_CODE",
        "DATE_OF_BIRTH",
        "ACCOUNT_NUMBER",
        "STREET_ADDRESS",
        "IP_ADDRESS",
        "URL",
    }
    assert "DOB: <DOB_1>" in private  # the label stays, only the date is replaced


def test_the_same_value_gets_the_same_placeholder_across_rounds_normalized(
    pattern_detector: Detector,
) -> None:
    pseudo = Pseudonymizer(pattern_detector)
    first = pseudo.pseudonymize("Call (415) 555-0134 today.")
    second = pseudo.pseudonymize("The number 415.555.0134 was busy; try +1 415 555 0199.")
    assert first == "Call <PHONE_1> today."
    assert second == "The number <PHONE_1> was busy; try <PHONE_2>."
    # Once known, a value is replaced even where the detector alone would miss it.
    assert pseudo.pseudonymize("digits 4155550134 again") == "digits <PHONE_1> again"


def test_restore_takes_bare_placeholders_and_escapes_values_inside_json(
    pattern_detector: Detector,
) -> None:
    config_detector = pattern_detector
    pseudo = Pseudonymizer(config_detector)
    private = pseudo.pseudonymize('Write to "ana"@example.org? No: ana.diaz@example.org')
    assert "<EMAIL_1>" in private
    assert pseudo.restore("Mail EMAIL_1 now") == "Mail ana.diaz@example.org now"
    reply = json.dumps({"answer": "<EMAIL_1>", "unknown": "<EMAIL_9>"})
    assert json.loads(pseudo.restore(reply, json_strings=True)) == {
        "answer": "ana.diaz@example.org",
        "unknown": "<EMAIL_9>",  # a placeholder this task never made stays as it is
    }


def test_placeholders_already_in_a_text_are_left_alone(pattern_detector: Detector) -> None:
    pseudo = Pseudonymizer(pattern_detector)
    pseudo.pseudonymize("card 4111 1111 1111 1111")
    assert pseudo.pseudonymize("as said, <CARD_1> is on file") == "as said, <CARD_1> is on file"


def test_the_report_names_placeholders_and_types_never_values(pattern_detector: Detector) -> None:
    pseudo = Pseudonymizer(pattern_detector)
    pseudo.pseudonymize(NOTE)
    dumped = pseudo.report().model_dump_json()
    for value in PLANTED:
        assert value not in dumped
    assert pseudo.report().placeholders["<PHONE_1>"] == "PHONE_NUMBER"


def test_a_custom_recognizer_replaces_only_its_value_group() -> None:
    config = PrivacyConfig.parse(
        {
            "ner_model": "none",
            "recognizers": [
                {
                    "entity": "MEDICAL_RECORD_NUMBER",
                    "label": "MRN",
                    "patterns": [r"\bMRN[:#]?\s*(?P<value>\d{6,10})\b"],
                    "normalize": "digits",
                }
            ],
        }
    )
    pseudo = Pseudonymizer(Detector(config))
    assert pseudo.pseudonymize("MRN: 00123456 admitted") == "MRN: <MRN_1> admitted"
    assert pseudo.restore("<MRN_1>") == "00123456"


def test_names_places_and_organizations_need_the_ner_model(ner_detector: Detector) -> None:
    pseudo = Pseudonymizer(ner_detector)
    private = pseudo.pseudonymize("Maria Gonzalez works for Microsoft in Seattle.")
    assert "Maria Gonzalez" not in private and "Microsoft" not in private
    assert "Seattle" not in private
    assert "<PERSON_1>" in private
    # The same person later, in other case: the same placeholder.
    assert "<PERSON_1>" in pseudo.pseudonymize("Ask MARIA GONZALEZ about it.")
    assert pseudo.report().ner_model == ner_detector.ner_model


def test_long_texts_are_analysed_in_segments_with_offsets_kept(
    pattern_detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detector_module, "SEGMENT_CHARS", 400)
    filler = "The committee met and agreed to return to it later. " * 6
    text = "".join(f"{filler}\nCall (415) 555-01{n:02d} now.\n" for n in range(12))
    assert len(text) > 10 * 400
    private = Pseudonymizer(pattern_detector).pseudonymize(text)
    assert "555-01" not in private
    assert [f"<PHONE_{n}>" in private for n in range(1, 13)] == [True] * 12


def test_values_learned_from_a_document_are_replaced_where_the_detector_misses_them(
    pattern_detector: Detector,
) -> None:
    pseudo = Pseudonymizer(pattern_detector)
    pseudo.learn("Customer record 1. Name: Derek Weeks. Plan: Gold.")
    # Patterns alone do not see an unlabelled name; the learned value is replaced all the same.
    assert pseudo.pseudonymize("Which plan is Derek Weeks on?") == "Which plan is <PERSON_1> on?"


def test_lines_seen_before_are_not_analysed_again_and_find_the_same(
    ner_detector: Detector,
) -> None:
    ner_detector.clear_cache()
    history = (
        "Plan the work for the question below.\n"
        "Question: What is the phone number of Maria Gonzalez?\n"
        "Round 1 findings: Maria Gonzalez can be reached at (415) 555-0134.\n"
    )
    first = ner_detector.detect(history)
    analysed = ner_detector.lines_analysed
    # Round 2 re-sends the history and adds one line: only that line goes through the pipeline.
    later = history + "Round 2 findings: John Smith of Acme Corp in Boston confirmed it.\n"
    found = ner_detector.detect(later)
    assert ner_detector.lines_analysed == analysed + 1
    assert [f for f in found if f.start < len(history)] == first
    values = {(later[f.start : f.end], f.entity) for f in found}
    assert ("(415) 555-0134", "PHONE_NUMBER") in values and ("Maria Gonzalez", "PERSON") in values
    assert ("John Smith", "PERSON") in values
    # Cached findings are where they belong in a new text (the offsets are the line's own).
    moved = "A preamble line.\n" + history
    shift = len("A preamble line.\n")
    assert [f for f in ner_detector.detect(moved) if f.start >= shift] == [
        type(f)(f.start + shift, f.end + shift, f.entity, f.score) for f in first
    ]
    # Cold, the whole text gives exactly what the cache served.
    ner_detector.clear_cache()
    assert ner_detector.detect(later) == found


def test_neighbouring_values_of_one_type_keep_their_own_placeholders(
    pattern_detector: Detector,
) -> None:
    # Presidio's anonymizer would merge same-type neighbours separated by whitespace into one.
    pseudo = Pseudonymizer(pattern_detector)
    text = "Phones: (415) 555-0134 (212) 555-0199\nCall (212) 555-0199 first."
    private = pseudo.pseudonymize(text)
    assert private == "Phones: <PHONE_1> <PHONE_2>\nCall <PHONE_2> first."
    assert pseudo.restore(private) == text


def test_the_stored_audit_trail_is_capped_and_says_how_much_it_left_out(
    pattern_detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "CROSSED_MAX_REQUESTS", 3)
    monkeypatch.setattr(report_module, "CROSSED_MAX_CHARS", 100)
    pseudo = Pseudonymizer(pattern_detector)
    for size in (30, 30, 50, 10, 10):  # the third would pass 100 characters: it and all after
        pseudo.record_crossed([CrossedMessage(role="user", content="x" * size)])
    report = pseudo.report()
    assert [len(r[0].content) for r in report.crossed] == [30, 30]
    assert report.crossed_left_out == 3
    assert any("the last 3 of 5 remote requests are left out" in n for n in report.notes)

    pseudo = Pseudonymizer(pattern_detector)
    for _ in range(5):
        pseudo.record_crossed([CrossedMessage(role="user", content="y")])
    assert len(pseudo.report().crossed) == 3 and pseudo.report().crossed_left_out == 2
    # Under the caps, everything is kept and nothing is noted.
    pseudo = Pseudonymizer(pattern_detector)
    pseudo.record_crossed([CrossedMessage(role="user", content="z")])
    under = pseudo.report()
    assert under.crossed_left_out == 0 and not any("left out" in n for n in under.notes)


def test_prompt_word_lines_skip_the_ner_model_and_line_breaks_do_not_split_the_cache(
    ner_detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    ner_detector.clear_cache()
    engine = ner_detector._analyzer.nlp_engine
    read: list[str] = []
    process_batch = engine.process_batch

    def spy(texts: list[str], *args: Any, **kwargs: Any) -> Any:
        read.extend(texts)
        return process_batch(texts, *args, **kwargs)

    monkeypatch.setattr(engine, "process_batch", spy)
    template = "Read the documents below and answer the question.\n</document>\n"
    found = ner_detector.detect(template + "Call Maria Gonzalez at (415) 555-0134.")
    assert read == ["Call Maria Gonzalez at (415) 555-0134."]  # only the line with words of its own
    assert {f.entity for f in found} == {"PERSON", "PHONE_NUMBER"}
    # The same line with a line break after it is the same entry: not analysed again.
    analysed = ner_detector.lines_analysed
    ner_detector.detect("Call Maria Gonzalez at (415) 555-0134.\n")
    assert ner_detector.lines_analysed == analysed
    # Patterns still read prompt-word lines.
    assert [f.entity for f in ner_detector.detect("Read the answer at 10.1.2.3\n")] == [
        "IP_ADDRESS"
    ]

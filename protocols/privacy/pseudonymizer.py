"""One task's pseudonymizer: consistent, reversible placeholders.

The same value gets the same placeholder in every round (values are compared normalized: a phone
number by its digits, a name case-folded), and a value seen once is replaced wherever it appears
again, even where the detector would not have found it on its own. ``restore`` puts the values
back into the remote's replies. The mapping lives in this object only: it is never logged,
serialized or sent anywhere, and it is gone when the task's run ends.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from protocols.privacy.detector import Detector, Finding
from protocols.privacy.entities import EntityType, digits_only
from protocols.privacy.report import CrossedMessage, PrivacyReport

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
# A digit value is looked for again when it has this many digits: shorter ones are too common.
_MIN_KNOWN_DIGITS = 4
_DIGIT_SEPARATORS = r"[\s.\-()/]*"


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    entity: str
    rank: tuple[int, float, int]  # pattern before NER, then score, then length


class Pseudonymizer:
    """Replaces identifying values with placeholders and back, for one task. Thread-safe."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._types: dict[str, EntityType] = detector.entity_types
        self._token_by_key: dict[tuple[str, str], str] = {}
        self._value_by_token: dict[str, str] = {}
        self._entity_by_token: dict[str, str] = {}
        self._labels: Counter[str] = Counter()
        self._cache: dict[str, str] = {}
        self._known: re.Pattern[str] | None = None
        self._known_groups: list[str] = []  # group name -> token, by index
        self._lock = threading.Lock()
        self.found: Counter[str] = Counter()
        self.crossed: list[list[CrossedMessage]] = []
        self.seconds = 0.0  # replacing and restoring what crosses: the cost per remote call
        self.learn_seconds = 0.0  # analysing the documents: once per task
        self.notes: list[str] = []
        restore_labels = "|".join(sorted({re.escape(t.label) for t in self._types.values()}))
        self._restore = re.compile(rf"<?\b((?:{restore_labels})_\d+)\b>?")

    # -- replacing ----------------------------------------------------------------------------
    def pseudonymize(self, text: str) -> str:
        """``text`` with every identifying value replaced by its placeholder."""
        with self._lock:
            started = time.perf_counter()
            try:
                return self._pseudonymize(text)
            finally:
                self.seconds += time.perf_counter() - started

    def _pseudonymize(self, text: str) -> str:
        cached = self._cache.get(text)
        if cached is not None:
            self._count(cached)
            return cached
        findings = self.detector.detect(text)
        # Register what was found first, so every other occurrence of it in this same text (a
        # name the NER model recognized once of three times) is replaced too.
        for span in self._merge(findings, text):
            self._token_for(span.entity, text[span.start : span.end])
        spans = self._merge(findings + self._known_findings(text), text)
        pieces: list[str] = []
        position = 0
        for span in spans:
            pieces.append(text[position : span.start])
            pieces.append(self._token_for(span.entity, text[span.start : span.end]))
            position = span.end
        pieces.append(text[position:])
        replaced = "".join(pieces)
        self._cache[text] = replaced
        self._count(replaced)
        return replaced

    def learn(self, text: str) -> None:
        """Find the values in ``text`` (a document, which itself never crosses) so that they are
        replaced wherever they appear later, also where the detector alone would miss them:
        a name in the question that the NER model does not recognize there."""
        with self._lock:
            started = time.perf_counter()
            for span in self._merge(self.detector.detect(text), text):
                self._token_for(span.entity, text[span.start : span.end])
            self.learn_seconds += time.perf_counter() - started

    def _count(self, replaced: str) -> None:
        for token in _PLACEHOLDER.findall(replaced):
            entity = self._entity_by_token.get(token)
            if entity is not None:
                self.found[entity] += 1

    def _merge(self, findings: list[Finding], text: str) -> list[_Span]:
        """Overlapping findings become one span (their union) of the strongest finding's type;
        placeholders already in the text are left alone."""
        protected = [match.span() for match in _PLACEHOLDER.finditer(text)]
        spans = sorted(
            (
                _Span(
                    finding.start,
                    finding.end,
                    finding.entity,
                    (
                        int(self._types[finding.entity].kind == "pattern"),
                        finding.score,
                        finding.end - finding.start,
                    ),
                )
                for finding in findings
                if not any(finding.start < end and start < finding.end for start, end in protected)
            ),
            key=lambda span: span.start,
        )
        merged: list[_Span] = []
        for span in spans:
            if merged and span.start < merged[-1].end:
                last = merged[-1]
                best = last if last.rank >= span.rank else span
                merged[-1] = _Span(last.start, max(last.end, span.end), best.entity, best.rank)
            else:
                merged.append(span)
        return [span for span in merged if text[span.start : span.end].strip()]

    def _token_for(self, entity: str, value: str) -> str:
        entity_type = self._types[entity]
        key = (entity, entity_type.normalize(value))
        token = self._token_by_key.get(key)
        if token is None:
            self._labels[entity_type.label] += 1
            token = f"<{entity_type.label}_{self._labels[entity_type.label]}>"
            self._token_by_key[key] = token
            self._value_by_token[token] = value
            self._entity_by_token[token] = entity
            self._known = None
        return token

    def _known_findings(self, text: str) -> list[Finding]:
        """Values already replaced once, wherever they appear again."""
        if not self._value_by_token:
            return []
        if self._known is None:
            self._known = self._compile_known()
        if self._known is None:
            return []
        found = []
        for match in self._known.finditer(text):
            token = self._known_groups[match.lastindex - 1] if match.lastindex else None
            if token is not None:
                found.append(Finding(match.start(), match.end(), self._entity_by_token[token], 1.0))
        return found

    def _compile_known(self) -> re.Pattern[str] | None:
        alternatives: list[str] = []
        self._known_groups = []
        for token, value in self._value_by_token.items():
            entity = self._entity_by_token[token]
            if self._types[entity].normalize is digits_only:
                digits = digits_only(value)
                if len(digits) < _MIN_KNOWN_DIGITS:
                    continue
                body = _DIGIT_SEPARATORS.join(digits)
                alternatives.append(rf"(?<!\d)({body})(?!\d)")
            else:
                words = value.split()
                if not words:
                    continue
                body = r"\s+".join(re.escape(word) for word in words)
                alternatives.append(rf"(?<!\w)({body})(?!\w)")
            self._known_groups.append(token)
        if not alternatives:
            return None
        return re.compile("|".join(alternatives), re.IGNORECASE)

    # -- restoring ----------------------------------------------------------------------------
    def restore(self, text: str, *, json_strings: bool = False) -> str:
        """``text`` with every placeholder this task made replaced by its value. With
        ``json_strings`` the values are escaped for JSON strings (the text is a JSON reply)."""
        with self._lock:
            started = time.perf_counter()

            def value(match: re.Match[str]) -> str:
                original = self._value_by_token.get(f"<{match.group(1)}>")
                if original is None:
                    return match.group(0)
                return json.dumps(original)[1:-1] if json_strings else original

            try:
                return self._restore.sub(value, text)
            finally:
                self.seconds += time.perf_counter() - started

    # -- the report ---------------------------------------------------------------------------
    def record_crossed(self, messages: list[CrossedMessage]) -> None:
        with self._lock:
            self.crossed.append(messages)

    def report(self) -> PrivacyReport:
        with self._lock:
            return PrivacyReport(
                mode="pseudonymize",
                ner_model=self.detector.ner_model,
                entities=dict(sorted(Counter(self._entity_by_token.values()).items())),
                replacements=dict(sorted(self.found.items())),
                placeholders=dict(self._entity_by_token),
                crossed=list(self.crossed),
                added_seconds=round(self.seconds, 6),
                document_seconds=round(self.learn_seconds, 6),
                notes=[*([self.detector.warning] if self.detector.warning else []), *self.notes],
            )

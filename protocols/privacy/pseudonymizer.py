"""One task's pseudonymizer: consistent, reversible placeholders.

The same value gets the same placeholder in every round (values are compared normalized: a phone
number by its digits, a name case-folded), and a value seen once is replaced wherever it appears
again, even where the detector would not have found it on its own. ``restore`` puts the values
back into the remote's replies. The mapping lives in this object only: it is never logged,
serialized or sent anywhere, and it is gone when the task's run ends.

The replacement itself is Presidio's ``AnonymizerEngine`` with a ``custom`` operator per entity
type that returns the task's placeholder for the value. The spans it gets are already merged here
(overlaps become one span of the strongest type, patterns before names, which Presidio's
score-only conflict resolution would not do), and its merging of same-type neighbours separated
by whitespace is off: two phone numbers side by side stay two values with two placeholders, so
each is restored and recognized again on its own. Presidio's de-anonymization only reverses its
own encryption operator, so ``restore`` maps placeholders back itself.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from protocols.privacy import report as limits
from protocols.privacy.detector import Detector, Finding
from protocols.privacy.entities import EntityType, digits_only
from protocols.privacy.report import CrossedMessage, PrivacyReport

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
# A digit value is looked for again when it has this many digits: shorter ones are too common.
_MIN_KNOWN_DIGITS = 4
_DIGIT_SEPARATORS = r"[\s.\-()/]*"


@cache
def _anonymizer() -> AnonymizerEngine:
    """One engine per process: it holds no state of its own between calls."""
    return AnonymizerEngine()  # type: ignore[no-untyped-call] # Presidio's __init__ is unannotated


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    entity: str
    rank: tuple[int, float, int]  # pattern before NER, then score, then length


class Pseudonymizer:
    """Replaces identifying values with placeholders and back, for one task. Thread-safe."""

    def __init__(self, detector: Detector, on_crossed: Callable[[str], None] | None = None) -> None:
        """``on_crossed`` is called with a value's entity type the first time its placeholder
        is in a text bound for the remote (the gateway's metric: what crossed is counted when it
        crosses, whether the task then succeeds, fails or is cancelled)."""
        self.detector = detector
        self._on_crossed = on_crossed
        self._crossed_tokens: set[str] = set()
        self._types: dict[str, EntityType] = detector.entity_types
        self._token_by_key: dict[tuple[str, str], str] = {}
        self._value_by_token: dict[str, str] = {}
        self._entity_by_token: dict[str, str] = {}
        self._labels: Counter[str] = Counter()
        self._cache: dict[str, str] = {}
        # Values replaced once, looked for again: token -> (what a text must contain for the
        # value to be in it, whether in its digits), and token -> its pattern.
        self._known: dict[str, tuple[tuple[str, ...], bool]] = {}
        self._known_patterns: dict[str, re.Pattern[str]] = {}
        self._lock = threading.Lock()
        self.found: Counter[str] = Counter()
        self.crossed: list[list[CrossedMessage]] = []
        self.crossed_chars = 0
        self.crossed_left_out = 0
        self.seconds = 0.0  # replacing and restoring what crosses: the cost per remote call
        self.learn_seconds = 0.0  # analysing the documents: once per task
        self.notes: list[str] = []
        # Each entity type's operator: the value's placeholder, made on first sight.
        self._operators = {
            name: OperatorConfig("custom", {"lambda": self._placeholder_of(name)})
            for name in self._types
        }
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
        replaced = (
            _anonymizer()
            .anonymize(
                text,
                [RecognizerResult(s.entity, s.start, s.end, s.rank[1]) for s in spans],
                operators=self._operators,
                merge_entities_with_spaces=False,
            )
            .text
            if spans
            else text
        )
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
                if token not in self._crossed_tokens:
                    self._crossed_tokens.add(token)
                    if self._on_crossed is not None:
                        self._on_crossed(entity)

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

    def _placeholder_of(self, entity: str) -> Callable[[str], str]:
        return lambda value: self._token_for(entity, value)

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
            self._remember(token, entity, value)
        return token

    def _known_findings(self, text: str) -> list[Finding]:
        """Values already replaced once, wherever they appear again.

        One regular expression of every known value tries each of them at every position of
        the text (a task that learned 400 values from its documents: 0.7 s for 60,000
        characters), so each value has its own pattern, run only where the value can be: its
        words all in the case-folded text, or its digits in the text's digits."""
        if not self._known:
            return []
        folded_text = text.casefold()
        digits = digits_only(text)
        candidates = tuple(
            token
            for token, (needles, in_digits) in self._known.items()
            if all(needle in (digits if in_digits else folded_text) for needle in needles)
        )
        if not candidates:
            return []
        found = []
        for token in candidates:
            entity = self._entity_by_token[token]
            for match in self._known_patterns[token].finditer(text):
                found.append(Finding(match.start(), match.end(), entity, 1.0))
        return found

    def _remember(self, token: str, entity: str, value: str) -> None:
        """How ``value`` is found again: a pattern, and what must be in a text for it to match."""
        if self._types[entity].normalize is digits_only:
            digits = digits_only(value)
            if len(digits) < _MIN_KNOWN_DIGITS:
                return
            body = _DIGIT_SEPARATORS.join(digits)
            self._known_patterns[token] = re.compile(rf"(?<!\d){body}(?!\d)")
            self._known[token] = ((digits,), True)
        else:
            words = value.split()
            if not words:
                return
            body = r"\s+".join(re.escape(word) for word in words)
            self._known_patterns[token] = re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)
            self._known[token] = (tuple(word.casefold() for word in words), False)

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

    def _left_out_note(self) -> str:
        total = len(self.crossed) + self.crossed_left_out
        return (
            f"crossed: the last {self.crossed_left_out} of {total} remote requests are left out "
            f"of this report (it keeps at most {limits.CROSSED_MAX_REQUESTS} requests and "
            f"{limits.CROSSED_MAX_CHARS:,} characters); all of them were pseudonymized"
        )

    # -- the report ---------------------------------------------------------------------------
    def record_crossed(self, messages: list[CrossedMessage]) -> None:
        """Keep a request for the audit trail while it fits the caps; once one does not, every
        later one is only counted, so what is kept is the run's beginning, in order."""
        chars = sum(len(message.content) for message in messages)
        with self._lock:
            if (
                self.crossed_left_out
                or len(self.crossed) >= limits.CROSSED_MAX_REQUESTS
                or self.crossed_chars + chars > limits.CROSSED_MAX_CHARS
            ):
                self.crossed_left_out += 1
                return
            self.crossed.append(messages)
            self.crossed_chars += chars

    def report(self) -> PrivacyReport:
        with self._lock:
            return PrivacyReport(
                mode="pseudonymize",
                ner_model=self.detector.ner_model,
                entities=dict(sorted(Counter(self._entity_by_token.values()).items())),
                replacements=dict(sorted(self.found.items())),
                placeholders=dict(self._entity_by_token),
                crossed=list(self.crossed),
                crossed_left_out=self.crossed_left_out,
                added_seconds=round(self.seconds, 6),
                document_seconds=round(self.learn_seconds, 6),
                notes=[
                    *([self.detector.warning] if self.detector.warning else []),
                    *self.notes,
                    *([self._left_out_note()] if self.crossed_left_out else []),
                ],
            )

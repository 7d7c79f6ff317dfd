"""Pattern recognizers Presidio lacks: labelled dates of birth, account numbers and names, US
street addresses, a second phone pattern (the ``phonenumbers`` matcher skips numbers with extensions
and some separators), and the custom ones of the configuration.

Each is a ``RegexRecognizer``: a match's group named ``value``, when there is one, is the part
replaced, so "DOB: 1980-03-12" becomes "DOB: <DOB_1>", not "<DOB_1>".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = (
    r"(?:\d{4}-\d{1,2}-\d{1,2}"
    r"|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}})"
)
DATE_OF_BIRTH = (
    r"(?i)\b(?:date\s+of\s+birth|d\.?o\.?b\.?|birth\s*date|birthday|born(?:\s+on)?)"
    rf"\s*(?:[:\-–]|is|was)?\s*(?P<value>{_DATE})"
)
ACCOUNT_NUMBER = (
    r"(?i)\b(?:account|acct\.?|a/c)(?:\s*(?:number|no\.?|num\.?|#|id))?\s*(?:[:#]|is)?\s*"
    r"(?P<value>[A-Z0-9][A-Z0-9\-]{4,32}[A-Z0-9])\b"
)
PHONE = (
    r"(?<![\w.+])(?:\+?\d{1,3}[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-]?)\d{3}[\s.\-]?\d{4}"
    r"(?:\s*(?:x|ext\.?)\s*\d{1,6})?(?![\w])"
)
# USPS street suffixes (the ones address generators and real addresses use).
_SUFFIXES = (
    "Alley|Avenue|Ave|Branch|Bridge|Brook|Brooks|Burg|Burgs|Bypass|Camp|Canyon|Cape|"
    "Causeway|Center|Centers|Circle|Cir|Circles|Cliff|Cliffs|Club|Common|Commons|Corner|"
    "Corners|Course|Court|Ct|Courts|Cove|Coves|Creek|Crescent|Crest|Crossing|Crossroad|"
    "Curve|Dale|Dam|Divide|Drive|Dr|Drives|Estate|Estates|Expressway|Extension|Extensions|"
    "Fall|Falls|Ferry|Field|Fields|Flat|Flats|Ford|Fords|Forest|Forge|Forges|Fork|Forks|"
    "Fort|Freeway|Garden|Gardens|Gateway|Glen|Glens|Green|Greens|Grove|Groves|Harbor|"
    "Harbors|Haven|Heights|Highway|Hwy|Hill|Hills|Hollow|Inlet|Island|Islands|Isle|"
    "Junction|Junctions|Key|Keys|Knoll|Knolls|Lake|Lakes|Land|Landing|Lane|Ln|Light|Lights|"
    "Loaf|Lock|Locks|Lodge|Loop|Mall|Manor|Manors|Meadow|Meadows|Mews|Mill|Mills|Mission|"
    "Motorway|Mount|Mountain|Mountains|Neck|Orchard|Oval|Overpass|Park|Parks|Parkway|Pkwy|"
    "Parkways|Pass|Passage|Path|Pike|Pine|Pines|Place|Pl|Plain|Plains|Plaza|Point|Points|"
    "Port|Ports|Prairie|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|Ridges|River|Road|Rd|"
    "Roads|Route|Row|Rue|Run|Shoal|Shoals|Shore|Shores|Skyway|Spring|Springs|Spur|Spurs|"
    "Square|Sq|Squares|Station|Stravenue|Stream|Street|St|Streets|Summit|Terrace|Ter|"
    "Throughway|Trace|Track|Trafficway|Trail|Tunnel|Turnpike|Underpass|Union|Unions|Valley|"
    "Valleys|Via|Viaduct|View|Views|Village|Villages|Ville|Vista|Walk|Walks|Wall|Way|Ways|"
    "Well|Wells"
)
# A name in a labelled field of a form or record ("Name: Ana Diaz", "Patient: ..."): the small
# NER pipelines miss some names that a label makes certain.
LABELLED_NAME = (
    r"\b(?:[Nn]ame|[Pp]atient|[Cc]ustomer|[Cc]lient|[Cc]ontact|[Ee]mployee|[Aa]ccount holder)"
    r"\s*:\s*(?P<value>[A-Z][a-z'\-]+(?:\s[A-Z]\.?)?(?:\s[A-Z][A-Za-z'\-]+){1,2})"
)
STREET = (
    r"\b\d{1,6}\s+(?:[A-Z][A-Za-z'\-]*\s+){1,3}"
    rf"(?:{_SUFFIXES})\b\.?"
    r"(?:,?\s+(?:Apt\.?|Suite|Unit|#)\s*[\w\-]+)?"
)
CITY_STATE_ZIP = r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2},\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?\b"


def _has_four_digits(value: str) -> bool:
    return sum(char.isdigit() for char in value) >= 4


class RegexRecognizer(EntityRecognizer):
    """Regular expressions for one entity; a group named ``value`` marks the part to replace."""

    def __init__(
        self,
        entity: str,
        patterns: Sequence[str],
        *,
        score: float = 0.6,
        valid: Callable[[str], bool] | None = None,
    ) -> None:
        self.compiled = [re.compile(pattern) for pattern in patterns]
        self.score = score
        self.valid = valid
        super().__init__(supported_entities=[entity], name=f"{entity} patterns")

    def load(self) -> None:
        """Nothing to load: the patterns were compiled in ``__init__``."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        entity = self.supported_entities[0]
        found: list[RecognizerResult] = []
        for pattern in self.compiled:
            for match in pattern.finditer(text):
                group = "value" if "value" in pattern.groupindex else 0
                start, end = match.span(group)
                if start == end or (self.valid and not self.valid(match.group(group))):
                    continue
                found.append(RecognizerResult(entity, start, end, self.score))
        return found


def builtin_regex_recognizers() -> list[RegexRecognizer]:
    return [
        RegexRecognizer("DATE_OF_BIRTH", [DATE_OF_BIRTH]),
        RegexRecognizer("ACCOUNT_NUMBER", [ACCOUNT_NUMBER], valid=_has_four_digits),
        RegexRecognizer("PHONE_NUMBER", [PHONE], score=0.4),
        RegexRecognizer("STREET_ADDRESS", [STREET, CITY_STATE_ZIP], score=0.5),
        RegexRecognizer("PERSON", [LABELLED_NAME], score=0.7),
    ]

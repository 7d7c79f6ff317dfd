"""Synthetic long documents with planted facts, for tests, benchmarks and the evaluation harness.

Filler is deterministic (seeded) business-report prose with no facts of its own; each planted fact
is one sentence on a chosen page with a question whose answer appears nowhere else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from protocols.task import Document

_SUBJECTS = [
    "The regional team",
    "The planning committee",
    "Our logistics group",
    "The audit office",
    "The operations staff",
    "The finance department",
    "The site manager",
    "The review board",
]
_VERBS = [
    "reviewed",
    "discussed",
    "summarised",
    "revisited",
    "documented",
    "examined",
    "outlined",
    "compared",
]
_OBJECTS = [
    "the quarterly schedule",
    "the staffing outlook",
    "supplier feedback",
    "the maintenance backlog",
    "training plans",
    "the customer survey",
    "storage capacity",
    "the travel policy",
    "energy use in the offices",
    "the onboarding checklist",
]
_TAILS = [
    "and agreed to return to it later.",
    "without reaching a firm conclusion.",
    "and noted several open questions.",
    "as part of the routine monthly cycle.",
    "and asked for a clearer summary next time.",
    "in a short meeting on Tuesday.",
    "and found nothing unusual.",
    "before moving on to other topics.",
]


@dataclass(frozen=True)
class PlantedFact:
    sentence: str
    question: str
    answer: str
    page: int  # 1-based page the sentence is planted on


DEFAULT_FACTS = (
    PlantedFact(
        sentence="The access code for the north warehouse is 4817.",
        question="What is the access code for the north warehouse?",
        answer="4817",
        page=0,  # 0: placed at about two thirds of the document
    ),
)


@dataclass(frozen=True)
class SyntheticDocument:
    document: Document
    facts: tuple[PlantedFact, ...] = field(default_factory=tuple)

    @property
    def question(self) -> str:
        return self.facts[0].question

    @property
    def answer(self) -> str:
        return self.facts[0].answer


def filler_sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    )


def make_document(
    pages: int = 20,
    *,
    words_per_page: int = 200,
    facts: tuple[PlantedFact, ...] = DEFAULT_FACTS,
    seed: int = 0,
    name: str = "synthetic-report.txt",
) -> SyntheticDocument:
    """A ``pages``-page document of filler with ``facts`` planted (page 0 = two thirds in)."""
    if pages < 1:
        raise ValueError(f"pages: must be at least 1, got {pages}")
    rng = random.Random(seed)
    placed = tuple(
        fact
        if fact.page
        else PlantedFact(fact.sentence, fact.question, fact.answer, max(1, (2 * pages) // 3))
        for fact in facts
    )
    for fact in placed:
        if not 1 <= fact.page <= pages:
            raise ValueError(f"facts: page {fact.page} is outside 1..{pages}")
    texts = []
    for page in range(1, pages + 1):
        sentences: list[str] = []
        words = 0
        while words < words_per_page:
            sentence = filler_sentence(rng)
            sentences.append(sentence)
            words += len(sentence.split())
        for fact in placed:
            if fact.page == page:
                sentences.insert(rng.randrange(len(sentences) + 1), fact.sentence)
        paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
        texts.append(f"Page {page}\n\n" + "\n\n".join(paragraphs))
    return SyntheticDocument(Document(name=name, pages=tuple(texts)), placed)


def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal valid PDF with one page of plain text per entry (Helvetica, no compression).

    Enough for pypdf to extract the text back; used to test PDF handling without a PDF library.
    """
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    for index, text in enumerate(pages):
        lines = [_pdf_escape(line) for line in _wrap(text, 90)][:60]
        body = "BT /F1 10 Tf 40 800 Td 12 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
        stream = body.encode("latin-1", errors="replace")
        contents = page_ids[index] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {contents} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return serialize_pdf(objects, header=b"%PDF-1.4\n")


def serialize_pdf(objects: list[bytes], *, header: bytes = b"%PDF-1.4\n") -> bytes:
    """A PDF file of ``objects`` (numbered from 1, object 1 the catalog) with its xref table."""
    out = bytearray(header)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines():
        line = ""
        for word in paragraph.split():
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    return lines


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

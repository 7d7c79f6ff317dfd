"""A long real-text document, for tests and benchmarks: pages of the Python language reference.

Synthetic filler is repetitive and compresses unusually well; this is prose written by people.
It is read at run time from the standard library's own copy of the reference (``pydoc_data``,
what ``help("try")`` shows), so nothing is downloaded and nothing large is kept in the repository.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.task import PAGE_BREAK, Document

# Topics in reading order; the question's answer is in "try" only.
TOPICS = ("try", "exceptions", "execmodel", "with", "import", "assignment", "function", "class")
QUESTION = (
    "According to the reference, what happens to a saved exception when the finally clause "
    "of a try statement executes a return statement?"
)
ANSWER = "discarded"


@dataclass(frozen=True)
class RealText:
    document: Document
    question: str
    answer: str


def python_reference(topics: tuple[str, ...] = TOPICS[:4]) -> RealText:
    """The reference's pages for ``topics``, one page each (the default four: ~23k characters,
    about 6k tokens)."""
    from pydoc_data.topics import topics as reference  # the stdlib's copy of the docs

    missing = [topic for topic in topics if topic not in reference]
    if missing:
        raise ValueError(f"topics: not in this Python's reference: {missing}")
    pages = tuple(reference[topic].strip().replace(PAGE_BREAK, "\n") for topic in topics)
    return RealText(
        document=Document(name="python-reference.txt", pages=pages),
        question=QUESTION,
        answer=ANSWER,
    )

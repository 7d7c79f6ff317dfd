"""What of a MinionS round's local outputs crosses to the remote, and in what order.

Outputs that say "nothing here" never cross; the same finding from several chunks crosses once
(near-duplicates included), with the chunk ids it came from; the rest is ranked by relevance to
the question so that, when the remote budget is short, what is cut is what matters least:
findings whose quote is really in their chunk first, then BM25 over the finding texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rank_bm25 import BM25Plus

from protocols.plans import is_empty_answer, normalize
from protocols.result import LocalOutput
from protocols.retrieval import tokenize

# Word-set overlap (Jaccard) at or above which two answers count as the same finding: "Paris,
# France" and "paris, france." merge; "3 patients" and "4 patients" do not (one word in four).
NEAR_DUPLICATE_JACCARD = 0.8


@dataclass
class Finding:
    """One finding as it may cross: the first output that said it, and every chunk that did."""

    output: LocalOutput
    chunk_ids: list[int] = field(default_factory=list)
    quoted: bool = False  # its citation is found verbatim (up to case and spaces) in its chunk

    @property
    def task_index(self) -> int:
        return self.output.task_index or 0


def _words(text: str) -> frozenset[str]:
    return frozenset(tokenize(text))


def near_duplicates(first: str, second: str) -> bool:
    if normalize(first) == normalize(second):
        return True
    a, b = _words(first), _words(second)
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= NEAR_DUPLICATE_JACCARD


def merge_findings(
    outputs: Sequence[LocalOutput], chunk_text: Callable[[int], str]
) -> tuple[list[Finding], int]:
    """Outputs with an answer, near-duplicates within a task merged (their chunk ids kept), and
    how many outputs were left out as "no answer"."""
    findings: list[Finding] = []
    no_answer = 0
    for output in outputs:
        if output.answer is None or is_empty_answer(output.answer):
            no_answer += 1
            continue
        answer = output.answer or ""
        twin = next(
            (
                finding
                for finding in findings
                if finding.output.task_index == output.task_index
                and near_duplicates(finding.output.answer or "", answer)
            ),
            None,
        )
        quoted = output.chunk_id is not None and _quoted(
            output.citation, chunk_text(output.chunk_id)
        )
        if twin is None:
            findings.append(
                Finding(
                    output,
                    [] if output.chunk_id is None else [output.chunk_id],
                    quoted=quoted,
                )
            )
            continue
        if output.chunk_id is not None and output.chunk_id not in twin.chunk_ids:
            twin.chunk_ids.append(output.chunk_id)
        if quoted and not twin.quoted:  # keep the version whose quote checks out
            twin.output, twin.quoted = output, True
    return findings, no_answer


def _quoted(citation: str | None, text: str) -> bool:
    quote = " ".join((citation or "").lower().split()).strip("\"'.… ")
    return len(quote) >= 3 and quote in " ".join(text.lower().split())


def rank_findings(question: str, tasks: Sequence[str], findings: list[Finding]) -> list[Finding]:
    """Best first: findings whose quote is in their chunk, then by BM25 of the finding text
    against the question and its task; ties keep the outputs' order."""
    if not findings:
        return []
    corpus = [
        tokenize(
            " ".join(
                part for part in (f.output.answer, f.output.citation, f.output.explanation) if part
            )
        )
        for f in findings
    ]
    bm25 = BM25Plus([terms or ["_"] for terms in corpus])
    by_task: dict[int, list[float]] = {}  # one BM25 pass per task's query
    for finding in findings:
        index = finding.task_index
        if index not in by_task:
            task = tasks[index] if index < len(tasks) else ""
            query = tokenize(f"{question} {task}")
            by_task[index] = [float(s) for s in bm25.get_scores(query)] if query else []
    ranked = sorted(
        range(len(findings)),
        key=lambda i: (
            not findings[i].quoted,
            -by_task[findings[i].task_index][i] if by_task[findings[i].task_index] else 0.0,
            i,
        ),
    )
    return [findings[i] for i in ranked]

"""A synthetic long-document QA dataset with planted facts, so the harness runs with any model."""

from __future__ import annotations

import json
import random
from pathlib import Path

from protocols.synthetic import PlantedFact, make_document

_PLACES = ("north warehouse", "river lab", "east tower", "harbor office", "mountain depot")
_THINGS = ("access code", "budget code", "room number", "badge number", "vault code")


def planted_fact(rng: random.Random, page: int) -> PlantedFact:
    place, thing = rng.choice(_PLACES), rng.choice(_THINGS)
    value = str(rng.randint(1000, 9999))
    return PlantedFact(
        sentence=f"The {thing} for the {place} is {value}.",
        question=f"What is the {thing} for the {place}?",
        answer=value,
        page=page,
    )


def make_synthetic_dataset(out_dir: Path, docs: int = 20, pages: int = 30, seed: int = 0) -> Path:
    """Write ``docs`` text documents of ``pages`` pages and ``dataset.jsonl``; return its path."""
    if docs < 1 or pages < 1:
        raise ValueError("docs and pages: must be at least 1")
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = out_dir / "dataset.jsonl"
    with dataset.open("w") as handle:
        for index in range(docs):
            fact = planted_fact(rng, page=rng.randint(1, pages))
            synthetic = make_document(
                pages, facts=(fact,), seed=seed * 10_000 + index, name=f"doc{index}.txt"
            )
            doc_path = out_dir / f"doc{index:03d}.txt"
            doc_path.write_text("\f".join(synthetic.document.pages))
            row = {
                "id": f"synthetic-{index:03d}",
                "question": fact.question,
                "answer": fact.answer,
                "documents": [{"path": doc_path.name}],
                "metadata": {"pages": pages, "planted_page": fact.page},
            }
            handle.write(json.dumps(row) + "\n")
    return dataset

"""A synthetic dataset of customer files with planted personal data (generated with ``faker``),
for measuring what privacy mode lets through (``benchmarks/privacy_leak.py``).

Each document is a short file of three customer records among filler pages. Each row asks one of
three kinds of question:

* ``no_pii``: the answer is not personal data ("What plan is <name> on?");
* ``pii_answer``: the answer is a personal value ("What is the phone number of <name>?");
* ``multi_person``: the answer needs two people's records ("Who has the larger balance?").

Every row lists every planted value with its entity type (``metadata.privacy.planted``, which
``row_to_task`` leaves out of the task), so a leak can be looked for in what reached the remote.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faker import Faker

from protocols.synthetic import PlantedFact, make_document

KINDS = ("no_pii", "pii_answer", "multi_person")
PLANS = ("Bronze", "Silver", "Gold", "Platinum")
RECORDS_PER_FILE = 3


@dataclass(frozen=True)
class Customer:
    name: str
    dob: str
    phone: str
    email: str
    ssn: str
    street: str
    city_line: str
    account: str
    card: str
    plan: str
    balance: int

    def record(self, number: int) -> str:
        return (
            f"Customer record {number}. Name: {self.name}. Date of birth: {self.dob}. "
            f"Phone: {self.phone}. Email: {self.email}. SSN: {self.ssn}. "
            f"Address: {self.street}, {self.city_line}. Account number: {self.account}. "
            f"Card on file: {self.card}. Plan: {self.plan}. Balance: ${self.balance:,}."
        )

    def planted(self) -> list[dict[str, str]]:
        return [
            {"entity": entity, "value": value}
            for entity, value in (
                ("PERSON", self.name),
                ("DATE_OF_BIRTH", self.dob),
                ("PHONE_NUMBER", self.phone),
                ("EMAIL_ADDRESS", self.email),
                ("US_SSN", self.ssn),
                ("STREET_ADDRESS", self.street),
                ("STREET_ADDRESS", self.city_line),
                ("ACCOUNT_NUMBER", self.account),
                ("CREDIT_CARD", self.card),
            )
        ]


def fake_customer(fake: Faker, rng: random.Random) -> Customer:
    return Customer(
        name=f"{fake.first_name()} {fake.last_name()}",
        dob=fake.date_of_birth(minimum_age=20, maximum_age=90).isoformat(),
        phone=fake.phone_number(),
        email=fake.email(),
        ssn=fake.ssn(),
        street=fake.street_address(),
        city_line=f"{fake.city()}, {fake.state_abbr()} {fake.zipcode()}",
        account=fake.numerify("##########"),
        card=fake.credit_card_number(card_type="visa16"),
        plan=rng.choice(PLANS),
        balance=rng.randint(100, 99_999),
    )


def question_for(kind: str, customers: list[Customer], rng: random.Random) -> tuple[str, str]:
    """(question, answer) of one kind over the file's customers."""
    first, second = rng.sample(customers, 2)
    if kind == "no_pii":
        return f"What plan is {first.name} on?", first.plan
    if kind == "pii_answer":
        return f"What is the phone number of {first.name}?", first.phone
    richer = first if first.balance > second.balance else second
    return f"Who has the larger balance, {first.name} or {second.name}?", richer.name


def make_private_dataset(out_dir: Path, docs: int = 12, pages: int = 6, seed: int = 0) -> Path:
    """Write ``docs`` customer files and ``dataset.jsonl`` (kinds in turn); return its path."""
    if docs < 1 or pages < RECORDS_PER_FILE:
        raise ValueError(f"docs: at least 1; pages: at least {RECORDS_PER_FILE}")
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = out_dir / "dataset.jsonl"
    with dataset.open("w") as handle:
        for index in range(docs):
            customers = [fake_customer(fake, rng) for _ in range(RECORDS_PER_FILE)]
            kind = KINDS[index % len(KINDS)]
            question, answer = question_for(kind, customers, rng)
            record_pages = rng.sample(range(1, pages + 1), RECORDS_PER_FILE)
            facts = tuple(
                PlantedFact(sentence=customer.record(number), question="", answer="", page=page)
                for number, (customer, page) in enumerate(
                    zip(customers, record_pages, strict=True), 1
                )
            )
            document = make_document(
                pages, words_per_page=120, facts=facts, seed=seed * 10_000 + index
            )
            path = out_dir / f"file{index:03d}.txt"
            path.write_text("\f".join(document.document.pages))
            row: dict[str, Any] = {
                "id": f"private-{index:03d}",
                "question": question,
                "answer": answer,
                "documents": [{"path": path.name}],
                # Nested, so row_to_task leaves it out of the task: the models never see it.
                "metadata": {
                    "privacy": {
                        "kind": kind,
                        "planted": [p for c in customers for p in c.planted()],
                    }
                },
            }
            handle.write(json.dumps(row) + "\n")
    return dataset

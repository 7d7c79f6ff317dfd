"""PDF parsing under a work budget: hostile PDFs are refused within the deadline and the child
doing the work is gone afterwards (real child processes, real limits)."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.hostile_pdf import costly_pdf, parsing_children, wait_no_parsing_children

from protocols.pdf_sandbox import (
    PdfBudgetExceeded,
    PdfLimits,
    PdfSandbox,
    PdfUnreadable,
    extract_pages_sync,
)
from protocols.synthetic import pdf_bytes

pytestmark = pytest.mark.timeout(60)


async def test_text_of_each_page() -> None:
    data = pdf_bytes(["The first page.", "The access code is 4817."])
    pages = await PdfSandbox().extract_pages(data, "report.pdf")
    assert [page.strip() for page in pages] == ["The first page.", "The access code is 4817."]


async def test_costly_pdf_is_refused_at_the_deadline_and_its_child_killed() -> None:
    data = costly_pdf()  # ~10 CPU-seconds of pypdf work in under 4 KB
    assert len(data) < 8192
    started = time.monotonic()
    with pytest.raises(
        PdfBudgetExceeded,
        match=r"costly\.pdf is too costly to parse: .*longer than the limit of 1 s",
    ):
        await PdfSandbox(PdfLimits(timeout_s=1.0)).extract_pages(data, "costly.pdf")
    assert time.monotonic() - started < 2.0
    wait_no_parsing_children()


def test_sync_api_has_the_same_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(PdfBudgetExceeded, match="MGW_PDF_PARSE_TIMEOUT_S"):
        extract_pages_sync(costly_pdf(), "costly.pdf", PdfLimits(timeout_s=1.0))
    assert time.monotonic() - started < 2.0
    wait_no_parsing_children()


async def test_cancelling_the_caller_kills_the_child() -> None:
    sandbox = PdfSandbox(PdfLimits(timeout_s=30.0))
    job = asyncio.create_task(sandbox.extract_pages(costly_pdf(), "costly.pdf"))
    deadline = time.monotonic() + 10
    while not parsing_children():
        assert time.monotonic() < deadline, "the parser child never started"
        await asyncio.sleep(0.02)
    child = parsing_children()[0]
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert child not in parsing_children()
    wait_no_parsing_children(1.0)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            PdfLimits(page_content_bytes=512 * 1024),
            r"has 1\.0 MiB of decompressed content on page 1",
        ),
        (PdfLimits(total_content_bytes=3 * 2**20), r"more than 3 MiB of decompressed content"),
        (PdfLimits(max_pages=4), "8 pages; the limit is 4"),
        (PdfLimits(memory_bytes=64 * 2**20), "memory limit"),
    ],
)
async def test_work_limits_refuse_before_the_work(limits: PdfLimits, message: str) -> None:
    with pytest.raises(PdfBudgetExceeded, match=message):
        await PdfSandbox(limits).extract_pages(costly_pdf(), "costly.pdf")


async def test_damaged_and_textless_pdfs_are_unreadable_not_over_budget() -> None:
    sandbox = PdfSandbox()
    with pytest.raises(PdfUnreadable, match=r"broken\.pdf is not a readable PDF"):
        await sandbox.extract_pages(b"%PDF-1.7\n garbage", "broken.pdf")
    with pytest.raises(PdfUnreadable, match="no extractable text"):
        await sandbox.extract_pages(costly_pdf(pages=1, content_bytes=1024), "empty.pdf")


async def test_pool_runs_at_most_its_workers_at_once() -> None:
    sandbox = PdfSandbox(PdfLimits(timeout_s=30.0, workers=1))
    jobs = [asyncio.create_task(sandbox.extract_pages(costly_pdf(), f"{i}.pdf")) for i in range(3)]
    seen = 0
    for _ in range(40):
        seen = max(seen, len(parsing_children()))
        await asyncio.sleep(0.025)
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    assert seen == 1
    wait_no_parsing_children()

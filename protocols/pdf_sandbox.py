"""PDF text extraction under a work budget, in a child process that can be stopped.

pypdf is pure Python: a small hostile PDF (pages sharing one large content stream of drawing
operators, a decompression bomb) can cost minutes of CPU or gigabytes of memory, and a thread
cannot be stopped. So every PDF is parsed in a fresh child process (``python -I`` running this
file, so it imports only the standard library and pypdf) that:

* has an address-space limit (``RLIMIT_AS``) and a CPU-time limit (``RLIMIT_CPU``), runs niced
  and dies with its parent (``PR_SET_PDEATHSIG``), so even an orphan cannot run on;
* counts the decompressed content-stream bytes it is about to interpret, per page and in total
  (a stream shared by many pages counts once per page: that is the work), and stops past the
  limits;
* is killed when the wall-clock deadline passes, or when the awaiting coroutine is cancelled
  (the client left).

At most ``PdfLimits.workers`` children run at once per ``PdfSandbox`` (the pool); waiting for a
slot counts against the deadline, so the caller always has an answer within it.

Errors: ``PdfBudgetExceeded`` (the work budget: time, memory, bytes, pages or characters) and
``PdfUnreadable`` (damaged, encrypted or text-less). Both carry one clear sentence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

_CHILD = os.path.abspath(__file__)
# Exit statuses of a child stopped by one of its limits.
_LIMIT_SIGNALS = {signal.SIGXCPU, signal.SIGKILL}


@dataclass(frozen=True)
class PdfLimits:
    """The work budget of one PDF."""

    timeout_s: float = 30.0  # wall clock, slot wait included
    memory_bytes: int = 1024 * 2**20  # the child's address space
    page_content_bytes: int = 8 * 2**20  # decompressed content interpreted for one page
    total_content_bytes: int = 64 * 2**20  # ... for the whole document
    max_pages: int = 20_000
    max_chars: int = 16 * 2**20
    workers: int = 2  # children at once per sandbox

    @property
    def cpu_seconds(self) -> int:
        # Backstop only (the deadline kills first): a child whose parent vanished stops too.
        return max(1, math.ceil(self.timeout_s)) + 1


class PdfError(ValueError):
    """A PDF could not be turned into text. ``str()`` is one sentence about the file."""


class PdfBudgetExceeded(PdfError):
    """The PDF needs more work (time, memory, content bytes, pages or text) than allowed."""


class PdfUnreadable(PdfError):
    """The PDF is damaged, encrypted or has no extractable text."""


class PdfSandbox:
    """Runs PDF extractions in child processes, at most ``limits.workers`` at once."""

    def __init__(self, limits: PdfLimits | None = None) -> None:
        self.limits = limits or PdfLimits()
        self._slots: asyncio.Semaphore | None = None

    async def extract_pages(self, data: bytes, name: str) -> list[str]:
        """The text of each page. Cancelling the caller kills the child."""
        limits = self.limits
        if self._slots is None:
            self._slots = asyncio.Semaphore(limits.workers)
        try:
            return await asyncio.wait_for(self._extract(data, name), limits.timeout_s)
        except TimeoutError:
            raise PdfBudgetExceeded(_over_time(name, limits)) from None

    async def _extract(self, data: bytes, name: str) -> list[str]:
        assert self._slots is not None
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                *_command(self.limits),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await process.communicate(data)
            finally:
                if process.returncode is None:  # deadline or cancellation: stop the work now
                    process.kill()
                    # Reap it; a second cancellation cannot leave a zombie behind.
                    await asyncio.shield(process.wait())
            return _outcome(process.returncode, out, err, name, self.limits)


def extract_pages_sync(data: bytes, name: str, limits: PdfLimits | None = None) -> list[str]:
    """``PdfSandbox.extract_pages`` for synchronous callers (the CLI): same child, same limits."""
    limits = limits or PdfLimits()
    try:
        completed = subprocess.run(
            _command(limits), input=data, capture_output=True, timeout=limits.timeout_s
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped the child
        raise PdfBudgetExceeded(_over_time(name, limits)) from None
    return _outcome(completed.returncode, completed.stdout, completed.stderr, name, limits)


def _command(limits: PdfLimits) -> list[str]:
    return [sys.executable, "-I", _CHILD, json.dumps(asdict(limits))]


def _over_time(name: str, limits: PdfLimits) -> str:
    return (
        f"{name} is too costly to parse: extracting its text took longer than the limit of "
        f"{limits.timeout_s:g} s (MGW_PDF_PARSE_TIMEOUT_S)"
    )


def _outcome(code: int | None, out: bytes, err: bytes, name: str, limits: PdfLimits) -> list[str]:
    if code == 0:
        reply = json.loads(out)
        if "pages" in reply:
            return list(reply["pages"])
        kind, message = reply["error"], reply["message"]
        error = PdfBudgetExceeded if kind == "budget" else PdfUnreadable
        raise error(f"{name} {message}")
    if code is not None and code < 0 and -code in _LIMIT_SIGNALS:
        raise PdfBudgetExceeded(
            f"{name} is too costly to parse: it exceeded the parser's CPU-time or memory limit "
            f"({limits.cpu_seconds} s, {limits.memory_bytes // 2**20} MiB)"
        )
    logger.warning("the PDF parser exited with %s: %s", code, err.decode(errors="replace")[-2000:])
    raise PdfUnreadable(f"{name} is not a readable PDF (the parser failed, exit status {code})")


# -- the child --------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _confine(limits: PdfLimits) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    os.nice(10)  # the gateway's event loop comes first
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before the call above
            os._exit(1)


def _pages(data: bytes, limits: PdfLimits) -> list[str]:
    import io
    import warnings

    from pypdf import PdfReader

    pages: list[str] = []
    chars = 0
    total = 0
    # pypdf reports recoverable damage as warnings; they are not errors here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise _Refused("unreadable", "is an encrypted PDF; decrypt it first")
        count = len(reader.pages)
        if count > limits.max_pages:
            raise _Refused("budget", f"has {count:,} pages; the limit is {limits.max_pages:,}")
        for number, page in enumerate(reader.pages, start=1):
            contents = page.get_contents()
            size = len(contents.get_data()) if contents is not None else 0
            if size > limits.page_content_bytes:
                raise _Refused(
                    "budget",
                    f"has {size / 2**20:.1f} MiB of decompressed content on page {number}; the "
                    f"limit is {limits.page_content_bytes / 2**20:g} MiB per page",
                )
            total += size
            if total > limits.total_content_bytes:
                raise _Refused(
                    "budget",
                    f"has more than {limits.total_content_bytes / 2**20:g} MiB of "
                    f"decompressed content together (the limit), {total / 2**20:.1f} MiB by "
                    f"page {number}",
                )
            text = page.extract_text() or ""
            chars += len(text)
            if chars > limits.max_chars:
                raise _Refused("budget", f"has more than {limits.max_chars:,} characters of text")
            pages.append(text)
    if not pages:
        raise _Refused("unreadable", "is not a readable PDF (no pages found)")
    if not any(page.strip() for page in pages):
        raise _Refused(
            "unreadable", "has no extractable text (a scanned PDF? OCR is not supported)"
        )
    return pages


def _child_main(argv: list[str]) -> int:
    limits = PdfLimits(**json.loads(argv[1]))
    _confine(limits)
    data = sys.stdin.buffer.read()
    reply: dict[str, Any]
    try:
        reply = {"pages": _pages(data, limits)}
    except _Refused as refused:
        reply = {"error": refused.kind, "message": refused.message}
    except MemoryError:
        reply = {
            "error": "budget",
            "message": f"needs more than the PDF parser's memory limit "
            f"({limits.memory_bytes // 2**20} MiB)",
        }
    except RecursionError:
        reply = {"error": "budget", "message": "is nested too deeply to parse"}
    except Exception as exc:  # pypdf raises many types on damaged files; all mean "unreadable".
        reply = {
            "error": "unreadable",
            "message": f"is not a readable PDF ({type(exc).__name__}: {exc})"[:2000],
        }
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))

"""The two text domains of tier 2, both read from the Python standard library on this machine.

* source domain, English prose: the docstrings of the standard-library modules;
* target domain, code: the same modules' source with docstrings and comments stripped.

Nothing is downloaded and nothing is executed: files are only parsed with ``ast`` and
``tokenize``. Built corpora are cached (keyed by the Python version and the file limit) because a
full build parses ~1,000 files.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import sys
import sysconfig
import tempfile
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Directories that are not the standard library proper (installed packages) or are test data,
# some of which is deliberately invalid or Python 2 source.
_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "lib2to3"}
)

# A fixed character vocabulary shared by both domains: newline, printable ASCII, and one symbol
# for everything else (non-ASCII is rare in the stdlib and would only add near-empty classes).
VOCABULARY = "\n" + "".join(chr(code) for code in range(32, 127))
UNKNOWN_INDEX = len(VOCABULARY)
VOCABULARY_SIZE = len(VOCABULARY) + 1


@dataclass(frozen=True)
class Corpora:
    """The prose (source-domain) and code (target-domain) texts."""

    prose: str
    code: str


def stdlib_python_files(max_files: int | None = None) -> list[Path]:
    """The standard library's ``.py`` files in a deterministic (sorted) order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _SKIPPED_DIRS)
        files.extend(Path(directory) / name for name in sorted(names) if name.endswith(".py"))
    files.sort(key=lambda path: path.relative_to(root).as_posix())
    return files if max_files is None else files[:max_files]


_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstring_nodes(tree: ast.Module) -> list[tuple[ast.Expr, bool]]:
    """Each docstring statement, with whether it is the only statement of its body."""
    found: list[tuple[ast.Expr, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, _DOCSTRING_OWNERS) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.append((first, len(node.body) == 1))
    return found


def extract_docstrings(source: str) -> list[str]:
    """The cleaned docstrings of a module, its classes and functions, in source order."""
    tree = ast.parse(source)
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, _DOCSTRING_OWNERS):
            text = ast.get_docstring(node, clean=True)
            if text:
                texts.append((getattr(node, "lineno", 0), text))
    return [text for _, text in sorted(texts, key=lambda pair: pair[0])]


def strip_docstrings_and_comments(source: str) -> str:
    """``source`` without comments or docstrings; still valid Python.

    A docstring that is a body's only statement becomes ``...`` so the body stays non-empty.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line))

    def offset(line: int, column: int) -> int:
        # ast columns are UTF-8 byte offsets; tokenize columns are characters.
        return line_starts[line - 1] + column

    def char_offset_from_bytes(line: int, byte_column: int) -> int:
        text = lines[line - 1].encode("utf-8")[:byte_column].decode("utf-8", errors="replace")
        return line_starts[line - 1] + len(text)

    replacements: list[tuple[int, int, str]] = []
    for node, sole_statement in _docstring_nodes(tree):
        assert node.end_lineno is not None and node.end_col_offset is not None
        start = char_offset_from_bytes(node.lineno, node.col_offset)
        end = char_offset_from_bytes(node.end_lineno, node.end_col_offset)
        replacements.append((start, end, "..." if sole_statement else ""))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            replacements.append((offset(*token.start), offset(*token.end), ""))

    pieces = []
    cursor = 0
    for start, end, replacement in sorted(replacements):
        if start < cursor:  # a comment inside a removed docstring's span cannot happen; be safe
            continue
        pieces.extend([source[cursor:start], replacement])
        cursor = end
    pieces.append(source[cursor:])
    stripped_lines = (line.rstrip() for line in "".join(pieces).splitlines())
    return "\n".join(line for line in stripped_lines if line.strip()) + "\n"


def _build(max_files: int | None) -> Corpora:
    prose_parts: list[str] = []
    code_parts: list[str] = []
    skipped = 0
    for path in stdlib_python_files(max_files):
        try:
            with tokenize.open(path) as handle:
                source = handle.read()
            docstrings = extract_docstrings(source)
            code = strip_docstrings_and_comments(source)
        except (SyntaxError, UnicodeDecodeError, tokenize.TokenError, ValueError):
            skipped += 1
            continue
        prose_parts.extend(docstrings)
        code_parts.append(code)
    logger.info("corpus: parsed stdlib files, skipped %d that did not parse", skipped)
    return Corpora(prose="\n\n".join(prose_parts) + "\n", code="\n".join(code_parts))


def default_cache_dir() -> Path:
    """Where built corpora are kept between runs (a temp dir; safe to delete)."""
    return Path(os.environ.get("MGW_STUDY_CACHE", tempfile.gettempdir())) / "mgw-lora-corpus"


def load_corpora(max_files: int | None = None, cache_dir: Path | None = None) -> Corpora:
    """Build (or read from the cache) the prose and code corpora."""
    version = "{}.{}.{}".format(*sys.version_info[:3])
    directory = (cache_dir or default_cache_dir()) / f"py{version}-files{max_files or 'all'}"
    prose_path, code_path = directory / "prose.txt", directory / "code.txt"
    if prose_path.exists() and code_path.exists():
        return Corpora(prose_path.read_text("utf-8"), code_path.read_text("utf-8"))
    corpora = _build(max_files)
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in ((prose_path, corpora.prose), (code_path, corpora.code)):
        # Write then rename, so a concurrent reader never sees half a file.
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text, "utf-8")
        partial.replace(path)
    return corpora


def encode(text: str) -> torch.Tensor:
    """Character indices of ``text`` (int64); characters outside the vocabulary share one index."""
    lookup = np.full(128, UNKNOWN_INDEX, dtype=np.int64)
    for index, character in enumerate(VOCABULARY):
        lookup[ord(character)] = index
    lookup[ord("\t")] = lookup[ord(" ")]
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ascii_points = np.minimum(code_points, 127).astype(np.int64)
    indices = np.where(code_points < 128, lookup[ascii_points], UNKNOWN_INDEX)
    return torch.from_numpy(indices)

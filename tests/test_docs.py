"""The documentation: the site builds with warnings as errors, the Python blocks of the pages run, the links hold.

Pages are ``README.md`` and ``docs/*.md``. The convention for code blocks (also on docs/index.md, "These pages"):

- every fenced ``python`` block runs, in page order; the blocks of one page share one namespace (a later block may
  use what an earlier one defined), in a temporary working directory;
- ``<!-- skip-test: why -->`` on the lines before a block: it is compiled (a syntax check) but not run (torchrun,
  a GPU, an optional extra, minutes of training);
- ``<!-- test-replace: OLD => NEW -->`` (one comment per replacement): the block runs with ``OLD`` replaced by
  ``NEW``, e.g. SmolLM2 by a tiny random model (``tiny_gpt2_config`` and ``tiny_llama_config`` are predefined) and
  a budget cut to a few rollouts. ``OLD`` must occur in the block, so the page and its test cannot drift apart.

Only blank lines or other markers may stand between a marker and its block; a marker before anything else is an
error. Blocks in other languages do not run.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.testing import tiny_gpt2_config, tiny_llama_config

try:  # the 'docs' extra (part of 'dev'): the site build is skipped without it
    import mkdocs  # noqa: F401
    import mkdocstrings  # noqa: F401
except ModuleNotFoundError:
    HAVE_MKDOCS = False
else:
    HAVE_MKDOCS = importlib.util.find_spec("mkdocstrings_handlers.python") is not None

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKER = re.compile(r"^<!--\s*(skip-test|test-replace)\s*:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


@dataclass
class Block:
    """One fenced code block of a page, with the markers before it."""

    page: Path
    line: int  # the page's line number of the block's first code line
    language: str
    code: str
    skip: str | None = None
    replacements: list[tuple[str, str]] = field(default_factory=list)


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order, with their ``skip-test`` / ``test-replace`` markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    skip: str | None = None
    replacements: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        marker, fence = MARKER.match(stripped), FENCE.match(stripped)
        if marker:
            kind, value = marker.groups()
            if kind == "skip-test":
                skip = value or "skipped"
            else:
                old, separator, new = value.partition(" => ")
                if not separator or not old:
                    raise ValueError(f"{page.name}:{i + 1}: test-replace takes 'OLD => NEW', got {value!r}")
                replacements.append((old, new))
        elif fence:
            ticks, language = fence.groups()
            closing = re.compile(re.escape(ticks[0]) + "{" + str(len(ticks)) + ",}")
            end = i + 1
            while end < len(lines) and not closing.fullmatch(lines[end].strip()):
                end += 1
            language = language.lower()
            if (skip or replacements) and language not in ("python", "py"):
                raise ValueError(f"{page.name}:{i + 1}: a skip-test/test-replace marker before a {language!r} block")
            blocks.append(Block(page, i + 2, language, "\n".join(lines[i + 1 : end]), skip, replacements))
            skip, replacements = None, []
            i = end
        elif stripped and (skip or replacements):
            raise ValueError(f"{page.name}:{i + 1}: a skip-test/test-replace marker must stand right before a block")
        i += 1
    if skip or replacements:
        raise ValueError(f"{page.name}: a skip-test/test-replace marker at the end of the page, before no block")
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [block for block in code_blocks(page) if block.language in ("python", "py")]


def without_code_blocks(page: Path) -> list[str]:
    """The lines of ``page`` outside its fenced code blocks."""
    kept: list[str] = []
    fence: str | None = None
    for line in page.read_text(encoding="utf-8").splitlines():
        match = FENCE.match(line.strip())
        if fence is None and match:
            fence = match.group(1)[0] * 3
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            kept.append(line)
    return kept


def prose(page: Path) -> str:
    """The page's text without its code blocks and inline code (where brackets are not links)."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", "\n".join(without_code_blocks(page)))


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) and GitHub give a heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for line in without_code_blocks(page) if (m := HEADING.match(line))}


# ---------------------------------------------------------------------------------------------------- (a) the site
@pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs is not installed: pip install -e '.[docs]'")
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "index.html").is_file()
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "TextGenerationEnv" in api and "CausalLMPolicy" in api  # mkdocstrings rendered the API page


# ---------------------------------------------------------------------------------------------------- (b) the code
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__", "tiny_gpt2_config": tiny_gpt2_config, "tiny_llama_config": tiny_llama_config}
    where = page.relative_to(ROOT)
    for block in python_blocks(page):
        code = block.code
        for old, new in block.replacements:
            assert old in code, f"{where}:{block.line}: test-replace {old!r} is not in the block (stale marker)"
            code = code.replace(old, new)
        # Padded so that a traceback names the page's own line numbers.
        compiled = compile("\n" * (block.line - 1) + code, str(where), "exec")
        if block.skip is None:
            exec(compiled, namespace)


def test_markers_and_blocks_are_well_formed():
    for page in PAGES:
        code_blocks(page)  # raises on a stray marker or a marker before a non-Python block
    quick_start = python_blocks(ROOT / "README.md")
    assert quick_start and quick_start[0].skip is None, "the README's quick start must run in the tests"
    assert len(quick_start[0].code.splitlines()) <= 12, "the README's quick start is about ten lines"


# ---------------------------------------------------------------------------------------------------- (c) the links
def test_every_relative_link_points_to_an_existing_file():
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            path = path.split("?")[0]
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_lists_every_task_and_algorithm():
    from agents import ALGORITHMS
    from text_env import TASKS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tasks_page = (ROOT / "docs" / "tasks.md").read_text(encoding="utf-8")
    assert not [i for i in TASKS if f"`{i}`" not in readme], "registered ids missing from README.md's task table"
    assert not [i for i in TASKS if f"`{i}`" not in tasks_page], "registered ids missing from docs/tasks.md"
    assert not [n for n in ALGORITHMS if f"`{n}`" not in readme], "algorithms missing from README.md's table"
    assert len(readme.splitlines()) <= 220, "README.md is the front door: move details to docs/"

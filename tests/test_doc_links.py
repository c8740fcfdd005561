"""Every relative link in the project's markdown resolves. A link ``[text](path#anchor)`` or
``(#anchor)`` must name a file that exists and, where it has an anchor, a heading of that file
whose GitHub slug is the anchor; so a section moved from BENCHMARKS.md to
benchmarks/HISTORY.md, or a heading renamed, fails here until its links follow it. Plain text
only: nothing of the package is imported."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MAX_LINES = 600

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    """The markdown files git tracks or would track (untracked but not ignored), so .venv/,
    runs/ and other ignored folders are left out; without git, every .md outside hidden
    folders and runs/."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.md"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        paths = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*.md")
                 if not any(part.startswith(".") or part == "runs"
                            for part in p.relative_to(ROOT).parts[:-1])]
    return sorted(p for p in paths if p.is_file())


def without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked, every line kept in its place."""
    text = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), text)
    return CODE_SPAN.sub(lambda m: " " * len(m[0]), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lowercased, everything but
    letters, digits, spaces, hyphens and underscores dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    """The anchors of a markdown file's headings; a repeated heading gets -1, -2, ..."""
    if path not in cache:
        text = re.sub(r"^ {0,3}(```|~~~).*?^ {0,3}\1[ \t]*$", "", path.read_text(),
                      flags=re.S | re.M)
        seen: dict[str, int] = {}
        found = set()
        for match in HEADING.finditer(text):
            base = slug(match[1])
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
        cache[path] = found
    return cache[path]


def broken_links() -> list[str]:
    """'file:line: target (why)' for every relative link that does not resolve."""
    broken, cache = [], {}
    for doc in markdown_files():
        text = without_code(doc.read_text())
        for match in LINK.finditer(text):
            target = match[1]
            if SCHEME.match(target):  # http(s), mailto and other schemes
                continue
            where = f"{doc.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
            path, _, anchor = target.partition("#")
            file = (doc.parent / unquote(path)).resolve() if path else doc
            if not file.exists():
                broken.append(f"{where}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and unquote(anchor) not in anchors(file, cache):
                broken.append(f"{where}: {target} (no heading with this anchor)")
    return broken


def test_every_relative_link_resolves():
    """A moved section or a renamed heading breaks the links to it silently on GitHub; here
    it fails, naming each link by file and line."""
    broken = broken_links()
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slugs_follow_github():
    """The anchors are GitHub's, so a link that passes here works there."""
    assert slug("Photos, `--budget 10m` and `15m` (2026-12-05 and 06, Zen 4 and Xeon)") == \
        "photos---budget-10m-and-15m-2026-12-05-and-06-zen-4-and-xeon"
    assert slug("What the held-out 10% costs the teacher") == \
        "what-the-held-out-10-costs-the-teacher"
    assert slug("airbench's tricks (cifar_airbench_s, 3 epochs)") == \
        "airbenchs-tricks-cifar_airbench_s-3-epochs"


def test_benchmarks_md_stays_short():
    """BENCHMARKS.md holds what holds today; a result a later one superseded moves to
    benchmarks/HISTORY.md, so the current file stays readable."""
    lines = len((ROOT / "BENCHMARKS.md").read_text().splitlines())
    assert lines <= BENCHMARKS_MAX_LINES, f"BENCHMARKS.md has {lines} lines"


def test_each_script_section_is_in_one_file():
    """A script rewrites its section where its markers are (benchmarks/common.py,
    write_section), BENCHMARKS.md first: a section in both files, or an unclosed one, would
    be written in the wrong place."""
    names: list[str] = []
    for path in (ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "HISTORY.md"):
        text = path.read_text()
        opened = re.findall(r"^<!-- bench:([\w.-]+) -->$", text, re.M)
        closed = re.findall(r"^<!-- /bench:([\w.-]+) -->$", text, re.M)
        assert opened == closed, f"{path.name}: markers do not pair up"
        names += opened
    assert sorted(set(names)) == sorted(names), "a section is in both files"

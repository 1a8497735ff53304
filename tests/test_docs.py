"""The README and docs/ stay true to the repository: links resolve, named paths exist, the code map
(docs/architecture.md) lists every module, the names the README imports from ``seq2seq`` exist, and the README's
first screen is what it is, the two commands, the results and how to use it. Cheap (text only, plus one import)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
REPO_PATH = re.compile(r"(?<![\w./-])((?:seq2seq|scripts|configs|tests|docs)/[\w./-]*)")
CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file (or heading anchor) does not exist, as 'page: target'."""
    broken = []
    text = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{page.name}: {target}")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def missing_paths(page: Path, root: Path = ROOT) -> list[str]:
    """Repository paths the page names (``seq2seq/...``, ``scripts/...``, ``tests/...`` ...) that do not exist."""
    missing = []
    for path in REPO_PATH.findall(page.read_text(encoding="utf-8")):
        path = path.split("::")[0].rstrip(".,")
        if not (root / path).exists():
            missing.append(f"{page.name}: {path}")
    return missing


def code_map_modules(page: str) -> tuple[set[str], set[str]]:
    """The code map (docs/architecture.md): (module files it names, e.g. 'seq2seq/decoding/search.py'; folders it
    names)."""
    section = page.split("## Code map", 1)[1]
    block = CODE_BLOCK.search(section).group(2)
    files, folders, folder = set(), set(), None
    for line in block.splitlines():
        if line.startswith("seq2seq/"):
            folder = line.split()[0]
            folders.add(folder)
        elif line.startswith("  ") and not line.startswith("   ") and folder is not None:  # deeper: a description
            names = line.strip().split("  ")[0]
            files.update(folder + name.strip() for name in names.split(","))
        else:
            folder = None
    return files, folders


def test_every_relative_link_resolves():
    broken = [b for page in pages() for b in broken_links(page)]
    assert not broken, "broken links (fix the target or the link):\n" + "\n".join(broken)


def test_a_planted_broken_link_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "usage.md").write_text("# Usage\n\n## Commands\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("[ok](docs/usage.md#commands) [gone](docs/missing.md) [bad anchor](docs/usage.md#nope)\n"
                      "[web](https://example.org)\n```\n[in code](not/checked.md)\n```\n", encoding="utf-8")
    assert broken_links(readme) == ["README.md: docs/missing.md", "README.md: docs/usage.md#nope (no such heading)"]


def test_every_named_repository_path_exists():
    missing = [m for page in pages() for m in missing_paths(page)]
    assert not missing, "pages name paths that do not exist (a file moved?):\n" + "\n".join(missing)


def test_a_planted_stale_path_is_caught(tmp_path):
    (tmp_path / "seq2seq").mkdir()
    (tmp_path / "seq2seq" / "model.py").write_text("", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("`seq2seq/model.py`, `seq2seq/gone.py`, `tests/test_x.py::test_y`, ../shared/seq2seq/x.py\n",
                    encoding="utf-8")
    assert missing_paths(page, tmp_path) == ["README.md: seq2seq/gone.py", "README.md: tests/test_x.py"]


def test_the_code_map_lists_every_module_and_nothing_else():
    files, folders = code_map_modules((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    package = ROOT / "seq2seq"
    detailed = {"seq2seq/", "seq2seq/decoding/", "seq2seq/training/", "seq2seq/serving/"}
    actual = {str(p.relative_to(ROOT)) for folder in detailed for p in (ROOT / folder).glob("*.py")
              if p.name != "__init__.py"}
    subpackages = {f"seq2seq/{p.parent.name}/" for p in package.glob("*/__init__.py")}
    assert sorted(actual - files) == [], "modules missing from docs/architecture.md's code map"
    assert sorted(p for p in files if not (ROOT / p.rstrip("/")).exists()) == [], "code map names missing files"
    assert sorted(subpackages - folders) == [], "subpackages missing from the README's code map"


def test_the_code_map_parser_sees_a_missing_module():
    readme = ("## Code map\n\n```\nseq2seq/      flat\n  config.py   typed config\n"
              "seq2seq/decoding/   search\n  search.py, batched.py   loops\nscripts/x.py  other\n```\n")
    assert code_map_modules(readme) == ({"seq2seq/config.py", "seq2seq/decoding/search.py",
                                         "seq2seq/decoding/batched.py"}, {"seq2seq/", "seq2seq/decoding/"})


def test_the_names_the_readme_imports_from_seq2seq_exist():
    import seq2seq

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    python = "\n".join(body for lang, body in CODE_BLOCK.findall(readme) if lang == "python")
    names = [n.strip() for group in re.findall(r"^from seq2seq import (.+)$", python, re.M) for n in group.split(",")]
    assert "Translator" in names
    for name in names:
        assert getattr(seq2seq, name) is not None, name


@pytest.mark.parametrize("command", [
    'pip install "torch==2.13.0" -e . && scripts/train_translator.sh --data ../shared/data/multi30k --max-minutes 20'
    ' && python -m seq2seq.translate "A man is riding a bike."',
    'pip install "torch==2.13.0" -e ".[test]" && python -m pytest -q',
])
def test_the_readme_opens_with_the_two_commands(command):
    first_lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:15]
    assert any(command in line for line in first_lines)


def first_screen_problems(readme: str) -> list[str]:
    """What is wrong with a README's first 40 lines: they should hold what it is, the two commands, the results
    (three rows, undated, each linked to its home) and the start of "Using it"."""
    screen = "\n".join(readme.splitlines()[:40])
    problems = []
    if "## Using it" not in screen:
        problems.append('"## Using it" does not start within the first 40 lines')
    rows = [line for line in screen.split("## The result", 1)[-1].splitlines()
            if line.startswith("| ") and not line.startswith("| recipe")]
    if len(rows) != 3:
        problems.append(f"{len(rows)} result rows instead of 3")
    problems += [f"result row without a link: {row[:40]}" for row in rows if not LINK.search(row)]
    problems += [f"a date on the first screen: {date}" for date in re.findall(r"\b20\d\d-\d\d-\d\d\b", screen)]
    return problems


def test_the_readmes_first_screen_is_what_it_is_how_to_run_it_the_results_and_how_to_use_it():
    assert first_screen_problems((ROOT / "README.md").read_text(encoding="utf-8")) == []


def test_a_crowded_first_screen_is_caught():
    readme = ("# x\n\n## The result\n\n| recipe | BLEU |\n|---|---|\n| [a](docs/a.md) | 1 |\n| b (2026-12-02) | 2 |\n"
              + "filler\n" * 40 + "## Using it\n")
    assert first_screen_problems(readme) == ['"## Using it" does not start within the first 40 lines',
                                             "2 result rows instead of 3",
                                             "result row without a link: | b (2026-12-02) | 2 |",
                                             "a date on the first screen: 2026-12-02"]

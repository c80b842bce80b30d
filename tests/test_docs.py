"""The documentation runs: every Python block of README.md and docs/*.md is executed.

How a block is treated is decided by its fence's info string:

* ```python: executed. A file's Python blocks run in order in one namespace, like the cells
  of a notebook, in a subprocess that imports this checkout's tfchannelprune (each file gets a
  fresh namespace, Keras session and working folder, a temporary one, so the files a block
  writes stay out of the repository; time limit ``TIMEOUT_S`` per file). A block may only use
  names defined by earlier blocks of the same file: each doc starts with its own set-up block.
* ```python no-run: not executed. Every such block must be listed in ``NO_RUN`` (the test
  fails when the list and the files disagree), so skipping a block is a visible decision.
* any other language (```bash, ```text, ```kotlin ...): not executed.
* a fence without a language, or ```python with another word after it: the test fails, so a
  Python block cannot be skipped by accident.

The other tests keep the docs honest in two more ways: no file of the repository cites a
path outside it (the project's private notes), and relative links and the README's layout
section point at files that exist.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON = {"python", "py", "python3"}
NO_RUN_MARKER = "no-run"
TIMEOUT_S = 300
# {doc path relative to the repo: number of ```python no-run blocks in it}. Keep it empty.
NO_RUN: dict[str, int] = {}

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*(.*)$")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repo
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string, e.g. "python" or "bash"
    source: str

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info else ""

    @property
    def runs(self) -> bool:
        return self.language in PYTHON and NO_RUN_MARKER not in self.info.split()[1:]


def fenced_blocks(text: str, path: str = "<doc>") -> list[Block]:
    """The fenced code blocks of a Markdown text (CommonMark fences, indented up to 3)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = len(match.group(1)), match.group(2), match.group(3).strip()
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, j = [], i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: the code fence is never closed.")
        blocks.append(Block(path, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def _doc_blocks(doc: pathlib.Path) -> list[Block]:
    name = doc.relative_to(REPO) if doc.is_relative_to(REPO) else doc
    return fenced_blocks(doc.read_text(encoding="utf-8"), str(name))


def _ids(docs):
    return [str(d.relative_to(REPO)) for d in docs]


# --- the parser itself (so a parser bug cannot make every doc "pass" with no block found) ---


def test_fenced_blocks_finds_languages_lines_and_markers():
    text = (
        "intro\n```python\nx = 1\n```\n\n```bash\nmake test\n```\n"
        "  ```python no-run\n  y = 2\n  ```\n````text\n```python\nnot a block\n```\n````\n"
    )
    blocks = fenced_blocks(text)
    assert [(b.line, b.language, b.runs) for b in blocks] == [
        (2, "python", True),
        (6, "bash", False),
        (9, "python", False),
        (12, "text", False),
    ]
    assert blocks[0].source == "x = 1\n"
    assert blocks[2].source == "y = 2\n"
    assert "not a block" in blocks[3].source
    with pytest.raises(ValueError, match="never closed"):
        fenced_blocks("```python\nx = 1\n")


def test_docs_have_python_blocks():
    # the README quick start and most docs are code: finding none would mean a broken parser
    assert sum(b.runs for d in DOCS for b in _doc_blocks(d)) >= 10
    assert any(b.runs for b in _doc_blocks(REPO / "README.md"))


# --- every fence is classified explicitly ---


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_fence_names_its_language(doc):
    for block in _doc_blocks(doc):
        assert block.language, (
            f"{block.path}:{block.line}: a code fence without a language. Write ```python "
            "(executed by this test), ```python no-run (and list it in NO_RUN), or the "
            "block's language (```bash, ```text ...), which is not executed."
        )
        if block.language in PYTHON:
            extra = block.info.split()[1:]
            assert extra in ([], [NO_RUN_MARKER]), (
                f"{block.path}:{block.line}: unknown marker after ```python; only "
                f"'{NO_RUN_MARKER}' is understood. Received: info={block.info!r}"
            )


def test_no_run_blocks_are_the_listed_ones():
    found = {}
    for doc in DOCS:
        for block in _doc_blocks(doc):
            if block.language in PYTHON and not block.runs:
                found.setdefault(block.path, []).append(block.line)
    counts = {path: len(lines) for path, lines in found.items()}
    assert counts == NO_RUN, f"python no-run blocks (file: lines): {found}; NO_RUN={NO_RUN}"


# --- the Python blocks run ---

# One interpreter for all docs (TensorFlow is imported once), a fresh namespace, working folder
# and Keras session per doc, and a time limit per doc. A failing doc does not stop the others.
_RUNNER = r"""
import json, os, pathlib, signal, sys, time, traceback

repo, spec, results_path = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, str(repo))
import keras
import tfchannelprune

here = pathlib.Path(tfchannelprune.__file__).resolve()
if repo not in here.parents:
    sys.exit(f"imported tfchannelprune from {here}, not from the checkout {repo}")


def timeout(signum, frame):
    raise TimeoutError("the doc's blocks ran past the time limit")


signal.signal(signal.SIGALRM, timeout)
results = {}
for doc in json.load(open(spec)):
    os.chdir(doc["work"])
    keras.backend.clear_session()  # fresh layer-name counters: names as in a new process
    namespace, error, start = {"__name__": "__main__"}, None, time.perf_counter()
    signal.alarm(doc["timeout"])
    try:
        for block in doc["blocks"]:
            # padded with newlines so a traceback names the Markdown file and its line
            code = compile("\n" * block["line"] + block["source"], doc["file"], "exec")
            exec(code, namespace)
            print(f"{doc['path']}:{block['line']} ran", flush=True)
    except BaseException:
        error = traceback.format_exc()
    finally:
        signal.alarm(0)
    results[doc["path"]] = {"error": error, "seconds": time.perf_counter() - start}
    pathlib.Path(results_path).write_text(json.dumps(results))
    print(f"{doc['path']}: {'FAILED' if error else 'ok'} in {time.perf_counter() - start:.1f} s",
          flush=True)
"""


def _run_docs(docs: list[pathlib.Path], tmp_path: pathlib.Path) -> dict:
    """{doc path: {"error": traceback or None, "seconds"}} for the docs' Python blocks."""
    spec = []
    for i, doc in enumerate(docs):
        blocks = [{"line": b.line, "source": b.source} for b in _doc_blocks(doc) if b.runs]
        work = tmp_path / f"work{i}_{doc.stem}"
        work.mkdir()
        path = str(doc.relative_to(REPO)) if doc.is_relative_to(REPO) else str(doc)
        spec.append(
            {"path": path, "file": str(doc), "work": str(work), "blocks": blocks,
             "timeout": TIMEOUT_S}
        )  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    results_path = tmp_path / "results.json"
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(REPO), str(tmp_path / "spec.json"), str(results_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60 + TIMEOUT_S * len(docs),
    )  # fmt: skip
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for doc in spec:  # a doc without a result: the interpreter died (or never started)
        results.setdefault(doc["path"], {"error": f"no result:\n{out.stderr[-4000:]}"})
    return results


@pytest.fixture(scope="module")
def doc_results(request, tmp_path_factory):
    """Runs the Python blocks of the docs whose test is selected, in one subprocess."""
    selected = [
        item.callspec.params["doc"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_python_blocks_run"
    ]
    return _run_docs(selected or DOCS, tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_python_blocks_run(doc, doc_results):
    if not any(b.runs for b in _doc_blocks(doc)):
        pytest.skip(f"{doc.name} has no Python block")
    result = doc_results[str(doc.relative_to(REPO))]
    assert result["error"] is None, (
        f"a Python block of {doc.relative_to(REPO)} failed:\n{result['error'][-6000:]}"
    )


def test_a_failing_block_fails(tmp_path):
    bad, good = tmp_path / "bad.md", tmp_path / "good.md"
    bad.write_text("```python\nx = 1\n```\n\ntext\n\n```python\nassert x == 2, 'drifted'\n```\n")
    good.write_text("```python\nassert 'x' not in globals()  # fresh namespace per doc\n```\n")
    results = _run_docs([bad, good], tmp_path)
    error = results[str(bad)]["error"]
    assert error and "bad.md" in error and "line 8" in error and "drifted" in error
    assert results[str(good)]["error"] is None


# --- citations and links stay inside the repository ---

# built from pieces so that this file does not match itself
_OUTSIDE = re.compile("|".join([r"papers" r"\.md", r"\.\./" r"shared", r"/" r"work/"]))
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "saved_models"}


def _repo_text_files():
    try:
        names = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        paths = [REPO / n for n in names]
    except (OSError, subprocess.CalledProcessError):
        paths = [
            pathlib.Path(root) / f
            for root, dirs, files in os.walk(REPO)
            if not dirs.__setitem__(slice(None), [d for d in dirs if d not in _SKIP_DIRS])
            for f in files
        ]
    for path in paths:
        if path.is_file() and path.stat().st_size < 2_000_000:
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def test_no_file_cites_a_path_outside_the_repository():
    found = [
        f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path, text in _repo_text_files()
        for m in _OUTSIDE.finditer(text)
    ]
    assert not found, (
        "cite papers by title and arXiv id (docs/references.md), not notes outside the "
        f"repository: {found}"
    )


_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_relative_links_exist(doc):
    text = doc.read_text(encoding="utf-8")
    missing = [
        target
        for target in _LINK.findall(text)
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert not missing, f"{doc.relative_to(REPO)} links to missing files: {missing}"


_DOTTED = re.compile(r"(?<![\w./])tfchannelprune(?:\.\w+)+")
_FILE = re.compile(r"(?<![\w./])(?:tfchannelprune|tests|benchmarks|examples)/[\w/]*\w\.(?:py|json)")


def _resolves(dotted: str) -> bool:
    """Whether ``tfchannelprune.a.b`` names a module, or an attribute of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_module_paths_and_files_named_in_docs_exist(doc):
    text = doc.read_text(encoding="utf-8")
    stale = [name for name in sorted(set(_DOTTED.findall(text))) if not _resolves(name)]
    stale += [f for f in sorted(set(_FILE.findall(text))) if not (REPO / f).exists()]
    assert not stale, f"{doc.relative_to(REPO)} names what does not exist (moved?): {stale}"


def _readme_layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(b.source for b in fenced_blocks(section))


def test_readme_layout_names_every_package_and_module():
    layout = _readme_layout()
    lib = REPO / "tfchannelprune"
    names = [p.name + "/" for p in lib.iterdir() if (p / "__init__.py").exists()]
    names += [p.name for p in lib.glob("*.py")]
    for pkg in lib.iterdir():
        if (pkg / "__init__.py").exists():
            names += [m.stem for m in pkg.glob("*.py") if m.stem != "__init__"]
            names += [m.name + "/" for m in pkg.iterdir() if (m / "__init__.py").exists()]
    missing = [n for n in names if not re.search(rf"(?<![\w/]){re.escape(n)}(?!\w)", layout)]
    assert not missing, f"README's layout section does not mention: {sorted(missing)}"


def test_readme_layout_names_nothing_that_is_gone():
    layout = _readme_layout()
    lib = REPO / "tfchannelprune"
    for pkg in re.findall(r"(?<![\w/.])(\w+)/", layout):
        if pkg in {"tfchannelprune", "tests", "benchmarks", "examples", "docs", "results"}:
            continue
        dirs = [d for d in [lib, *lib.rglob(pkg), REPO / pkg] if d.is_dir() and d.name == pkg]
        assert dirs, f"README's layout names {pkg}/, which does not exist"
    for module in re.findall(r"(?<![\w/])(\w+)\.py\b", layout):
        hits = list(lib.rglob(f"{module}.py")) + list(REPO.glob(f"*/{module}.py"))
        assert hits, f"README's layout names {module}.py, which does not exist"

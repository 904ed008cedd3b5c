"""The executed pages run: every ```python block of docs/tutorial.md, docs/training.md and docs/tensors.md is
executed in order, in one namespace per page, and the doctest-style expected outputs (the lines after each
``>>>`` example) are checked. A block whose first line is ``# requires: module ...`` runs only where those
modules import (an optional extra); later blocks must not depend on it."""
import doctest
import importlib.util
import re
from pathlib import Path

import pytest

import fastgrad

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
TRAINING = ROOT / "docs" / "training.md"
TENSORS = ROOT / "docs" / "tensors.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
REQUIRES = re.compile(r"\A# requires:((?:[ \t]+[\w.]+)+)[ \t]*$", re.M)


def python_blocks(path):
    """(first line number, code) of every fenced python block."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def missing_requirements(code):
    """The modules a block's ``# requires:`` line names that do not import here (none: [])."""
    m = REQUIRES.match(code)
    return [mod for mod in m.group(1).split() if importlib.util.find_spec(mod) is None] if m else []


def run_markdown(path):
    """Run the blocks in one namespace; return (examples run, failure reports)."""
    globs = {"__name__": "__tutorial__"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    reports = []
    examples = 0
    for lineno, code in python_blocks(path):
        name = f"{path.name}:{lineno}"
        if missing_requirements(code):
            continue
        if ">>>" in code:
            test = parser.get_doctest(code, globs, name, str(path), lineno - 1)
            result = runner.run(test, out=reports.append, clear_globs=False)
            globs.update(test.globs)   # the DocTest worked on a copy: carry its names to the next block
            examples += result.attempted
        else:
            exec(compile(code, name, "exec"), globs)
            examples += 1
    return examples, reports


def test_tutorial_has_the_required_walkthroughs():
    text = TUTORIAL.read_text(encoding="utf-8")
    for needle in ["(a * x + b) ** c", "fg.graph_table", "fg.Var(1.0), fg.Var(2.0), fg.Var(3.0), fg.Var(4.0)",
                   "fg.sqrt(fg.exp(x ** 2) + x ** 2)", "fg.jvp", "x1 ** 4 * x2 + fg.sin(x1) + fg.log(x2)",
                   "gradient-descent", "fg.value_and_grad"]:
        assert needle in text, needle
    blocks = python_blocks(TUTORIAL)
    assert len(blocks) >= 10
    assert all(">>>" in code for _, code in blocks), "every block shows its output doctest-style"


PUBLIC_NAMES = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp", "graph_table", "to_dot",
                "draw", "stats", "gradcheck", "gradgradcheck", "GradcheckError", "custom_op"]


def test_tutorial_code_runs_and_outputs_match(tmp_path, monkeypatch):
    # NOTE: callable(), not hasattr(): importing fastgrad.gradcheck alone makes the *module* an attribute
    missing = [name for name in PUBLIC_NAMES if not callable(getattr(fastgrad, name, None))]
    assert not missing, f"fastgrad/__init__.py does not re-export {missing} (the tutorial uses fg.<name>)"
    monkeypatch.chdir(tmp_path)   # blocks may write files (y.draw("lecture.dot"))
    examples, reports = run_markdown(TUTORIAL)
    if reports:
        pytest.fail("docs/tutorial.md is out of date:\n" + "".join(reports), pytrace=False)
    assert examples >= 40


def test_a_wrong_expected_output_is_caught(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```python\n>>> 1 + 1\n3\n```\n", encoding="utf-8")
    examples, reports = run_markdown(doc)
    assert examples == 1 and reports and "Expected:\n    3\nGot:\n    2" in "".join(reports)


# ---- docs/training.md: the training walkthrough ----

def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("7. Trace once, replay many: `fg.compile` and `fg.vmap`") == \
        "7-trace-once-replay-many-fgcompile-and-fgvmap"
    assert github_anchor("6. A gradient-descent fit") == "6-a-gradient-descent-fit"


def test_training_page_covers_the_walkthrough():
    text = TRAINING.read_text(encoding="utf-8")
    for needle in ["make_moons", "CrossEntropyLoss", "F.mse_loss", "fg.optim.lr_scheduler.", "fg.no_grad()",
                   "model.eval()", "fg.nn.Dropout", "requires_grad_(False)", "fg.nn.init.xavier_uniform_",
                   "kaiming_uniform_", "clip_grad_norm_", "state_dict()", "load_state_dict", "tempfile",
                   "pickle", "json", "fg.compile", "fg.vmap", "tutorial.md#"]:
        assert needle in text, needle
    assert "sklearn." not in text.replace("sklearn.datasets.make_moons", ""), "built-in data only"
    blocks = python_blocks(TRAINING)
    assert len(blocks) >= 15
    assert all(">>>" in code for _, code in blocks), "every block shows its output doctest-style"
    assert "docs/training.md" in (ROOT / "README.md").read_text(encoding="utf-8"), "the README points to it"


def check_links(path):
    """Every relative link of the page's prose names a file, and its #anchor a heading of that file."""
    prose = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    prose = re.sub(r"`[^`\n]*`", "", prose)   # inline code: `net.layers[1](x)` is not a link
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        page = (path.parent / target) if target else path
        assert page.is_file(), f"{link}: no such file"
        if anchor:
            text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
            headings = re.findall(r"^#+ (.+)$", text, re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"{link}: no such heading"


def test_training_page_links_resolve():
    check_links(TRAINING)


def test_training_page_code_runs_and_outputs_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # nothing should be written, but never into the repository
    examples, reports = run_markdown(TRAINING)
    if reports:
        pytest.fail("docs/training.md is out of date:\n" + "".join(reports), pytrace=False)
    assert examples >= 100
    assert list(tmp_path.iterdir()) == [], "the page writes only to its own temporary directory"


# ---- docs/tensors.md: Tensors, their losses, layers and training on batches ----

def test_a_block_that_requires_a_missing_module_is_skipped(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```python\n# requires: numpy no_such_module_xyz\n>>> 1 + 1\n3\n```\n"
                   "```python\n# requires: numpy\n>>> 1 + 1\n2\n```\n", encoding="utf-8")
    examples, reports = run_markdown(doc)
    assert examples == 1 and not reports


def test_tensors_page_covers_the_tensor_api():
    text = TENSORS.read_text(encoding="utf-8")
    needles = ["requires_grad=True", "float32", ".item()", ".detach()", ".argmax(", "broadcast", "np.add.at",
               "fg.where", "fg.concatenate", "fg.stack", "log_softmax", "logsumexp", "cross_entropy",
               "label_smoothing", "reduction=", "mse_loss", "binary_cross_entropy_with_logits",
               "fg.no_grad()", "fg.Var(", "tensor=True", "nn.Sequential", "state_dict()", "optim.Adam",
               "make_moons", "load_digits", "demo digits", "benchmarks/bench_tensor.py",
               "Differences from PyTorch", "pickle"]
    for needle in needles:
        assert needle in text, needle
    blocks = python_blocks(TENSORS)
    assert len(blocks) >= 15
    assert all(">>>" in code for _, code in blocks), "every block shows its output doctest-style"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/tensors.md" in readme, "the README points to it"
    assert "tens of µs" not in readme, "the README's Tensor row describes what exists now"
    assert "tensors.md" in TRAINING.read_text(encoding="utf-8"), "the training walkthrough points to it"


def test_tensors_page_links_resolve():
    check_links(TENSORS)


def test_tensors_page_code_runs_and_outputs_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples, reports = run_markdown(TENSORS)
    if reports:
        pytest.fail("docs/tensors.md is out of date:\n" + "".join(reports), pytrace=False)
    assert examples >= 110      # 129 with scikit-learn installed; its block has 9
    assert list(tmp_path.iterdir()) == [], "the page writes nothing"

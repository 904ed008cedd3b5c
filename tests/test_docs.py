"""The tutorial's code runs: every ```python block of docs/tutorial.md is executed in order, in one namespace,
and the doctest-style expected outputs (the lines after each ``>>>`` example) are checked."""
import doctest
import re
from pathlib import Path

import pytest

import fastgrad

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path):
    """(first line number, code) of every fenced python block."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def run_markdown(path):
    """Run the blocks in one namespace; return (examples run, failure reports)."""
    globs = {"__name__": "__tutorial__"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    reports = []
    examples = 0
    for lineno, code in python_blocks(path):
        name = f"{path.name}:{lineno}"
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

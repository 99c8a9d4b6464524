"""The house rules of the source tree: one floor of steps over one floor of libraries.

Read from the code's own imports (ast, no import side effects), so a new cycle or a library that
reaches up into a step fails here with the modules named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from actionrepro import cli, dag
from actionrepro.steps import STEP_HELP

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "actionrepro"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {module_name(p): set(dag.module_imports(module_name(p))) & modules for p in PACKAGE.rglob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, stack)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_import_cycle_inside_the_package():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_library_imports_a_step_and_no_step_imports_another():
    for module, deps in import_graph().items():
        steps = {d for d in deps if d.startswith("actionrepro.steps.")}
        if module.startswith("actionrepro.steps."):
            assert not steps, f"step {module} imports step(s) {sorted(steps)}: move the shared part into a library"
        else:
            assert module == "actionrepro.cli" or not steps, f"library {module} imports step(s) {sorted(steps)}"


def step_file(step: str) -> Path:
    """The file of a CLI subcommand: steps/<step with '-' as '_'>.py (evaluate-checkpoint -> evaluate_checkpoint.py)."""
    return PACKAGE / "steps" / f"{step.replace('-', '_')}.py"


def steps_without_module(steps) -> list[str]:
    return [step for step in steps if not step_file(step).is_file()]


def test_every_cli_step_has_its_module_with_the_shared_entry_points():
    listed = set(cli.build_parser([])._subparsers._group_actions[0].choices)
    assert listed == set(STEP_HELP)
    assert steps_without_module(sorted(listed)) == []
    for step in listed:
        module = cli.step_module(step)
        assert Path(module.__file__) == step_file(step)
        assert callable(module.add_arguments) and callable(module.run), step


def test_a_cli_step_without_its_module_fails_the_layout_rule():
    assert steps_without_module(["evaluate-checkpoint", "evaluate", "no-such-step"]) == ["no-such-step"]


def test_the_workflow_files_hold_rules_only():
    files = [ROOT / "workflow" / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    for path in files:
        assert not re.search(r"^\s*def ", path.read_text(), re.MULTILINE), f"{path} defines a function"


def test_references_point_at_files_that_exist():
    """Docstrings and comments name documents of this repository, never ones only a team checkout has."""
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "workflow").rglob("*.smk"), ROOT / "README.md"]:
        text = path.read_text()
        for name in re.findall(r"\b((?:DESIGN|MODELS|PITFALLS)\.md)\b", text):
            assert (ROOT / "docs" / name.lower()).is_file() or (ROOT / name).is_file(), f"{path} cites {name}"
        assert "../shared" not in text, path


def test_ast_reading_sees_lazy_and_by_name_imports():
    imports = dag.module_imports("actionrepro.data.download")
    assert "actionrepro.data.synthetic" in imports  # importlib.import_module("actionrepro.data.synthetic")
    tree = ast.parse((PACKAGE / "runs.py").read_text())
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    assert "actionrepro.pruning.structure" in dag.module_imports("actionrepro.runs")  # inside load_model

"""The walk of docs/architecture.md, measured: ``stillroom run`` on a real spec (a tiny teacher and student, an
``sft`` entry, the ``exact_match`` evaluator) is traced, and every core module whose functions ran must be one
the page's table names. The table's step rows name at most 8 modules, each of which really ran."""

import json
import re
import sys
from pathlib import Path

from typer.testing import CliRunner

import stillroom
from stillroom.cli import app
from stillroom.results import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
CORE = Path(stillroom.__file__).resolve().parent
# rows of the table that are not steps of the walk: what every plugin is written against, and the services the
# components (not the walk) call
NOT_STEPS = ("contract", "services")
MAX_STEP_MODULES = 8

SPEC = """
name = "walk"

[teacher]
kind = "hf"
model = "{teacher}"

[student]
kind = "hf"
model = "{student}"

[data]
kind = "file"
path = "{data}"
test_size = 2

[budget]
train_examples = 4
steps = 2
batch_size = 2
learning_rate = 1e-3

[[methods]]
kind = "sft"

[[evaluators]]
kind = "exact_match"
max_tokens = 4
"""


def walk_table() -> dict[str, list[str]]:
    """Step (or ``contract``/``services``) -> the core modules its row names, from the page's last table."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Modules on the walk", 1)[1]
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("step", "---"):
            rows[cells[0]] = re.findall(r"`core/(\w+)\.py`", cells[1])
    return rows


def traced_modules(run) -> set[str]:
    """The core modules (by file stem) whose functions were called while ``run()`` ran."""
    seen: set[str] = set()

    def profile(frame, event, arg):
        if event == "call":
            path = frame.f_code.co_filename
            if path.startswith(str(CORE)) and frame.f_code.co_name != "<module>":
                seen.add(Path(path).relative_to(CORE).parts[0].removesuffix(".py"))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return seen


def test_the_table_counts_at_most_eight_step_modules():
    rows = walk_table()
    assert {"command", "contract", "services"} <= set(rows)
    steps = {m for step, modules in rows.items() if step not in NOT_STEPS for m in modules}
    assert 0 < len(steps) <= MAX_STEP_MODULES, sorted(steps)
    assert not steps & set(rows["services"]), "a module is either a step or a service"
    for module in {m for modules in rows.values() for m in modules}:
        assert (CORE / f"{module}.py").is_file() or (CORE / module / "__init__.py").is_file(), module


def test_stillroom_run_touches_only_the_modules_the_page_names(stillroom_host, tiny_model_dir, tiny_teacher_dir,
                                                              tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"What is {i} plus 1?",
                                        "target": f"The answer is {i + 1}."}) + "\n" for i in range(8)))
    spec = tmp_path / "walk.toml"
    spec.write_text(SPEC.format(teacher=tiny_teacher_dir, student=tiny_model_dir, data=data))
    outcome = {}
    ran = traced_modules(lambda: outcome.update(result=CliRunner().invoke(app, ["run", str(spec)])))
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    rows = ResultsStore.default().rows()
    assert {"walk/teacher", "walk/base", "walk/sft"} <= {row["model"] for row in rows}  # the walk's end

    table = walk_table()
    named = {m for modules in table.values() for m in modules}
    assert ran - named == set(), f"modules the run called that docs/architecture.md does not place: {ran - named}"
    steps = {m for step, modules in table.items() if step not in NOT_STEPS for m in modules}
    assert steps <= ran, f"the page names steps the run never called: {steps - ran}"

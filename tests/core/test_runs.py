import json

import pytest
from toy_components import CALLS, CRASH

from stillroom.specs import load_spec, spec_hash

from stillroom.rundir import find_resumable
from stillroom.runs import execute
from stillroom.results import ResultsStore


def test_run_directory_layout_and_results(toy_host, toy_spec):
    run = execute(toy_spec, host=toy_host)
    root = run.dir.root
    assert root.parent.name == "toy" and root.parent.parent == toy_spec.parent / "runs"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["spec_hash"] == run.spec_hash
    assert manifest["versions"]["torch"] and manifest["versions"]["plugins"]["toy"]["status"] == "ok"
    assert json.loads((root / "spec.json").read_text())["name"] == "toy"
    events = [json.loads(line)["event"] for line in (root / "events.jsonl").read_text().splitlines()]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    for stage in ("data", "methods/copy/teacher_answers", "methods/copy/train", "methods/gold/train",
                  "eval/teacher/match", "eval/base/match", "eval/copy/match", "eval/gold/match"):
        assert (root / "stages" / stage / ".done").exists(), stage
    assert not list(root.rglob("*.partial"))

    rows = {r["model"]: r for r in ResultsStore.default().rows(run_id=run.id)}
    # the teacher upper-cases; the copy student learned 4 teacher answers but the test prompts are unseen
    assert rows["toy/teacher"]["value"] == 1.0
    assert rows["toy/base"]["value"] == 0.0
    assert rows["toy/copy"]["teacher_calls"] == 4
    assert rows["toy/gold"]["teacher_calls"] == 0
    model = ResultsStore.default().model(run.id, "toy/copy")
    assert model["options"]["budget"]["train_examples"] == 4 and model["method"] == "copy"


def test_resume_continues_after_last_finished_stage(toy_host, toy_spec):
    CRASH["after_teacher"] = True
    with pytest.raises(RuntimeError, match="planned crash"):
        execute(toy_spec, host=toy_host)
    assert CALLS["teacher"] == 4
    folder = find_resumable(toy_spec.parent / "runs", "toy", spec_hash(load_spec(toy_spec, toy_host)))
    assert folder is not None and (folder / "stages/methods/copy/teacher_answers/.done").exists()
    assert not (folder / "stages/methods/copy/train").exists()
    assert find_resumable(toy_spec.parent / "runs", "toy", "another-spec") is None

    CRASH["after_teacher"] = False
    run = execute(toy_spec, resume=True, host=toy_host)
    assert run.dir.root == folder
    # the training answers came from the finished stage; the only new calls are the teacher's evaluation
    assert CALLS["teacher"] == 4 + 4
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert {"event": "stage_skipped", "stage": "methods/copy/teacher_answers"} in [
        {k: e.get(k) for k in ("event", "stage")} for e in events]
    assert (folder / "FINISHED").exists()
    # resuming a finished run starts a new one
    again = execute(toy_spec, resume=True, host=toy_host)
    assert again.dir.root != folder


def test_rerun_uses_call_cache_and_adds_rows(toy_host, toy_spec):
    first = execute(toy_spec, host=toy_host)
    calls = CALLS["teacher"]
    second = execute(toy_spec, host=toy_host)
    assert second.id != first.id
    assert CALLS["teacher"] == calls  # every teacher call came from the cache
    history = ResultsStore.default().rows(latest=False, model="toy/copy")
    assert {r["run_id"] for r in history} == {first.id, second.id}
    assert [r["run_id"] for r in ResultsStore.default().rows(model="toy/copy")] == [second.id]


def test_observer_hooks_see_the_run(toy_host, toy_spec):
    from stillroom import hookimpl

    seen = []

    class Observer:
        @hookimpl
        def stillroom_run_started(self, run):
            seen.append(("started", run.name))

        @hookimpl
        def stillroom_stage_finished(self, run, stage, metrics):
            seen.append(("stage", stage))

        @hookimpl
        def stillroom_run_finished(self, run, results):
            seen.append(("finished", len(results)))

    toy_host.pm.register(Observer())
    execute(toy_spec, host=toy_host)
    assert seen[0] == ("started", "toy") and ("stage", "methods/copy/train") in seen
    assert seen[-1] == ("finished", 4)  # 4 models x 1 evaluator x 1 metric

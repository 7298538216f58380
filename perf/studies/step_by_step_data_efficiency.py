"""A miniature of the distilling step-by-step claim: with the same steps, multi-task training on labels and
rationales beats label-only training, most clearly when data is scarce.

Task: the synthetic arithmetic problems (``What is 23+45-12?`` -> ``56``, rationale ``23+45=68. 68-12=56.``);
student: the quickstart character-level Llama, trained from scratch. Each training-set fraction and mode
gets the same optimizer steps, batch size and learning rate; accuracy is exact match of the answer on
held-out problems. Prints one line per run and a table. Not a test: it takes minutes.

    STILLROOM_NO_PROGRESS=1 .venv/bin/python perf/studies/step_by_step_data_efficiency.py --steps 1500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import stillroom
from stillroom import Context, GenerationRequest
from stillroom.training import MethodJob
from stillroom.rundir import RunDirectory
from stillroom.specs import Budget


def accuracy(student, records, batch_size: int = 300) -> float:
    from stillroom.plugins.step_by_step.evaluation import predicted_label
    from stillroom.plugins.step_by_step.prompts import labels_match

    correct = 0
    for start in range(0, len(records), batch_size):
        part = records[start:start + batch_size]
        outputs = student.generate([GenerationRequest(prompt=r["prompt"], max_tokens=40) for r in part])
        correct += sum(labels_match("generic", predicted_label(o[0].text), r["answer"]) for o, r in zip(outputs, part))
    return correct / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=300)
    parser.add_argument("--fractions", default="0.25,0.5,1.0")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--operations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    context = Context(seed=args.seed)
    data = stillroom.build("generator", "arithmetic", context=context, train_size=args.train_size,
                           test_size=args.test_size, seed=args.seed,
                           difficulty={"operations": args.operations}).build_dataset()
    base = stillroom.build("student", "quickstart", context=context, device="cpu",
                           shape={"layers": args.layers, "hidden": args.hidden, "heads": 4}, seed=args.seed)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for fraction in [float(f) for f in args.fractions.split(",")]:
            for mode in ("label_only", "multitask"):
                label = f"{mode}-{fraction}"
                method = stillroom.build("method", "step_by_step", context=context, mode=mode, labels="gold",
                                         cpu_threads=1, warmup_steps=50)
                budget = Budget(train_examples=max(1, int(args.train_size * fraction)), steps=args.steps,
                                batch_size=args.batch_size, learning_rate=args.learning_rate)
                job = MethodJob(label, method, None, base.fresh(), data, budget, args.seed,
                                RunDirectory(Path(scratch) / label), context)
                start = time.perf_counter()
                trained = method.run(job)
                seconds = time.perf_counter() - start
                row = {"fraction": fraction, "train_examples": budget.train_examples, "mode": mode,
                       "accuracy": accuracy(trained, data["test"]), "train_seconds": round(seconds, 1)}
                results.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nsteps {args.steps}, batch {args.batch_size}, lr {args.learning_rate}, "
          f"student {args.layers}x{args.hidden}, {len(data['test'])} held-out problems")
    print(f"{'fraction':>8} {'examples':>8} {'label_only':>10} {'multitask':>10}")
    for fraction in sorted({r["fraction"] for r in results}):
        by_mode = {r["mode"]: r for r in results if r["fraction"] == fraction}
        print(f"{fraction:>8} {by_mode['label_only']['train_examples']:>8} "
              f"{by_mode['label_only']['accuracy']:>10.3f} {by_mode['multitask']['accuracy']:>10.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

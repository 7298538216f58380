"""A miniature of the GKD paper's RLAIF claim: on the student's own samples, mixing a task reward into on-policy
distillation, ``(1 - alpha)*E[r] - alpha*D(teacher||student)``, trades the reward against closeness to the
teacher. Here the reward is answer correctness (the exact_match evaluator as a RewardScorer) on the
quickstart task, so the question is whether alpha in {0, 0.5, 1} changes held-out accuracy, and how each
compares with sft and gkd given the same steps.

Setting (the paper also starts RL from a supervised student): per seed, the quickstart student is first
fine-tuned on gold answers for ``--warm-steps`` steps (shared by every arm of that seed); then each arm trains
``--steps`` more steps from that checkpoint with the same batch size and learning rate:
``sft`` (more gold data), ``gkd`` (the quickstart's entry: lmbda 0.5, beta 0.5), and ``gkd_rl`` at each alpha
(reverse KL to the quickstart teacher, 4 samples per prompt). Accuracy is exact match of the final answer on
the held-out problems (greedy). Verdicts: paired over (seed, problem) with the core's sign-flip test and
hierarchical bootstrap, Holm-corrected within each reference (core/leaderboard.py ``verdicts_against``).
Not a test: it takes minutes to an hour.

    STILLROOM_NO_PROGRESS=1 OMP_NUM_THREADS=1 .venv/bin/python perf/studies/gkd_rl_alpha.py --seeds 0,1,2,3,4 \\
        --out /tmp/gkd_rl_alpha.json
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

TASK = {"operations": 2, "max_operand": 20}  # the quickstart's


def correctness(student, records, scorer) -> dict[str, float]:
    """item id -> 1.0 when the greedy answer's final number is right (the exact_match rule), else 0.0."""
    outputs = student.generate([GenerationRequest(messages=[{"role": "user", "content": r["prompt"]}], max_tokens=48)
                                for r in records], description="held-out")
    rewards = scorer.reward([r["prompt"] for r in records], [o[0].text for o in outputs],
                            [r["target"] for r in records])
    return {str(r["id"]): value for r, value in zip(records, rewards)}


def arms(alphas: list[float]) -> list[tuple[str, dict]]:
    found = [("sft", {"kind": "sft"}),
             ("gkd", {"kind": "gkd", "lmbda": 0.5, "beta": 0.5, "max_new_tokens": 40})]
    for alpha in alphas:
        found.append((f"gkd_rl a={alpha:g}", {"kind": "gkd_rl", "alpha": alpha, "reward": {"kind": "exact_match"},
                                               "loss": {"kind": "reverse_kl"}, "num_generations": 4,
                                               "max_new_tokens": 40}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--alphas", default="0,0.5,1")
    parser.add_argument("--warm-steps", type=int, default=1500)
    parser.add_argument("--warm-learning-rate", type=float, default=1e-2, help="the quickstart budget's")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=300)
    parser.add_argument("--out", default=None, help="write per-seed results and verdicts as JSON here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    alphas = [float(a) for a in args.alphas.split(",")]

    context = Context(seed=0)
    data = stillroom.build("generator", "arithmetic", context=context, train_size=args.train_size,
                           test_size=args.test_size, seed=0, difficulty=TASK).build_dataset()
    teacher = stillroom.build("teacher", "quickstart", context=context, task=TASK, device="cpu")
    scorer = stillroom.build("evaluator", "exact_match", context=context)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scores["teacher"] = {"0": correctness(teacher, data["test"], scorer)}
        for seed in seeds:
            base = stillroom.build("student", "quickstart", context=context, device="cpu", seed=seed)
            budget = Budget(steps=args.warm_steps, batch_size=args.batch_size, learning_rate=args.warm_learning_rate)
            warm_job = MethodJob("warm", stillroom.build("method", "sft", context=context), None, base.fresh(), data,
                                 budget, seed, RunDirectory(Path(scratch) / f"seed{seed}"), context)
            warm = stillroom.build("method", "sft", context=context).run(warm_job)
            warm_path = warm_job.stage_path("train") / "model"
            scores.setdefault("warm start", {})[str(seed)] = correctness(warm, data["test"], scorer)
            for label, options in arms(alphas):
                options = dict(options)
                method = stillroom.build("method", options.pop("kind"), context=context, **options)
                budget = Budget(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate)
                job = MethodJob(label.replace(" ", "_").replace("=", ""), method, teacher, base.load(warm_path), data,
                                budget, seed, RunDirectory(Path(scratch) / f"seed{seed}"), context)
                start = time.perf_counter()
                trained = method.run(job)
                seconds = time.perf_counter() - start
                per_item = correctness(trained, data["test"], scorer)
                scores.setdefault(label, {})[str(seed)] = per_item
                stage = job.stage_metrics("train")
                row = {"seed": seed, "arm": label, "accuracy": sum(per_item.values()) / len(per_item),
                       "warm_accuracy": sum(scores["warm start"][str(seed)].values()) / len(per_item),
                       "seconds": round(seconds, 1),
                       **{k: stage.get(k) for k in ("optimizer_steps", "train_tokens", "student_generated_tokens",
                                                    "teacher_forward_tokens", "reward_calls", "mean_reward",
                                                    "final_reward", "final_divergence")}}
                rows.append(row)
                print(json.dumps(row), flush=True)

    from stillroom.leaderboard import verdicts_against

    verdicts = {reference: verdicts_against(reference, {k: v for k, v in scores.items() if k != "teacher"})
                for reference in ("sft", "gkd", f"gkd_rl a={alphas[-1]:g}")}
    print(f"\nwarm start {args.warm_steps} steps (lr {args.warm_learning_rate}), then {args.steps} steps per arm; "
          f"batch {args.batch_size}, lr {args.learning_rate}; seeds {seeds}; {len(data['test'])} held-out problems")
    print(f"teacher accuracy {sum(scores['teacher']['0'].values()) / len(data['test']):.3f}")
    print(f"{'arm':<14} {'mean acc':>8}  per seed")
    for label, per_seed in scores.items():
        if label == "teacher":
            continue
        values = [sum(v.values()) / len(v) for v in per_seed.values()]
        print(f"{label:<14} {sum(values) / len(values):8.3f}  " + " ".join(f"{v:.3f}" for v in values))
    for reference, found in verdicts.items():
        print(f"\nvs {reference} (Holm over {len(found)} comparisons):")
        for name, v in found.items():
            print(f"  {name:<14} diff {v['diff_vs_reference']:+.3f} [{v['diff_ci_low']:+.3f}, {v['diff_ci_high']:+.3f}]"
                  f"  p_adj {v['p_value']:.4f}  {v['verdict']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "verdicts": verdicts}, indent=1))


if __name__ == "__main__":
    main()

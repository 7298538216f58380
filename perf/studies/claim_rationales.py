"""Claim (distilling step-by-step, Hsieh et al. 2023): at an equal number of training problems, training the
student to predict the teacher's rationale as a second task beats training on the teacher's labels alone, and
the advantage is largest when data is scarce.

Arms, per training-set size (one run each, same steps, batch and learning rate): ``rationales`` =
step_by_step multitask on the teacher's extracted rationales and labels; ``labels`` (the reference) =
step_by_step label_only on the same teacher labels. Paired over (seed, problem); see claim_runner.py.

    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/claim_rationales.py --sizes 64,256,2000 --out /tmp/rationales.json
"""

from __future__ import annotations

from claim_runner import arguments, finish, run_study, study_spec, summary

EXTRACTION = {"exemplars": [], "query_template": "{input}", "as_chat": True, "answer_marker": "The answer is",
              "stop": [], "max_tokens": 64}


def main() -> None:
    import argparse
    import sys

    sizes = "64,256,2000"
    if "--sizes" in sys.argv:  # ours, before the shared arguments
        at = sys.argv.index("--sizes")
        sizes = sys.argv[at + 1]
        del sys.argv[at:at + 2]
    args = arguments(__doc__.splitlines()[0])
    rows = []
    for size in [int(s) for s in sizes.split(",")]:
        methods = [
            {"kind": "step_by_step", "label": "labels", "mode": "label_only", "rationales": "teacher",
             "labels": "teacher", "extraction": EXTRACTION},
            {"kind": "step_by_step", "label": "rationales", "mode": "multitask", "rationales": "teacher",
             "labels": "teacher", "extraction": EXTRACTION},
        ]
        spec = study_spec(f"claim-rationales-{size}", methods, "labels", args, train_examples=size)
        rows += summary(run_study(spec, args), f"n={size}")
    finish(rows, args, "rationales beat labels at equal data, most at small data")


if __name__ == "__main__":
    main()

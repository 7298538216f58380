"""The quickstart's options, chosen on the VALIDATION split (never the test split): each candidate setting
runs as its own entry of one run at several seeds, scored by exact match on the arithmetic generator's
validation problems (disjoint from train and test), compared with the first candidate.

Four choices (``--choice``):

- ``gkd``: gkd as the GKD paper recommends (lmbda 1: on-policy, beta 0.9: JSD(0.9)) against on-policy
  forward KL (lmbda 1, beta 0) and the earlier quickstart setting (lmbda 0.5, beta 0.5).
- ``budget``: sft from the pretrained base under the budget given by ``--steps`` and ``--learning-rate``
  (default: the quickstart's own); one run per budget, since the budget is shared by every entry of a run.
- ``warmup``: sft without and with a 5% linear learning-rate warm-up (sft's own option; to give every method
  the same warm-up, run ``--choice quickstart --warmup-ratio 0.05``, which sets ``budget.warmup_ratio``).
- ``quickstart``: every method entry of the packaged spec under that budget, compared with sft: the demo
  itself, scored on validation problems.

``--split test`` scores the test split instead: only to diagnose a difference between the splits, never to
choose (docs/findings.md "Quickstart choices").

    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/quickstart_choices.py --seeds 0,1,2 --out /tmp/choices.json
    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/quickstart_choices.py --choice budget --steps 1000 \\
        --learning-rate 1e-2 --seeds 0,1,2 --jobs 1
    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/quickstart_choices.py --choice quickstart \\
        --learning-rate 7e-3 --seeds 0,1,2 --test-size 200 --jobs 1
"""

from __future__ import annotations

from claim_runner import arguments, finish, run_study, study_spec, summary

CANDIDATES = {
    "gkd": [
        {"kind": "gkd", "label": "gkd_l1_b0.9", "lmbda": 1.0, "beta": 0.9, "max_new_tokens": 40},
        {"kind": "gkd", "label": "gkd_l0.5_b0.5", "lmbda": 0.5, "beta": 0.5, "max_new_tokens": 40},
        {"kind": "gkd", "label": "gkd_l1_b0", "lmbda": 1.0, "beta": 0.0, "max_new_tokens": 40},
    ],
    "budget": [{"kind": "sft", "label": "sft"}],
    # the gap between the first budget probe and the demo: sft with and without a 5% linear warm-up
    "warmup": [{"kind": "sft", "label": "sft"}, {"kind": "sft", "label": "sft_warmup5", "warmup_ratio": 0.05}],
    "quickstart": None,  # every method entry of the packaged spec, as the demo runs them
}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], seeds="0,1,2",
                     extra={"--choice": (str, "gkd (default), budget, warmup or quickstart"),
                            "--split": (str, "validation (default; where choices are made) or test (diagnosis only)")})
    from stillroom.plugins.synthetic.quickstart import packaged_spec

    choice = args.choice or "gkd"
    split = args.split or "validation"
    if choice not in CANDIDATES or split not in ("validation", "test"):
        raise SystemExit(f"--choice must be one of {sorted(CANDIDATES)} and --split validation or test")
    budget = packaged_spec()["budget"]
    if args.steps == 300:  # not given: the quickstart's own budget
        args.steps = budget["steps"]
    candidates = CANDIDATES[choice] or packaged_spec()["methods"]
    reference = candidates[0].get("label") or candidates[0]["kind"]
    spec = study_spec(f"quickstart-choices-{choice}", candidates, reference, args, split=split)
    spec["data"]["validation_size"] = args.test_size
    rows = summary(run_study(spec, args), split)
    print(f"budget: {spec['budget']}")
    finish(rows, args, f"quickstart {choice} choice on the {split} split, budget {spec['budget']}")


if __name__ == "__main__":
    main()

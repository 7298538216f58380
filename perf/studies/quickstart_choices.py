"""The quickstart's method options, chosen on the VALIDATION split (never the test split): each candidate
setting of a method runs as its own entry of one run at several seeds, scored by exact match on the
arithmetic generator's validation problems (disjoint from train and test), compared with the first candidate.

Candidates: gkd as the GKD paper recommends (lmbda 1: on-policy, beta 0.9: JSD(0.9)) against on-policy
forward KL (lmbda 1, beta 0) and the earlier quickstart setting (lmbda 0.5, beta 0.5).

    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/quickstart_choices.py --seeds 0,1,2 --out /tmp/choices.json
"""

from __future__ import annotations

from claim_runner import arguments, finish, run_study, study_spec, summary

CANDIDATES = [
    {"kind": "gkd", "label": "gkd_l1_b0.9", "lmbda": 1.0, "beta": 0.9, "max_new_tokens": 40},
    {"kind": "gkd", "label": "gkd_l0.5_b0.5", "lmbda": 0.5, "beta": 0.5, "max_new_tokens": 40},
    {"kind": "gkd", "label": "gkd_l1_b0", "lmbda": 1.0, "beta": 0.0, "max_new_tokens": 40},
]


def main() -> None:
    args = arguments(__doc__.splitlines()[0], seeds="0,1,2")
    from stillroom.plugins.synthetic.quickstart import packaged_spec

    steps = packaged_spec()["budget"]["steps"]
    if args.steps == 300:  # not given: the quickstart's own budget
        args.steps = steps
    spec = study_spec("quickstart-choices", CANDIDATES, CANDIDATES[0]["label"], args, split="validation")
    spec["data"]["validation_size"] = args.test_size
    rows = summary(run_study(spec, args), "validation")
    finish(rows, args, "quickstart options chosen on the validation split")


if __name__ == "__main__":
    main()

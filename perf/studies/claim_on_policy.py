"""Claim (GKD, Agarwal et al. 2024): distilling on the student's own samples (on-policy, lmbda = 1) beats
distilling on a fixed dataset of output sequences (lmbda = 0), with the same divergence, steps and batch.

Arms (one run): ``fixed`` (the reference) = gkd with lmbda 0 (the data's target sequences, supervised KD);
``on_policy`` = gkd with lmbda 1 (every batch sampled by the student). Both use the divergence ``--beta``
(default: the quickstart's gkd entry, forward KL since it was chosen on validation; 0.9 = the paper's JSD(0.9)).
Paired over (seed, problem); see claim_runner.py.

    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/claim_on_policy.py --steps 1000 --test-size 100 --out /tmp/on_policy.json
"""

from __future__ import annotations

from claim_runner import arguments, finish, run_study, study_spec, summary


def main() -> None:
    args = arguments(__doc__.splitlines()[0], extra={"--beta": (float, "gkd's divergence for both arms (default: "
                                                                        "the quickstart's)")})
    from stillroom.plugins.synthetic.quickstart import packaged_spec

    shipped = next(m for m in packaged_spec()["methods"] if m["kind"] == "gkd")
    beta = shipped["beta"] if args.beta is None else args.beta
    methods = [{"kind": "gkd", "label": "fixed", "lmbda": 0.0, "beta": beta, "max_new_tokens": 40},
               {"kind": "gkd", "label": "on_policy", "lmbda": 1.0, "beta": beta, "max_new_tokens": 40}]
    rows = summary(run_study(study_spec("claim-on-policy", methods, "fixed", args), args), "gkd")
    finish(rows, args, "on-policy data beats a fixed dataset")


if __name__ == "__main__":
    main()

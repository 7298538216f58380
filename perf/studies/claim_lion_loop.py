"""Claim (Lion, Jiang et al. 2023): the adversarial loop -- imitation, discrimination of the problems the
student gets wrong, generation of new problems like them -- beats plain imitation at an equal number of
teacher calls.

Arms (one run, same steps, batch and ``train_examples`` = teacher answers bought): ``imitation`` (the
reference) = lion with one iteration (imitate the teacher on train_examples problems: plain imitation);
``loop`` = lion with three iterations (half the problems from the data, the rest written by the offline
instruction writer around hard and easy problems, the same number of teacher answers). The referee is the
offline arithmetic_referee (no teacher calls). Paired over (seed, problem); see claim_runner.py.

    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/claim_lion_loop.py --out /tmp/lion.json
"""

from __future__ import annotations

from claim_runner import arguments, finish, run_study, study_spec, summary


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    common = {"kind": "lion", "referee": {"kind": "arithmetic_referee"},
              "instruction_generator": {"kind": "arithmetic_variations"},
              "student_sampling": {"max_tokens": 40}, "teacher_sampling": {"max_tokens": 64},
              "rouge_threshold": 1.0}  # as in the quickstart: 0.7 rejects nearly every arithmetic problem
    methods = [{**common, "label": "imitation", "iterations": 1}, {**common, "label": "loop", "iterations": 3}]
    rows = summary(run_study(study_spec("claim-lion-loop", methods, "imitation", args, train_examples=1000),
                             args), "lion")
    finish(rows, args, "Lion's loop beats plain imitation at equal teacher calls")


if __name__ == "__main__":
    main()

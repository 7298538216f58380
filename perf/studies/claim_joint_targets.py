"""Claim (KD4Gen joint teaching, Rotman/Zhang et al.): word-level KD on pseudo-targets written by both the
teacher and the student beats KD on the teacher's pseudo-targets alone.

Arms (one run, same steps, batch, K = 4 teacher pseudo-targets per input): ``teacher_targets`` (the reference)
= joint_teaching with alpha 0 (every step on teacher pseudo-targets); ``joint`` = alpha 0.5 (half the steps on
pseudo-targets the current student writes, graded by the teacher's word-level distribution). Paired over
(seed, problem); see claim_runner.py.

    OMP_NUM_THREADS=1 .venv/bin/python perf/studies/claim_joint_targets.py --out /tmp/joint.json
"""

from __future__ import annotations

from claim_runner import arguments, finish, run_study, study_spec, summary


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    common = {"kind": "joint_teaching", "pseudo_targets": 4, "max_new_tokens": 40}
    methods = [{**common, "label": "teacher_targets", "alpha": 0.0}, {**common, "label": "joint", "alpha": 0.5}]
    rows = summary(run_study(study_spec("claim-joint-targets", methods, "teacher_targets", args), args), "kd4gen")
    finish(rows, args, "joint student+teacher pseudo-targets beat teacher pseudo-targets alone")


if __name__ == "__main__":
    main()

"""The joint_teaching method (KD4Gen: Calderon et al., "A Systematic Study of Knowledge Distillation for
Natural Language Generation with Pseudo-Target Training", ACL 2023).

Two resumable stages: ``pseudo_targets`` (the teacher writes K targets per training input, once) and
``train`` (word-level KD on those targets and on targets the student writes as it trains, mixed by alpha).
The paper's ablation ladder is a set of option combinations:

==========================  ===================================================================
rung                        options
==========================  ===================================================================
fine-tune                   loss='ce', pseudo_targets=0, include_gold=true, alpha=0
fine-tune + PTs (SeqKD)     loss='ce', pseudo_targets=1, decoding='beam', alpha=0
logits KD                   pseudo_targets=0, include_gold=true, alpha=0
logits KD + single PT       pseudo_targets=1, decoding='beam', alpha=0
+ multiple PTs              pseudo_targets=K, decoding='beam', alpha=0
+ sampled PTs               pseudo_targets=K, decoding='sample', alpha=0 (sampling_temperature>1:
                            high-temperature sampling)
student PTs only            alpha=1
joint teaching (default)    pseudo_targets=K, decoding='sample', alpha=0.5
Noisy KD                    teacher_dropout > 0 with any of the above
==========================  ===================================================================
"""

from __future__ import annotations

from typing import Any

from stillroom import Method, MethodJob, Student, UserError

from stillroom.plugins.joint_teaching import targets as pts
from stillroom.plugins.joint_teaching.config import JointTeachingConfig

DEFAULTS = {"train_examples": None, "steps": 200, "batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.0}


class Plan:
    """The budget this entry trains with: the spec's [budget], else the entry's own option, else a default."""

    def __init__(self, train_examples: int | None, steps: int, batch_size: int, learning_rate: float,
                 warmup_ratio: float):
        self.train_examples = train_examples
        self.steps = steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.warmup_ratio = warmup_ratio


def resolve_budget(job: MethodJob, config: JointTeachingConfig, where: str) -> Plan:
    """(A conflict between the budget and an option is the core's check, made once for every method.)"""
    from stillroom.training import budget_value

    return Plan(**{name: budget_value(job, name, getattr(config, name), default)
                   for name, default in DEFAULTS.items()})


class JointTeaching(Method):
    """Word-level KD on K teacher pseudo-targets and on pseudo-targets the student generates as it trains
    (KD4Gen joint teaching), with local or API teachers and across tokenizers."""

    name = "joint_teaching"
    uses_teacher = True
    Config = JointTeachingConfig

    def teacher_access(self, job: MethodJob, where: str) -> str:
        """'logits', 'top_logprobs' or 'none' (the loss never looks at the teacher), after checking that the
        options can be done with the job's teacher."""
        from stillroom.training import white_box_teacher

        config = self.config
        teacher = job.teacher
        if teacher is None:
            raise UserError("joint_teaching needs a teacher; add a [teacher] table", where)
        has_model = teacher.white_box
        if config.decoding == "beam" and config.pseudo_targets and not has_model:
            raise UserError("decoding='beam' runs the teacher's own model.generate, but this teacher is reached "
                            "through an API endpoint (no beam search there); use decoding='sample' or 'greedy'",
                            f"{where}.decoding")
        if config.loss_kind == "ce":
            return "none"
        access = config.teacher_access
        if access == "auto":
            access = "logits" if has_model else "top_logprobs"
        if access == "logits":
            white_box_teacher(job, f"{where}.teacher_access",
                              otherwise="teacher_access = 'top_logprobs' or 'auto' (the top-k log-probs its endpoint "
                                        "returns)")
        if access == "top_logprobs":
            if config.decoding == "beam" and config.pseudo_targets:
                raise UserError("top-k log-probs come with the tokens an endpoint generates, and beam search does "
                                "not go through the endpoint; use decoding='sample' or 'greedy', or "
                                "teacher_access='logits'", f"{where}.decoding")
            if config.teacher_dropout > 0:
                raise UserError("teacher_dropout (Noisy KD) changes the teacher's forward pass, which an API "
                                "teacher does not expose; set it to 0 or use a white-box teacher",
                                f"{where}.teacher_dropout")
            if config.alpha > 0 and not teacher.endpoint.can_score and config.black_box_student_targets == "error":
                raise UserError(
                    f"alpha = {config.alpha} asks the teacher to score pseudo-targets the student writes, but this "
                    f"teacher's endpoint (kind {teacher.endpoint.name!r}) cannot score a given text (prompt "
                    "log-probs: an openai endpoint in front of vLLM or `stillroom serve` can). Set alpha = 0 "
                    "(teacher pseudo-targets only), or black_box_student_targets = 'teacher_targets' to train on "
                    "teacher pseudo-targets on the student's steps", f"{where}.alpha")
        return access

    def run(self, job: MethodJob) -> Student:
        from stillroom.plugins.joint_teaching import training

        config = self.config
        where = f"methods[{job.label}]"
        access = self.teacher_access(job, where)
        plan = resolve_budget(job, config, where)
        from stillroom.training import ids_digest, stage_settings

        records = job.train_records()
        if plan.train_examples:
            records = records[:plan.train_examples]
        for index, record in enumerate(records):
            if record.get("prompt") is None:
                raise UserError(f"training record {record.get('id', index)!r} has no 'prompt'", where)
            if config.include_gold and record.get("target") is None:
                raise UserError(f"include_gold = true but training record {record.get('id', index)!r} has no "
                                "'target'", where)

        def write_targets() -> list[dict[str, Any]]:
            if not config.pseudo_targets:
                return [{"id": r.get("id", i), "pts": []} for i, r in enumerate(records)]
            if config.decoding == "beam":
                written = pts.beam_search(job.teacher, records, config, where)
            else:
                top = config.top_logprobs if access == "top_logprobs" else None
                written = pts.through_endpoint(job.teacher, records, config, top_logprobs=top,
                                               seed=stage_settings(job, "pseudo_targets").seed,
                                               where=where)
            return [{"id": r.get("id", i), "pts": p} for i, (r, p) in enumerate(zip(records, written))]

        stored = job.jsonl_stage("pseudo_targets", write_targets)
        pools = []
        for record, row in zip(records, stored):
            pool = [p for p in row["pts"] if p["text"].strip()]
            if config.include_gold:
                pool.append({"text": str(record["target"]), "finished": True, "tokens": None, "gold": True})
            if not pool:
                pool = list(row["pts"])[:1]  # every pseudo-target empty: train on the empty answer (EOS)
            if not pool:
                raise UserError(f"no target for training record {row['id']!r}", where)
            pools.append(pool)

        def fit(student: Student, folder) -> dict[str, Any]:
            from stillroom import write_json_atomic

            loss, sparse_loss = training.build_losses(job.context, config, access, where)
            stage = stage_settings(job, "train")
            metrics = training.train(student=student, teacher=job.teacher, config=config, plan=plan,
                                     records=records, pools=pools, access=access, loss=loss,
                                     sparse_loss=sparse_loss, seed=stage.seed, where=where, folder=folder,
                                     checkpoint_dir=stage.checkpoint_dir, checkpoint_steps=stage.checkpoint_steps,
                                     report_to=stage.report_to, description=f"{job.label} train")
            write_json_atomic(folder / "losses.json", metrics.pop("losses"))
            return {**metrics, **ids_digest(records)}

        trained = job.model_stage("train", fit)
        metrics = job.stage_metrics("train")
        job.info.update({k: metrics.get(k) for k in ("kd_loss_before", "kd_loss_after", "student_steps",
                                                     "fallback_steps", "teacher_access", "matched_positions")
                         if metrics.get(k) is not None})
        return trained

"""lm-evaluation-harness as evaluators: ``lm_eval`` (any task or group) and the benchmarks that generate their
lm-eval tasks from local data, as task modules of this one package: ``bbh``, ``agieval`` and ``mmlu``."""

from stillroom import hookimpl


@hookimpl
def stillroom_register_evaluators(register):
    # imported here so that loading the plugin (``stillroom --help``) does not build the pydantic configs
    from stillroom.benchmarks.harness.agieval import AgievalEvaluator
    from stillroom.benchmarks.harness.bbh import BbhEvaluator
    from stillroom.benchmarks.harness.evaluator import LmEvalEvaluator
    from stillroom.benchmarks.harness.mmlu import MmluEvaluator

    for cls in (LmEvalEvaluator, BbhEvaluator, AgievalEvaluator, MmluEvaluator):
        register(cls)

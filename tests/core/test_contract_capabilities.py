"""Every capability one component calls on another is declared on a role class in core/roles.py.

Two checks. (1) What a method reads from its job (``job.<name>`` in plugins/, benchmarks/ and examples/) is a
member of the declared ``stillroom.Job`` protocol, and the core's ``MethodJob`` has every member of it. (2) No
plugin or benchmark finds a capability of a component by probing (``hasattr(x, "name")`` /
``getattr(x, "name", default)``): every probe in plugins/ and benchmarks/ is either one of the documented
legitimate kinds below or a known probe still to be replaced (``KNOWN_PROBES``; the test fails when one of them
disappears, so the list only shrinks).
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from pathlib import Path

from stillroom import InstructionWriter, Job, MethodJob

ROOT = Path(__file__).resolve().parents[2]
PROBE = re.compile(r"\b(hasattr|getattr)\(\s*((?:[^,()]|\([^()]*\))+?)\s*,\s*([^,)]+)")

# Legitimate probes, by kind. Attributes of third-party objects (transformers models, configs and tokenizers,
# lm-eval tasks, HTTP responses, typer groups, sacrebleu scores), not of stillroom components:
LIBRARY_ATTRIBUTES = {
    "chat_template", "decoder_start_token_id", "bos_token_id", "eos_token_id", "get_text_config",
    "get_input_embeddings", "attention_dropout", "model_max_length", "OUTPUT_TYPE", "__name__", "_ci", "response",
    "headers", "all_special_tokens", "registered_groups",
}
# ``is_encoder_decoder`` and ``config`` are transformers attributes when read off a model or its config.
LIBRARY_OBJECT = re.compile(r"^(model|base|model_config|model\.config|getattr\(model, \"config\", None\))$")
# A component's own options: a field only some configs have (``getattr(self.config, "beta", None)``).
CONFIG_OBJECT = re.compile(r"^(self\.config|cfg|config|options)$")
# Any attribute of a tokenizer or a model's (generation) config is a transformers attribute.
LIBRARY_HOLDER = re.compile(r"^([\w.]+\.)?(tokenizer|generation_config|model\.config)$")
# ``name`` is declared on every Component (a probe for it only guards against None).
DECLARED_ON_COMPONENT = {"name"}


def probes() -> list[tuple[str, str, str]]:
    """Every (file, object, attribute) probe in plugins/ and benchmarks/ that is not a legitimate kind."""
    found = []
    for folder in ("plugins", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for _, obj, attr in PROBE.findall(path.read_text()):
                obj, attr = obj.strip(), attr.strip()
                if not attr.startswith(("'", '"')):
                    continue  # a field read by a name the code holds: config models and modules (getattr(cfg, name))
                attr = attr.strip("'\"")
                if attr in LIBRARY_ATTRIBUTES or attr in DECLARED_ON_COMPONENT:
                    continue
                if LIBRARY_HOLDER.match(obj):
                    continue
                if attr in ("is_encoder_decoder", "config") and LIBRARY_OBJECT.match(obj):
                    continue
                if CONFIG_OBJECT.match(obj):
                    continue
                if obj == "self" and attr.startswith("_"):
                    continue  # a lazily built private attribute of the object itself
                found.append((str(path.relative_to(ROOT)), obj, attr))
    return found


# Probes of components that still wait for a declared capability (issue 17); owners replace them and delete the
# line here. (file, probed object, attribute): how many times.
KNOWN_PROBES = Counter({
    ("plugins/joint_teaching/method.py", "teacher", "model"): 1,
    ("plugins/joint_teaching/method.py", "teacher", "tokenizer"): 1,
    ("plugins/joint_teaching/training.py", "teacher", "model"): 2,
    ("plugins/joint_teaching/training.py", 'getattr(loss, "config", None)', "temperature"): 1,  # a loss's temperature
    ("plugins/lion/method.py", "component", "endpoint"): 1,  # the endpoint a teacher/student/referee talks through
    ("plugins/lion/method.py", "referee", "calibration"): 1,
    ("plugins/lion/prompts.py", "context", "data_root"): 2,  # Context is passed as None by some callers
    ("plugins/hf/serve.py", "endpoint", "is_encoder_decoder"): 1,
    ("plugins/step_by_step/method.py", "self.inner", "path"): 1,  # a student's saved path
    ("plugins/step_by_step/method.py", "self.inner", "is_encoder_decoder"): 1,
    ("plugins/step_by_step/method.py", "inner", "is_encoder_decoder"): 1,
})


def test_no_new_probing_of_components_and_known_probes_only_shrink():
    found = Counter(probes())
    new = {key: n for key, n in found.items() if n > KNOWN_PROBES.get(key, 0)}
    assert not new, f"declare these capabilities on a role class in core/roles.py instead of probing: {new}"
    gone = {key: n for key, n in KNOWN_PROBES.items() if found.get(key, 0) < n}
    assert not gone, f"these probes were replaced: delete them from KNOWN_PROBES: {gone}"


def test_the_probe_scanner_sees_a_probe():
    assert PROBE.findall('x = getattr(teacher, "model", None) if hasattr(self.inner, "path") else 1') == [
        ("getattr", "teacher", '"model"'), ("hasattr", "self.inner", '"path"')]


def test_what_methods_read_from_their_job_is_declared():
    declared = {name for name, _ in inspect.getmembers(Job) if not name.startswith("_")} | set(Job.__annotations__)
    used = set()
    for folder in ("plugins", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            used.update(re.findall(r"\bjob\.([a-z_]+)", path.read_text()))
    assert used and used <= declared, f"job members used but not declared on stillroom.Job: {used - declared}"
    missing = [name for name in declared if not hasattr(MethodJob, name) and name not in MethodJob.__dataclass_fields__]
    assert not missing, f"MethodJob lacks members of the Job protocol: {missing}"


def test_instruction_writers_implement_the_declared_interface(stillroom_host):
    writers = {kind for kind, registered in stillroom_host.components["generator"].items()
               if issubclass(registered.cls, InstructionWriter)}
    assert {"lion_llm", "arithmetic_variations"} <= writers
    for kind in writers:
        assert not inspect.isabstract(stillroom_host.component("generator", kind)), kind

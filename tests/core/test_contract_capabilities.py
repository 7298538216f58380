"""Every capability one component calls on another is declared on a role class in core/roles.py.

Four checks. (1) What a method reads from its job (``job.<name>`` in plugins/, benchmarks/ and examples/) is a
member of the declared ``stillroom.Job`` protocol, and the core's ``MethodJob`` has every member of it. (2) No
plugin or benchmark finds a capability of a component by probing (``hasattr(x, "name")`` /
``getattr(x, "name", default)``): every probe in plugins/ and benchmarks/ is one of the documented legitimate
kinds below. (3) Every member a role class declares is documented in the README's hook table. (4) A component
that forwards to another through ``__getattr__`` does not lose a declared capability to the role's default.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from stillroom import Component, InstructionWriter, Job, MethodJob, RewardScorer, TextScorer
from stillroom.roles import ROLES

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


def probes_in(text: str) -> list[tuple[str, str]]:
    """The (object, attribute) probes in ``text`` that are not a legitimate kind."""
    found = []
    for _, obj, attr in PROBE.findall(text):
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
        found.append((obj, attr))
    return found


def probes() -> list[tuple[str, str, str]]:
    """Every (file, object, attribute) probe in plugins/ and benchmarks/ that is not a legitimate kind."""
    return [(str(path.relative_to(ROOT)), obj, attr)
            for folder in ("plugins", "benchmarks") for path in sorted((ROOT / folder).rglob("*.py"))
            for obj, attr in probes_in(path.read_text())]


def test_no_plugin_or_benchmark_probes_a_component():
    found = probes()
    assert not found, f"declare these capabilities on a role class in core/roles.py instead of probing: {found}"


def test_the_probe_scanner_sees_a_probe():
    assert PROBE.findall('x = getattr(teacher, "model", None) if hasattr(self.inner, "path") else 1') == [
        ("getattr", "teacher", '"model"'), ("hasattr", "self.inner", '"path"')]
    # a component's capability is a probe; a transformers attribute, a config field or a private one is not
    text = """
        temperature = getattr(getattr(loss, "config", None), "temperature", 1.0)
        endpoint = getattr(component, "endpoint", None)
        encoder_decoder = getattr(model.config, "is_encoder_decoder", False)
        template = getattr(tokenizer, "chat_template", None)
        beta = getattr(self.config, "beta", None)
        cached = getattr(self, "_stats", None)
        value = getattr(cfg, name)
    """
    assert probes_in(text) == [('getattr(loss, "config", None)', "temperature"), ("component", "endpoint")]


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


def declared(cls: type) -> set[str]:
    """The public members a role class (or a capability mixin) declares itself: methods, properties, class
    attributes and annotated attributes, less what every component has (``role``, ``name``, ``Config``)."""
    own = {name for name in vars(cls) if not name.startswith("_")} | set(vars(cls).get("__annotations__", {}))
    return own - {"role", "name", "Config"}


def test_every_declared_capability_is_documented_in_the_readme_hook_table():
    readme = (ROOT / "README.md").read_text()
    guide = readme[readme.index("## Writing a plugin"):]
    hooks = {role: "stillroom_register_" + ("losses" if role == "loss" else f"{role}s") for role in ROLES}
    rows = {role: next((line for line in guide.splitlines() if line.startswith(f"| `{hook}(register)`")), "")
            for role, hook in hooks.items()}
    missing = []
    for role, cls in ROLES.items():
        assert rows[role], f"no README hook-table row for {hooks[role]}"
        missing += [f"{cls.__name__}.{name}" for name in sorted(declared(cls))
                    if not re.search(rf"`\.?{name}\b", rows[role])]
    for mixin in (TextScorer, RewardScorer, InstructionWriter):
        missing += [f"{mixin.__name__}.{name}" for name in sorted(declared(mixin))
                    if not re.search(rf"`\.?{name}\b", guide)]
    assert not missing, f"declared on a role class but not documented in README's hook table: {missing}"


def test_declared_members_are_what_a_class_itself_defines():
    class Documented(Component):
        calibration: str = "none"

        def judge(self, items):
            return []

    assert declared(Documented) == {"calibration", "judge"}


def forwarding_gaps(cls: type) -> list[str]:
    """Declared capabilities of ``cls``'s role that ``cls`` forwards through ``__getattr__`` but which its role
    class answers with a default first (Python only calls ``__getattr__`` for names it cannot find)."""
    role_class = next(base for base in cls.__mro__ if base in ROLES.values())
    below_role = cls.__mro__[:cls.__mro__.index(role_class)]
    if not any("__getattr__" in vars(k) for k in below_role):
        return []
    return [name for name in sorted(declared(role_class))
            if not callable(vars(role_class).get(name)) and not any(name in vars(k) for k in below_role)]


def test_forwarding_components_do_not_hide_declared_capabilities(stillroom_host):
    gaps = {f"{role} {kind}": forwarding_gaps(registered.cls) for role, table in stillroom_host.components.items()
            for kind, registered in table.items()}
    gaps = {component: names for component, names in gaps.items() if names}
    assert not gaps, f"forward these explicitly, as properties: {gaps}"


def test_the_forwarding_check_sees_a_hidden_capability():
    from stillroom import Student

    class Forwarding(Student):
        def __getattr__(self, name):
            return getattr(self.inner, name)

    class Explicit(Forwarding):
        model = tokenizer = path = endpoint = None
        is_encoder_decoder = False

    assert forwarding_gaps(Forwarding) == ["endpoint", "is_encoder_decoder", "model", "path", "tokenizer"]
    assert forwarding_gaps(Explicit) == []
    assert forwarding_gaps(Student) == []  # no forwarding, nothing hidden


def test_a_subject_carries_what_the_roles_declare(stillroom_host, tiny_model_dir):
    from stillroom import Context, Subject, build

    student = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir), device="cpu")
    subject = Subject.of(student, "base", "base")
    assert subject.model is student.model and subject.tokenizer is student.tokenizer
    assert subject.path is not None and subject.path == student.path and subject.endpoint is student.endpoint
    served = Subject.of(student.endpoint, "served", "model")  # an endpoint alone: generate through it
    assert served.endpoint is student.endpoint and (served.model, served.tokenizer, served.path) == (None, None, None)

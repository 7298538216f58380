"""Run specs: TOML or YAML files validated by pydantic models assembled at load time from the registered
components' ``Config`` classes, discriminated on ``kind``. Third-party plugins get validation and JSON Schema
for free. Errors come out as ``location: message`` lines with a suggestion where a name is close.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_validator

from stillroom.paths import read_utf8
from stillroom.plugin_manager import PluginHost, get_host
from stillroom.roles import Component, ComponentConfig, EvaluatorConfig, MethodConfig, UserError, suggest


class SpecError(UserError):
    """One or more problems in a spec or a component config; ``lines`` holds one ``location: message`` each."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


# Reference types a component's Config can use for things the spec wires together.
ENDPOINT_REF = "x-stillroom-endpoint"
EndpointRef = Annotated[str, Field(json_schema_extra={ENDPOINT_REF: True})]
"""A Config field holding the name of an endpoint defined in the spec's ``[endpoints]`` table."""


def ComponentRef(role: str, *more_roles: str, implements: type | None = None):
    """A Config field holding another component by kind: ``"gjsd"`` or ``{kind = "gjsd", beta = 0.5}``.
    Validated against the registry when the spec is loaded. With several roles (``ComponentRef("evaluator",
    "judge", implements=RewardScorer)``) the kind may be of any of them (``ref_role`` says which), and with
    ``implements`` its class must subclass that interface from core/roles.py."""
    roles = (role, *more_roles)
    named = " or ".join(roles)

    def check(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict) or "kind" not in value:
            raise ValueError(f"expected a {named} kind or a table with 'kind'")
        options = {k: v for k, v in value.items() if k != "kind"}
        host, kind = get_host(), value["kind"]
        if more_roles and not any(kind in host.components[r] for r in roles):
            known = sorted({k for r in roles for k in host.components[r]})
            raise ValueError(f"unknown {named} kind {kind!r}{suggest(kind, known)}; known: {', '.join(known)}")
        try:
            cls = host.component(ref_role(kind, roles, host), kind)
        except UserError as exc:
            raise ValueError(exc.message) from None
        if implements is not None and not issubclass(cls, implements):
            needed = ", ".join(f"{name}()" for name in sorted(getattr(implements, "__abstractmethods__", ())))
            raise ValueError(f"{cls.role} kind {value['kind']!r} does not implement {implements.__name__}"
                             + (f" ({needed})" if needed else ""))
        try:
            cls.Config.model_validate(options)
        except ValidationError as exc:
            raise ValueError("; ".join(line.removeprefix("spec: ") for line in _error_lines(exc, cls=cls))) from None
        return value

    schema = {"x-stillroom-role": role if not more_roles else list(roles)}
    return Annotated[dict[str, Any], BeforeValidator(check), Field(json_schema_extra=schema)]


def ref_role(kind: str, roles: tuple[str, ...] | list[str], host: PluginHost | None = None) -> str:
    """The first of ``roles`` that has a component of ``kind`` (the first role when none has: building it
    then fails with that role's unknown-kind message and suggestions)."""
    host = host or get_host()
    return next((role for role in roles if kind in host.components[role]), roles[0])


def _loc(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def _error_lines(exc: ValidationError, *, cls: type[Component] | None = None, prefix: str = "",
                 host: PluginHost | None = None) -> list[str]:
    """Turn pydantic errors into ``location: message`` lines, dropping union-tag parts from locations."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        owner = cls
        role = _FIELD_ROLES.get(loc[0]) if host is not None and loc else None
        if role:
            tag_at = 2 if loc[0] in ("methods", "evaluators", "endpoints") else 1
            if len(loc) > tag_at and loc[tag_at] in host.components[role]:
                owner = host.components[role][loc[tag_at]].cls
                del loc[tag_at]
        clean = loc
        where = f"{prefix}.{_loc(clean)}" if prefix and clean else (prefix or _loc(clean))
        kind, message = err["type"], err["msg"]
        if kind == "extra_forbidden":
            fields = list(owner.Config.model_fields) if owner else []
            message = f"unknown field '{clean[-1]}'{suggest(clean[-1], fields)}"
        elif kind == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag", "")
            role = role or "component"
            known = sorted(host.components[role]) if host and role in host.components else []
            message = f"unknown {role} kind '{tag}'{suggest(tag, known)}; known: {', '.join(known) or 'none'}"
            where = where + ".kind"
        elif kind == "union_tag_not_found":
            message = "missing 'kind'"
            where = where + ".kind"
        elif kind == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
            if message.startswith(f"unknown {role} kind") and not where.endswith(".kind"):
                where += ".kind"
        elif "input" in err and kind.endswith(("_type", "_parsing")):
            message = f"{message} (got {_shown(err['input'])})"
        lines.append(f"{where}: {message}")
    return lines


def _shown(value: Any, limit: int = 200) -> str:
    """A value quoted in a message, cut to ``limit`` characters (a 500 kB string must not become the message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def validate_config(cls: type[Component], options: dict[str, Any], location: str = "") -> ComponentConfig:
    try:
        return cls.Config.model_validate(options)
    except ValidationError as exc:
        raise SpecError(_error_lines(exc, cls=cls, prefix=location)) from None


# Which role each top-level spec field holds.
_FIELD_ROLES = {"endpoints": "endpoint", "teacher": "teacher", "student": "student", "data": "generator",
                "methods": "method", "evaluators": "evaluator"}


@functools.lru_cache(maxsize=None)
def _tagged(cls: type[Component]) -> type[BaseModel]:
    return create_model(f"{cls.role}:{cls.name}", __base__=cls.Config, __doc__=(cls.__doc__ or "").strip() or None,
                        kind=(Literal[cls.name], Field(description=f"the {cls.role} kind")))


def _union(host: PluginHost, role: str):
    models = [_tagged(reg.cls) for _, reg in sorted(host.components[role].items())]
    if not models:
        def none_loaded(value: Any):
            kind = value.get("kind") if isinstance(value, dict) else value
            raise ValueError(f"unknown {role} kind '{kind}'; no {role} plugin is loaded")

        return Annotated[dict[str, Any], BeforeValidator(none_loaded), Field(description=f"no {role} plugin is loaded")]
    if len(models) == 1:
        return Annotated[Union[models[0], models[0]], Field(discriminator="kind")]
    return Annotated[Union[tuple(models)], Field(discriminator="kind")]


class EvaluateOptions(BaseModel):
    """Which models besides the method outputs are evaluated."""

    model_config = ConfigDict(extra="forbid")
    teacher: bool = Field(True, description="evaluate the teacher (the ceiling)")
    base: bool = Field(True, description="evaluate the untrained student (the floor)")


class Budget(BaseModel):
    """The training budget every method entry shares, so a comparison is fair; recorded in the lineage."""

    model_config = ConfigDict(extra="forbid")
    train_examples: int | None = Field(None, ge=1, description="training problems each method may use "
                                                               "(teacher-answered where the method uses the teacher)")
    steps: int | None = Field(None, ge=1, description="optimizer steps each method takes")
    batch_size: int | None = Field(None, ge=1, description="examples per optimizer step")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate")
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="share of each method's optimizer steps spent "
                                       "warming the learning rate up linearly (default: each method's own, 0)")
    checkpoint_steps: int | None = Field(None, ge=1, description="save a training stage's state every N optimizer "
                                                                 "steps, so --resume after a crash continues from "
                                                                 "the last one instead of step 0 (default: never)")


class SpecBase(BaseModel):
    """Fields every run spec has; the role-typed fields are added per plugin host."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run name; runs go to <output_dir>/<name>/<id>/")
    description: str = Field("", description="free text shown in reports")
    seed: int = Field(0, description="seed for data order, sampling and initialisation")
    seeds: list[int] | None = Field(None, min_length=1, description="train every method entry once per seed "
                                    "(e.g. [0, 1, 2]) and aggregate over them on the leaderboard; replaces `seed`")
    reference: str | None = Field(None, description="the entry (a method label, 'base' or 'teacher') every other "
                                  "entry is compared with; default: the first baseline entry (sft, seqkd), else the "
                                  "first method entry")
    output_dir: str = Field("runs", description="folder holding run directories, relative to the spec file")
    evaluate: EvaluateOptions = Field(default_factory=EvaluateOptions, description="extra models to evaluate")
    budget: Budget = Field(default_factory=Budget, description="the budget every method entry shares")

    if TYPE_CHECKING:  # the role-typed fields ``spec_model`` adds for the plugins a host has loaded
        endpoints: dict[str, ComponentConfig]
        teacher: ComponentConfig | None
        student: ComponentConfig
        data: ComponentConfig
        methods: list[MethodConfig]
        evaluators: list[EvaluatorConfig]

    @model_validator(mode="after")
    def _check_refs(self):
        defined = set(getattr(self, "endpoints", {}) or {})
        problems = []
        for where, value in _walk(self, ""):
            if value not in defined:
                problems.append(f"{where}: no endpoint named '{value}'{suggest(value, defined)}; "
                                f"defined: {', '.join(sorted(defined)) or 'none'}")
        problems.extend(_name_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        names = [getattr(m, "label", None) or m.kind for m in getattr(self, "methods", [])]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"methods: entries must have distinct labels; give each of {dupes} a 'label'")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: each seed once, got {self.seeds}")
        known = [*names, "base", "teacher"]
        if self.reference is not None and names and self.reference not in known:
            raise ValueError(f"reference: no entry named '{self.reference}'{suggest(self.reference, known)}; "
                             f"entries: {', '.join(known)}")
        if self.reference == "teacher" and (getattr(self, "teacher", None) is None or not self.evaluate.teacher):
            raise ValueError("reference: 'teacher' is compared with only when the spec has a teacher and "
                             "evaluate.teacher is true")
        if self.reference == "base" and not self.evaluate.base:
            raise ValueError("reference: 'base' is compared with only when evaluate.base is true")
        return self


# The [budget] fields a method entry may not contradict: an entry option with one of these names means the
# same thing (every method's Config spells them so), and the budget wins only by agreeing with it.
BUDGET_RULE_FIELDS = ("train_examples", "steps", "batch_size", "learning_rate", "warmup_ratio")


def budget_conflicts(data: dict[str, Any], host: PluginHost | None = None) -> list[str]:
    """One ``location: message`` line per method option that contradicts ``[budget]`` in the spec ``data`` (as
    written), naming both places. The one budget rule for every method: a method option named like a budget
    field (``BUDGET_RULE_FIELDS``) may repeat the budget's value, or stand alone, but not differ from it."""
    host = host or get_host()
    budget, methods = data.get("budget"), data.get("methods")
    if not isinstance(budget, dict) or not isinstance(methods, list):
        return []
    problems = []
    for index, entry in enumerate(methods):
        if not isinstance(entry, dict) or entry.get("kind") not in host.components["method"]:
            continue
        fields = host.components["method"][entry["kind"]].cls.Config.model_fields
        label = entry.get("label") or entry["kind"]
        for name in BUDGET_RULE_FIELDS:
            shared, own = budget.get(name), entry.get(name)
            if name in fields and shared is not None and own is not None and own != shared:
                problems.append(f"methods[{label}].{name}: {name} = {own!r} conflicts with budget.{name} = "
                                f"{shared!r}; the budget applies to every method, so remove one of them")
    return problems


# Rows the run adds besides its method entries: a method labelled like one would replace that row's results.
RESERVED_ROWS = ("teacher", "base")
# The widest seed every library a run seeds accepts (NumPy takes it modulo 2**32, torch up to 2**64 - 1).
SEED_RANGE = (-(2**63), 2**64 - 1)


def _name_problems(spec: SpecBase) -> list[str]:
    """Labels and the run name become folder names and leaderboard rows: each must be a slug, method labels must
    not be a reserved row's name, evaluator labels must be distinct, and seeds must fit 64 bits."""
    from stillroom.paths import slug_problem

    problems = []
    name = getattr(spec, "name", "") or ""
    if len(name) > 64:
        problems.append(f"name: {slug_problem(name)}")
    for field_name, reserved in (("methods", RESERVED_ROWS), ("evaluators", ())):
        seen: dict[str, int] = {}
        for index, entry in enumerate(getattr(spec, field_name, None) or []):
            label = getattr(entry, "label", None)
            where = f"{field_name}[{index}].label"
            if label is not None:
                problem = slug_problem(label)
                if problem:
                    problems.append(f"{where}: {problem}")
                    continue
            shown = label or entry.kind
            if shown.casefold() in reserved:
                problems.append(f"{where}: '{shown}' is the name of the {shown.casefold()} row; give this entry "
                                "another 'label'")
            if field_name == "evaluators" and shown.casefold() in seen:
                problems.append(f"{where}: evaluators[{seen[shown.casefold()]}] is also named '{shown}'; give "
                                "each a distinct 'label'")
            seen.setdefault(shown.casefold(), index)
    for where, value in _seeds(spec, ""):
        if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
            text = str(value)
            problems.append(f"{where}: seed {text[:24]}{'...' if len(text) > 24 else ''} does not fit in 64 bits")
    return problems


def _seeds(value: Any, where: str):
    """``(location, seed)`` of every integer field named ``seed`` in the spec, nested tables included."""
    items = ([(f, getattr(value, f, None)) for f in type(value).model_fields] if isinstance(value, BaseModel)
             else value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else [])
    for key, item in items:
        here = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))
        if key == "seed" and isinstance(item, int) and not isinstance(item, bool):
            yield here, item
        elif key == "seeds" and isinstance(item, list):
            yield from ((f"{here}[{i}]", s) for i, s in enumerate(item) if isinstance(s, int) and not isinstance(s, bool))
        else:
            yield from _seeds(item, here)


def run_seeds(spec: SpecBase) -> list[int]:
    """The seeds every method entry trains with: ``seeds``, else ``[seed]``."""
    return list(spec.seeds) if spec.seeds else [spec.seed]  # type: ignore[attr-defined]


def reference_label(spec: SpecBase, host: PluginHost | None = None) -> str:
    """The entry the leaderboard compares every other entry of this spec with (see ``SpecBase.reference``)."""
    if spec.reference:  # type: ignore[attr-defined]
        return spec.reference  # type: ignore[attr-defined]
    host = host or get_host()
    entries = list(spec.methods)  # type: ignore[attr-defined]
    for entry in entries:
        if host.component("method", entry.kind).baseline:
            return getattr(entry, "label", None) or entry.kind
    return getattr(entries[0], "label", None) or entries[0].kind


def _walk(model: BaseModel, where: str):
    for field_name, info in type(model).model_fields.items():
        value = getattr(model, field_name, None)
        here = f"{where}.{field_name}" if where else field_name
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get(ENDPOINT_REF) and isinstance(value, str):
            yield here, value
        elif _ref_role(info) and isinstance(value, dict):
            # a component held by kind (Lion's referee and writer): its own endpoint references count too
            nested = _nested_config(_ref_role(info), value)
            if nested is not None:
                yield from _walk(nested, here)
        elif isinstance(value, BaseModel):
            yield from _walk(value, here)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _walk(item, f"{here}[{i}]")
        elif isinstance(value, dict) and field_name != "endpoints":
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _walk(item, f"{here}.{key}")


def _ref_role(info) -> str | list[str] | None:
    """The role(s) of a ComponentRef field, also when it is optional (``ComponentRef("judge") | None``)."""
    import typing

    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra.get("x-stillroom-role"):
        return extra["x-stillroom-role"]
    for arg in typing.get_args(info.annotation):
        for meta in getattr(arg, "__metadata__", ()):
            found = getattr(meta, "json_schema_extra", None)
            if isinstance(found, dict) and found.get("x-stillroom-role"):
                return found["x-stillroom-role"]
    return None


def _nested_config(role: str | list[str], value: dict[str, Any]) -> BaseModel | None:
    """The validated Config of a component given by kind inside another one (None if it does not validate:
    ComponentRef has reported that already)."""
    kind = value.get("kind")
    if isinstance(role, list):  # a reference that takes several roles (ComponentRef("evaluator", "judge"))
        role = ref_role(kind, role)
    try:
        cls = get_host().component(role, kind)
        return cls.Config.model_validate({k: v for k, v in value.items() if k != "kind"})
    except (UserError, ValidationError, KeyError, TypeError):
        return None


def spec_model(host: PluginHost | None = None) -> type[BaseModel]:
    """The pydantic model of a whole run spec for the plugins ``host`` has loaded."""
    host = host or get_host()
    return create_model(
        "RunSpec", __base__=SpecBase,
        endpoints=(dict[str, _union(host, "endpoint")], Field(default_factory=dict, description="named model endpoints")),
        teacher=(_union(host, "teacher") | None, Field(None, description="the teacher model")),
        student=(_union(host, "student"), Field(description="the student model every method starts from")),
        data=(_union(host, "generator"), Field(description="the data every method gets")),
        methods=(list[_union(host, "method")], Field(min_length=1, description="methods compared side by side")),
        evaluators=(list[_union(host, "evaluator")], Field(default_factory=list, description="evaluators run on every model")),
    )


def read_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError("no such spec file", str(path))
    if path.is_dir():
        raise UserError("is a folder, not a spec file", str(path))
    text = read_utf8(path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError("unknown spec format: use .toml, .yaml, .yml or .json", str(path))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"invalid TOML: {exc}", str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON: {exc.msg}", f"{path}:{exc.lineno}:{exc.colno}") from None
    if not isinstance(data, dict):
        raise UserError("a spec must be a table/mapping at the top level", str(path))
    return data


def validate_spec(data: dict[str, Any], host: PluginHost | None = None) -> BaseModel:
    host = host or get_host()
    # the budget rule reads the spec as written, so a conflict is reported even next to other problems of
    # the same entry (which keep the entry from validating)
    conflicts = budget_conflicts(data, host)
    try:
        spec = spec_model(host).model_validate(data)
    except ValidationError as exc:
        lines = list(conflicts)
        for line in _error_lines(exc, host=host):
            # a model validator's message may hold several already-formatted lines
            lines.extend(line[len("spec: "):].split("\n") if line.startswith("spec: ") else [line])
        raise SpecError(lines) from None
    if conflicts:
        raise SpecError(conflicts)
    return spec


def load_spec(path: str | Path, host: PluginHost | None = None) -> BaseModel:
    return validate_spec(read_spec_file(path), host)


def spec_hash(spec: SpecBase) -> str:
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

"""Prompt texts of the lion method and the lion_llm instruction generator.

The plugin ships its own texts (``prompts.json`` next to this module). A user who wants the original Lion
texts points ``prompts`` at a file in the same layout — the data mirror's ``lion/prompts.json`` is one — or at a
folder holding one; a relative path that does not exist is looked up in the local data mirror
(``context.data_root``). Single texts can also be replaced one by one (a string, or ``@path`` to read a file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom import Context, UserError

BUILTIN = Path(__file__).with_name("prompts.json")
# The original Lion assembly: prompt file text + "\n" + seed + "\n" + "\n#Created Instruction#:" (see
# data/lion/SOURCE.md); files without a created_marker (the original) get the original marker.
LION_MARKER = "#Created Instruction#:"


def resolve_path(value: str, context: Context, location: str) -> Path:
    """``value`` as given when it exists (or is absolute), else inside the local data mirror (when the context
    has one)."""
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and context.data_root:
        mirrored = Path(context.data_root) / value
        if mirrored.exists():
            path = mirrored
    if not path.exists():
        mirror = f" (nor in the data mirror {context.data_root})" if context.data_root else ""
        raise UserError(f"no such file or folder: {value}{mirror}", location)
    return path


def read_text_option(value: str | None, context: Context, location: str) -> str | None:
    """A text option: the text itself, or ``@path`` to read a file (relative paths as in ``resolve_path``)."""
    if value is None or not value.startswith("@"):
        return value
    return resolve_path(value[1:], context, location).read_text(encoding="utf-8").replace("\r\n", "\n")


def load_prompt_file(value: str | None, context: Context, location: str) -> tuple[dict[str, Any], Path]:
    """The parsed prompts JSON (``value`` a file or a folder holding ``prompts.json``; None: the built-in one)."""
    path = BUILTIN if value is None else resolve_path(value, context, location)
    if path.is_dir():
        path = path / "prompts.json"
        if not path.is_file():
            raise UserError("the folder has no prompts.json", f"{location}: {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON: {exc.msg}", f"{path}:{exc.lineno}") from None
    if not isinstance(data, dict):
        raise UserError("a prompts file must hold a JSON object with 'teacher' and/or 'generator' sections", str(path))
    return data, path


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise UserError(f"'{name}' must be an object of prompt strings", str(path))
    return section


def _text(section: dict[str, Any], key: str, path: Path, name: str) -> str | None:
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise UserError(f"'{name}.{key}' must be a string", str(path))
    return value.replace("\r\n", "\n") if isinstance(value, str) else None


@dataclass(frozen=True)
class TeacherPrompts:
    """How an instruction is put to the teacher: an optional system message and a user template."""

    system: str
    template: str
    source: str

    def messages(self, instruction: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": self.template.replace("{instruction}", instruction)}]


@dataclass(frozen=True)
class GeneratorPrompts:
    """How a new instruction is asked for: system message, hard and easy prompt texts, and the marker after
    which the model writes (assembled as in Lion: prompt + "\\n" + seed + "\\n\\n" + marker)."""

    system: str
    hard: str
    easy: str
    marker: str
    source: str

    def user_message(self, mode: str, seed_instruction: str) -> str:
        prompt = self.hard if mode == "hard" else self.easy
        return f"{prompt}\n{seed_instruction}\n\n{self.marker}"


def teacher_prompts(file: str | None, system: str | None, template: str | None, context: Context,
                    location: str) -> TeacherPrompts:
    data, path = load_prompt_file(file, context, f"{location}.prompts")
    section = _section(data, "teacher", path)
    base_system = _text(section, "system", path, "teacher") or ""
    base_template = _text(section, "template", path, "teacher") or "{instruction}"
    chosen_system = read_text_option(system, context, f"{location}.teacher_system_prompt")
    chosen_template = read_text_option(template, context, f"{location}.teacher_template")
    final_template = chosen_template if chosen_template is not None else base_template
    if "{instruction}" not in final_template:
        raise UserError("the teacher template must contain the placeholder {instruction}",
                        f"{location}.teacher_template" if chosen_template is not None else str(path))
    return TeacherPrompts(chosen_system if chosen_system is not None else base_system, final_template,
                          "options" if chosen_template is not None else str(path))


def generator_prompts(file: str | None, system: str | None, hard: str | None, easy: str | None,
                      marker: str | None, context: Context, location: str) -> GeneratorPrompts:
    data, path = load_prompt_file(file, context, f"{location}.prompts")
    section = _section(data, "generator", path)
    texts = {
        "system": read_text_option(system, context, f"{location}.system_prompt"),
        "hard": read_text_option(hard, context, f"{location}.hard_prompt"),
        "easy": read_text_option(easy, context, f"{location}.easy_prompt"),
    }
    texts["system"] = texts["system"] if texts["system"] is not None else (_text(section, "system", path, "generator") or "")
    for mode in ("hard", "easy"):
        if texts[mode] is None:
            texts[mode] = _text(section, f"{mode}_prompt", path, "generator")
        if not texts[mode]:
            raise UserError(f"no {mode} generation prompt: the prompts file has no 'generator.{mode}_prompt' and "
                            f"{mode}_prompt is not set", str(path))
    chosen_marker = marker if marker is not None else _text(section, "created_marker", path, "generator")
    return GeneratorPrompts(texts["system"], texts["hard"], texts["easy"], chosen_marker or LION_MARKER, str(path))

"""`stillroom generate`: answer a JSONL file of prompts with any endpoint, through the call cache.

The endpoint is built by kind through the registry (``openai``, ``hf``, or a third-party kind), so this module
imports no other plugin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError

from stillroom import Context, GenerationRequest, UserError, build, write_jsonl_atomic

HELP = "\n\n".join([
    "Answer every line of a JSONL prompts file with an endpoint and write the answers as JSONL.",
    'Input lines are {"id": ..., "prompt": "..."} (a raw text completion; --chat sends it as one user message) or '
    '{"id": ..., "messages": [{"role": ..., "content": ...}, ...]}. Each output line is the input line plus '
    '"completions" (the --n answer texts) and "usage" (prompt and completion tokens).',
    "Every call goes through the call cache: running the same command again sends no request. Each answer is "
    "stored the moment it arrives, so if a run is interrupted (Ctrl-C, a crash, kill -9) running the same command "
    "again sends only the requests that were not answered. The output file is written atomically once every "
    "prompt is answered.",
])


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_prompts(path: Path, *, chat: bool) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(line number, record, request fields) per line; a malformed line is a UserError at ``file:line``."""
    if not path.is_file():
        raise UserError("no such prompts file", str(path))
    rows = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise UserError(f"malformed JSON line: {exc.msg} (column {exc.colno})", where) from None
            if not isinstance(record, dict):
                raise UserError("each line must be a JSON object with 'id' and 'prompt' or 'messages'", where)
            if "id" not in record:
                raise UserError("missing 'id'", where)
            key = json.dumps(record["id"])
            if key in seen:
                raise UserError(f"duplicate id {record['id']!r} (first on line {seen[key]})", where)
            seen[key] = number
            has_prompt, has_messages = "prompt" in record, "messages" in record
            if has_prompt == has_messages:
                raise UserError("give exactly one of 'prompt' (a string) or 'messages' (a list of "
                                "{role, content})", where)
            if has_prompt:
                if not isinstance(record["prompt"], str):
                    raise UserError(f"'prompt' must be a string, got {type(record['prompt']).__name__}", where)
                fields = ({"messages": [{"role": "user", "content": record["prompt"]}]} if chat
                          else {"prompt": record["prompt"]})
            else:
                messages = record["messages"]
                if not (isinstance(messages, list) and messages and all(
                        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                        for m in messages)):
                    raise UserError("'messages' must be a non-empty list of {\"role\": str, \"content\": str}", where)
                fields = {"messages": messages}
            rows.append((number, record, fields))
    if not rows:
        raise UserError("no prompts in the file", str(path))
    return rows


def generate(
    prompts: Path = typer.Option(..., "--prompts", help="input JSONL: {id, prompt} or {id, messages} per line"),
    out: Path = typer.Option(..., "--out", help="output JSONL (written atomically once all prompts are answered)"),
    endpoint: str = typer.Option("openai", "--endpoint", help="endpoint kind: openai, hf, or any installed kind"),
    model: Optional[str] = typer.Option(None, "--model", help="model name (openai) or path / hub id (hf)"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="API root with /v1 (openai)"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="variable holding the API key (openai; "
                                                                          "default OPENAI_API_KEY)"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="requests in flight (openai)"),
    n: int = typer.Option(1, "--n", min=1, help="answers per prompt"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="sampling temperature"),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="nucleus sampling mass"),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="most tokens per answer"),
    seed: Optional[int] = typer.Option(None, "--seed", help="sampling seed"),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="stop string (repeatable)"),
    chat: bool = typer.Option(False, "--chat", help="send 'prompt' lines as a single user message instead of a "
                                                   "raw text completion"),
    options: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                help="any other endpoint option, e.g. --set batch_size=8 "
                                                     "(values are parsed as JSON when they can be)"),
):
    config: dict[str, Any] = {}
    for item in options or []:
        if "=" not in item:
            raise UserError(f"expected KEY=VALUE, got {item!r}", "--set")
        key, value = item.split("=", 1)
        config[key.strip()] = _parse_value(value)
    named = {"model": model, "base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency}
    config.update({k: v for k, v in named.items() if v is not None})

    rows = read_prompts(prompts, chat=chat)
    requests = []
    for number, _, fields in rows:
        try:
            requests.append(GenerationRequest(**fields, n=n, temperature=temperature, top_p=top_p,
                                              max_tokens=max_tokens, seed=seed, stop=list(stop or [])))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise UserError(f"{where}: {problem['msg']}", f"{prompts}:{number}") from None
    component = build("endpoint", endpoint, context=Context(), **config)
    try:
        # one call: the endpoint keeps its requests in flight across the whole file, stores every answer as it
        # arrives and advances its progress bar per answer
        answers = component.generate(requests, description=f"generate ({endpoint})")
    except KeyboardInterrupt:
        # the CLI's generic message points at `run --resume`; here the rerun itself is the resume
        stats = component.stats
        typer.echo(f"interrupted; the {stats['requests']} answers received are in the call cache: run the same "
                   "command again to send only the unanswered requests", err=True)
        sys.exit(130)

    def lines():
        for (_, record, _), completions in zip(rows, answers):
            yield {**record, "completions": [c.text for c in completions],
                   "usage": {"prompt_tokens": sum(c.prompt_tokens for c in completions),
                             "completion_tokens": sum(c.completion_tokens for c in completions)}}

    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out, lines())
    stats = component.stats
    cost = f", ${stats['cost']:.4f}" if stats.get("cost") else ""
    typer.echo(f"wrote {len(rows)} answers to {out} ({stats['requests']} requests, {stats['cache_hits']} from the "
               f"cache, {stats['retries']} retries{cost})", err=True)


generate.__doc__ = HELP

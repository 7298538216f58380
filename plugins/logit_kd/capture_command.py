"""`stillroom capture`: score a JSONL file of training records with a teacher once and keep its top-k
log-probs in the teacher-signal store, where logit_kd (and any method using ``stillroom.signals``) finds them.

The teacher and the student are built by kind through the registry (``hf``, ``api``), so this module imports
no other plugin.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Optional

import typer

from stillroom import Context, UserError, build, read_jsonl

HELP = "\n\n".join([
    "Capture a teacher's top-k log-probs over the targets of a JSONL file into the teacher-signal store.",
    'Lines are training records: {"id": ..., "prompt": "...", "target": "..."} (or "messages" instead of '
    '"prompt"). Each record is encoded as the student trains on it (the chat-templated prompt, then the target '
    "and EOS); the teacher scores every target token. --model is a local model (path or hub id) scored in "
    "process, or the URL of an OpenAI-compatible server that answers vLLM's prompt_logprobs (vLLM, `stillroom "
    "serve`); the sequences are sent as token ids, so the server must use the student's tokenizer.",
    "The store is content-addressed under the cache folder: the key covers the teacher, the tokenizer, the "
    "sequences, k and the codec. Running the command again, or a logit_kd run over the same targets, reuses the "
    "capture: teacher_forward_tokens is then 0.",
])


def _served_model(url: str) -> str:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=30) as response:
            models = json.loads(response.read()).get("data") or []
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot list the server's models ({exc}); name one with --served-model", "--model") from None
    if not models:
        raise UserError("the server lists no models; name one with --served-model", "--model")
    return str(models[0]["id"])


def capture(
    model: str = typer.Option(..., "--model", help="teacher: a local model (path or hub id) or a server URL "
                                                   "ending in /v1"),
    data: Path = typer.Option(..., "--data", help="JSONL training records {id, prompt or messages, target}"),
    top_k: int = typer.Option(20, "--top-k", min=1, max=1000, help="alternatives stored per target token"),
    student: Optional[str] = typer.Option(None, "--student", help="the student (path or hub id) whose tokenizer "
                                                                  "and chat template encode the records; "
                                                                  "default: --model (required for a URL)"),
    served_model: Optional[str] = typer.Option(None, "--served-model", help="model name on the server (URL "
                                                                            "teachers; default: its first)"),
    max_length: int = typer.Option(512, "--max-length", min=8, help="longest sequence in tokens, as logit_kd's "
                                                                    "max_length"),
    dtype: str = typer.Option("auto", "--dtype", help="local teacher precision: auto, float32, bfloat16, float16"),
    device: str = typer.Option("auto", "--device", help="local teacher device"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="sequences per forward pass (local teacher)"),
    output_format: str = typer.Option("text", "--format", help="text or json"),
):
    from stillroom.signals import teacher_signals

    if output_format not in ("text", "json"):
        raise UserError(f"unknown format {output_format!r}; use text or json", "--format")
    if not data.is_file():
        raise UserError("no such data file", str(data))
    remote = model.startswith(("http://", "https://"))
    if remote and not student:
        raise UserError("a served teacher needs --student (the tokenizer the records are encoded with)", "--student")
    context = Context(progress=False)
    if remote:
        teacher = build("teacher", "api", context=context, base_url=model,
                        model=served_model or _served_model(model))
    else:
        teacher = build("teacher", "hf", context=context, model=model, dtype=dtype, device=device,
                        batch_size=batch_size)
    encoder = build("student", "hf", context=context, model=student or model)
    records = read_jsonl(data, numbered=True, objects=True, encoding="utf-8")
    if not records:
        raise UserError("no records in the file", str(data))
    sequences = []
    for number, record in records:
        ids, labels, _ = encoder.encode_example(record, max_length=max_length, location=f"{data}:{number}")
        sequences.append((ids, [label != -100 for label in labels]))
    start = time.perf_counter()
    found, _ = teacher_signals(teacher, encoder.tokenizer, sequences, top_k,
                               describe={"command": "capture", "data": str(data)})
    seconds = time.perf_counter() - start
    summary = {**found.summary(), "seconds": round(seconds, 3)}
    if output_format == "json":
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"key                     {found.key}\n"
               f"store                   {found.folder}\n"
               f"sequences               {found.sequences}\n"
               f"tokens                  {found.tokens}\n"
               f"top_k                   {found.top_k}\n"
               f"bytes per token         {found.bytes_per_token:.1f}\n"
               f"teacher_forward_tokens  {found.teacher_forward_tokens}"
               + ("  (the capture existed: nothing scored)" if found.teacher_forward_tokens == 0 else ""))


capture.__doc__ = HELP

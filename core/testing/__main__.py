"""``python -m stillroom.testing tiny-model FOLDER ...``: write a tiny random Llama and BPE tokenizer to a folder.

The folder is an ordinary transformers model folder, so the ``hf`` student loads it (``model = "<folder>"``,
``init = "random"``). The tokenizer learns its vocabulary from a text file (``--corpus``) or from the records of
any registered data generator (``--data KIND -o key=value``), so an example can build a student that knows its
dataset's words without downloading anything. The step-by-step example's student:

    python -m stillroom.testing tiny-model ./.stillroom/models/tiny-svamp --plain --vocab-size 1000 \\
        --data step_by_step_data -o dataset=svamp --fields prompt,answer,rationale,teacher_label \\
        --text "predict: " --text "explain: "

A folder already built with the same settings is kept as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stillroom.roles import UserError

MARKER = "tiny_model.json"


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word is a string


def corpus_lines(args: argparse.Namespace) -> list[str]:
    """The tokenizer's training lines: ``--text`` lines first, then the corpus file or the generator's records."""
    lines = list(args.text)
    if args.corpus:
        lines += Path(args.corpus).read_text(encoding="utf-8").splitlines()
    if args.data:
        from stillroom.plugin_manager import build

        dataset = build("generator", args.data, **dict(args.option)).build_dataset()
        split = args.split or next(iter(dataset), None)
        if split not in dataset:
            raise UserError(f"no split {split!r}; the data has {', '.join(dataset) or 'none'}", "--split")
        fields = args.fields.split(",") if args.fields else None
        for record in dataset[split]:
            for key in fields or [k for k, v in record.items() if isinstance(v, str)]:
                if not isinstance(record.get(key), str):
                    raise UserError(f"record field {key!r} is missing or not text", "--fields")
                lines.append(record[key])
    return [line for line in lines if line.strip()]


def build(args: argparse.Namespace) -> Path:
    from stillroom.testing import save_tiny_model

    folder = Path(args.folder).expanduser()
    settings = {key: value for key, value in vars(args).items() if key not in ("folder", "overwrite")}
    marker = folder / MARKER
    if not args.overwrite and marker.is_file() and json.loads(marker.read_text()) == settings:
        return folder
    if not (args.corpus or args.data):
        raise UserError("give the tokenizer's text: --corpus FILE or --data GENERATOR_KIND", "tiny-model")
    save_tiny_model(folder, corpus=corpus_lines(args), vocab_size=args.vocab_size, chat=not args.plain,
                    layers=args.layers, hidden=args.hidden, heads=args.heads, seed=args.seed)
    marker.write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stillroom.testing", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny-model", help="write a tiny random Llama + BPE tokenizer to a folder")
    tiny.add_argument("folder", help="where to write it")
    tiny.add_argument("--corpus", help="a text file whose lines train the tokenizer")
    tiny.add_argument("--data", help="a generator kind whose records train the tokenizer (e.g. step_by_step_data)")
    tiny.add_argument("-o", "--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                      help="a generator option (values read as JSON when they parse, else as text)")
    tiny.add_argument("--split", help="the split whose records are read (default: the first)")
    tiny.add_argument("--fields", help="comma-separated record fields to read (default: every text field)")
    tiny.add_argument("--text", action="append", default=[], help="an extra line of training text (repeatable)")
    tiny.add_argument("--plain", action="store_true", help="no chat markers or template; <|endoftext|> ends text")
    tiny.add_argument("--vocab-size", type=int, default=1000)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--hidden", type=int, default=64)
    tiny.add_argument("--heads", type=int, default=4)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true", help="rebuild even if the folder has the same settings")
    args = parser.parse_args(argv)
    try:
        print(build(args))
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()

"""Generators that read records from local files (JSONL, JSON arrays, CSV) or from the Hugging Face hub.

Field names are mapped onto stillroom's record shape (``id``, ``prompt``, ``target``, ``answer``); the Alpaca
layout (instruction, input, output) is understood out of the box. A malformed line names its file and line.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from pydantic import Field

from stillroom import ComponentConfig, Generator, UserError, paths, read_jsonl


class FieldMap(ComponentConfig):
    """Which source fields become the record's prompt, target and answer."""

    prompt: str = Field("prompt", description="field holding the prompt (Alpaca: 'instruction', joined with 'input')")
    target: str | None = Field("target", description="field holding the reference response, if any")
    answer: str | None = Field(None, description="field holding a short gold answer, if any")
    id: str | None = Field(None, description="field holding a record id (default: the file name and line number)")


def _alpaca(row: dict[str, Any], location: str) -> dict[str, Any]:
    prompt = _text(row, "instruction", location) + (f"\n\n{_text(row, 'input', location)}" if row.get("input") else "")
    return {"prompt": prompt, "target": _text(row, "output", location) if "output" in row else ""}


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(location, row)`` pairs from a JSONL, JSON-array or CSV file; errors name ``file:line``."""
    if not path.exists():
        raise UserError("no such data file", str(path))
    if path.is_dir():
        raise UserError("is a folder, not a data file", str(path))
    text = paths.read_utf8(path)  # a byte-order mark (Excel's CSV export) is dropped, so headers stay clean
    if path.suffix == ".csv":
        reader = csv.reader(text.splitlines())
        header = next(reader, None) or []
        rows = []
        for number, values in enumerate(reader, 2):
            if len(values) != len(header):
                raise UserError(f"expected {len(header)} columns, found {len(values)}", f"{path}:{number}")
            rows.append((f"{path.name}:{number}", dict(zip(header, values))))
        return rows
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed JSON: {exc.msg}", f"{path}:{exc.lineno}") from None
        if not isinstance(data, list):
            raise UserError("expected a JSON array of records", str(path))
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise UserError(f"each element must be a JSON object (a record), found {type(row).__name__} "
                                f"{paths.shorten(json.dumps(row), 60)}", f"{path}#{i}")
        return [(f"{path.name}#{i}", row) for i, row in enumerate(data)]
    return [(f"{path.name}:{number}", row)
            for number, row in read_jsonl(path, numbered=True, objects=True, encoding="utf-8-sig")]


def _text(row: dict[str, Any], field: str, location: str) -> str:
    """A record field as text: a null is an error (``str(None)`` would train on the text "None")."""
    value = row[field]
    if value is None:
        raise UserError(f"field {field!r} is null; it must be text", location)
    return str(value)


def to_record(location: str, row: dict[str, Any], fields: FieldMap) -> dict[str, Any]:
    if fields.prompt not in row and "instruction" in row:
        record = _alpaca(row, location)
    else:
        if fields.prompt not in row:
            raise UserError(f"missing field {fields.prompt!r} (fields: {paths.shorten(', '.join(row), 200)})", location)
        record = {"prompt": _text(row, fields.prompt, location)}
        if fields.target and fields.target in row:
            record["target"] = _text(row, fields.target, location)
    if fields.answer and fields.answer in row:
        record["answer"] = _text(row, fields.answer, location)
    record["id"] = str(row[fields.id]) if fields.id and fields.id in row else location
    return record


def split_records(records: list[dict], test_fraction: float, test_size: int | None, seed: int) -> dict[str, list]:
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_test = test_size if test_size is not None else int(round(len(records) * test_fraction))
    test_ids = set(order[:n_test])
    return {"train": [r for i, r in enumerate(records) if i not in test_ids],
            "test": [r for i, r in enumerate(records) if i in test_ids]}


class RecordFile(Generator):
    """Records from local JSONL, JSON-array or CSV files, split into train and test."""

    name = "file"

    class Config(ComponentConfig):
        path: str = Field(description="the training data (or all data, split by test_fraction); .jsonl, .json or .csv")
        test_path: str | None = Field(None, description="a separate test file; when unset, test records are drawn from path")
        test_fraction: float = Field(0.1, ge=0, lt=1, description="share of records held out when test_path is unset")
        test_size: int | None = Field(None, ge=0, description="number of records held out (overrides test_fraction)")
        limit: int | None = Field(None, ge=1, description="use at most this many records from path (after shuffling)")
        fields: FieldMap = Field(default_factory=FieldMap, description="field names in the source records")
        seed: int = Field(0, description="seed of the shuffle and split")

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_absolute() and not path.exists() and self.context.data_root:
            return self.context.data_root / value
        return path

    def source_files(self) -> list[Path]:
        return [p for p in (self._resolve(self.config.path), self.config.test_path and self._resolve(self.config.test_path)) if p]

    def build_dataset(self):
        config = self.config
        records = [to_record(loc, row, config.fields) for loc, row in read_rows(self._resolve(config.path))]
        if config.limit is not None:
            random.Random(config.seed).shuffle(records)
            records = records[: config.limit]
        if config.test_path:
            test = [to_record(loc, row, config.fields) for loc, row in read_rows(self._resolve(config.test_path))]
            return {"train": records, "test": test}
        return split_records(records, config.test_fraction, config.test_size, config.seed)


class HubDataset(Generator):
    """Records from a Hugging Face dataset (loaded with ``datasets``; needs the hub or a local cache)."""

    name = "hf_dataset"

    class Config(ComponentConfig):
        dataset: str = Field(description="dataset id on the hub, or a local folder datasets can load")
        subset: str | None = Field(None, description="dataset configuration name")
        train_split: str = Field("train", description="split used for training")
        test_split: str | None = Field(None, description="split used for testing; when unset, drawn from train_split")
        test_fraction: float = Field(0.1, ge=0, lt=1, description="share held out when test_split is unset")
        limit: int | None = Field(None, ge=1, description="use at most this many training records")
        fields: FieldMap = Field(default_factory=FieldMap, description="field names in the source records")
        seed: int = Field(0, description="seed of the shuffle and split")

    def _load(self, split: str) -> list[dict[str, Any]]:
        import datasets

        try:
            rows = datasets.load_dataset(self.config.dataset, self.config.subset, split=split)
        except Exception as exc:  # the hub or the cache said no: report it as the user's fixable problem
            raise UserError(f"could not load {self.config.dataset!r} split {split!r}: {exc}", "data.dataset") from None
        return [to_record(f"{self.config.dataset}/{split}#{i}", dict(row), self.config.fields) for i, row in enumerate(rows)]

    def build_dataset(self):
        train = self._load(self.config.train_split)
        if self.config.limit is not None:
            random.Random(self.config.seed).shuffle(train)
            train = train[: self.config.limit]
        if self.config.test_split:
            return {"train": train, "test": self._load(self.config.test_split)}
        return split_records(train, self.config.test_fraction, None, self.config.seed)

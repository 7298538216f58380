"""Teacher signals captured once and reused: a content-addressed store of a teacher's top-k log-probs over
token sequences, and the codec that keeps it small.

A capture is keyed on everything that decides its contents (the teacher's identity, the tokenizer, the token
sequences and which positions are targets, k, and the codec version), so methods, seeds and runs that need
the same signal share one teacher pass. A capture is a folder under ``cache_dir()/signals/<key>/`` of shards
plus ``manifest.json``:

- every shard and the manifest are written to a temporary file and renamed into place, so a reader never sees
  half a file; the manifest lists finished shards with their SHA-256 and length, and ``complete`` once all are;
- a writer holds an exclusive file lock on the folder for the whole capture, so two processes asked for the
  same key compute it once: the second waits, then finds every shard present and verified;
- every shard is verified against its checksum before use; a corrupt or truncated shard is recomputed by the
  next capture and is never decoded into training data.

The codec (version ``CODEC``) stores per target position the k alternatives' vocabulary indices sorted
ascending as gaps in a LEB128 varint stream, their log-probs as 8-bit codes on a log scale relative to the
position's top log-prob (the step is the position's own top-to-k-th range / 255, kept as float16), and the log of
the mass outside the top k (float16). Decoding shifts the k log-probs so their mass is exactly one minus the
stored tail mass, so the quantisation error never changes how much mass the top k hold. Each of the three
streams is deflated on its own. Indices decode exactly; a log-prob decodes within half a step of the true
value relative to its position's top one.

numpy is imported lazily; this module knows nothing about models: scoring is a callable handed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from stillroom import paths
from stillroom.roles import UserError

CODEC = "topk-gap-varint-u8log-tail16-deflate/2"
MAGIC = b"SRTS1\n"
MAX_SPREAD = 60.0  # nats below a row's top log-prob that values are clipped to
TAIL_FLOOR = -60.0  # log of a tail mass that is zero to float precision (k covers the vocabulary)
MANIFEST = "manifest.json"

Scorer = Callable[[list[list[int]], int], list[tuple[Any, Any]]]
"""``score(sequences, k)``: per token sequence, ``(indices, logprobs)`` arrays of shape (len, k): row i is the
teacher's top k for the token at position i given the tokens before it (row 0 has no context: -1 / -inf)."""


class CorruptShard(Exception):
    """A shard whose bytes do not match the checksum and length the manifest recorded."""


# ---------------------------------------------------------------------------------------------------------
# The codec


def _varint_encode(values):
    """LEB128 bytes of non-negative integers, vectorised: 7 bits per byte, high bit set on all but the last."""
    import numpy as np

    values = np.asarray(values, dtype=np.uint64)
    if values.size == 0:
        return b""
    widths = np.ones(values.shape, dtype=np.int64)
    for bits in (7, 14, 21, 28, 35):
        widths += values >= (np.uint64(1) << np.uint64(bits))
    ends = np.cumsum(widths)
    starts = ends - widths
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    for byte in range(int(widths.max())):
        has = widths > byte
        part = (values[has] >> np.uint64(7 * byte)) & np.uint64(0x7F)
        more = (widths[has] - 1 > byte).astype(np.uint64) << np.uint64(7)
        out[starts[has] + byte] = (part | more).astype(np.uint8)
    return out.tobytes()


def _varint_decode(data: bytes, count: int):
    import numpy as np

    raw = np.frombuffer(data, dtype=np.uint8)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    last = raw < 0x80
    if int(last.sum()) != count or not last[-1]:
        raise CorruptShard(f"index stream holds {int(last.sum())} values, expected {count}")
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(raw.size) - starts[group]
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(parts, starts).astype(np.int64)


def tail_logmass(logprobs):
    """Log of the probability mass outside each row's alternatives (float64 sums: 1 minus a sum near 1)."""
    import numpy as np

    mass = np.exp(np.asarray(logprobs, dtype=np.float64)).sum(-1)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(np.clip(1.0 - mass, 0.0, None)), TAIL_FLOOR)


def encode_rows(indices, logprobs, tail=None) -> bytes:
    """The codec's bytes for rows of top-k alternatives: ``indices`` (rows, k) ints (-1 pads a missing
    alternative), ``logprobs`` (rows, k) normalised over the teacher's whole vocabulary, ``tail`` the log of each
    row's mass outside them (computed from ``logprobs`` when None)."""
    import numpy as np

    indices = np.asarray(indices, dtype=np.int64)
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if indices.ndim != 2 or indices.shape != logprobs.shape:
        raise ValueError(f"indices {indices.shape} and logprobs {logprobs.shape} must both be (rows, k)")
    rows, k = indices.shape
    valid = (indices >= 0) & np.isfinite(logprobs)
    if tail is None:
        tail = tail_logmass(np.where(valid, logprobs, -np.inf))
    tail = np.maximum(np.asarray(tail, dtype=np.float64), TAIL_FLOOR)
    counts = valid.sum(1)
    # Sort every row by index, pushing padding to the end: gaps are then small non-negative integers.
    order = np.argsort(np.where(valid, indices, np.iinfo(np.int64).max), axis=1, kind="stable")
    sorted_ids = np.take_along_axis(indices, order, 1)
    sorted_lp = np.take_along_axis(np.where(valid, logprobs, -np.inf), order, 1)
    keep = np.arange(k)[None, :] < counts[:, None]
    previous = np.concatenate([np.full((rows, 1), -1), sorted_ids[:, :-1]], axis=1)
    gaps = (sorted_ids - previous - 1)[keep]
    if gaps.size and int(gaps.min()) < 0:
        raise ValueError("a row lists the same token index twice")
    top = np.where(counts > 0, np.max(np.where(keep, sorted_lp, -np.inf), axis=1, initial=-np.inf), 0.0)
    # alternatives more than MAX_SPREAD nats below the top one carry no mass worth a code step (and keep the
    # spread inside float16's range)
    sorted_lp = np.maximum(sorted_lp, (top - MAX_SPREAD)[:, None])
    bottom = np.where(counts > 0, np.min(np.where(keep, sorted_lp, np.inf), axis=1, initial=np.inf), 0.0)
    spread = np.float16(np.maximum(top - bottom, 0.0))
    # float16 rounds to nearest: nudge up where it rounded down, so no code exceeds 255
    spread = np.where(spread.astype(np.float64) < top - bottom, np.nextafter(spread, np.float16(np.inf)), spread)
    step = spread.astype(np.float64) / 255.0
    safe_step = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint((top[:, None] - sorted_lp) / safe_step[:, None]), 0, 255)
    codes = np.where(step[:, None] > 0, codes, 0).astype(np.uint8)[keep]
    if k > 65535:
        raise ValueError("k above 65535 is not supported by this codec")
    streams = [counts.astype("<u2").tobytes() + spread.astype("<f2").tobytes() + tail.astype("<f2").tobytes(),
               codes.tobytes(), _varint_encode(gaps)]
    # Each stream is deflated on its own: their byte statistics differ, and one Huffman table per stream codes
    # them closer to their entropy. The varint stream has few repeats for LZ77 to find, so it gets Huffman only.
    packed = [_deflate(streams[0], zlib.Z_DEFAULT_STRATEGY), _deflate(streams[1], zlib.Z_DEFAULT_STRATEGY),
              _deflate(streams[2], zlib.Z_HUFFMAN_ONLY)]
    return struct.pack(_HEAD, rows, k, *(len(p) for p in packed)) + b"".join(packed)


_HEAD = "<IIIII"


def _deflate(data: bytes, strategy: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, strategy)
    return packer.compress(data) + packer.flush()


def _inflate(data: bytes) -> bytes:
    try:
        unpacker = zlib.decompressobj(-15)
        out = unpacker.decompress(data) + unpacker.flush()
    except zlib.error as exc:
        raise CorruptShard(f"cannot inflate: {exc}") from None
    if not unpacker.eof or unpacker.unused_data:
        raise CorruptShard("a compressed stream is cut short or has trailing bytes")
    return out


def decode_rows(data: bytes):
    """``(indices int32, logprobs float32)`` of shape (rows, k), alternatives in ascending index order, -1 and
    -inf padding rows with fewer than k; the inverse of :func:`encode_rows` up to the quantisation of values."""
    import numpy as np

    head = struct.calcsize(_HEAD)
    if len(data) < head:
        raise CorruptShard("shorter than its header")
    rows, k, *lengths = struct.unpack(_HEAD, data[:head])
    if head + sum(lengths) != len(data):
        raise CorruptShard("stream lengths do not add up")
    offsets = [head + sum(lengths[:i]) for i in range(4)]
    fixed, codes_b, gaps_b = (_inflate(data[offsets[i]:offsets[i + 1]]) for i in range(3))
    if len(fixed) != 6 * rows:
        raise CorruptShard("per-row stream has the wrong size")
    counts_b, spread_b, tail_b = fixed[:2 * rows], fixed[2 * rows:4 * rows], fixed[4 * rows:]
    counts = np.frombuffer(counts_b, dtype="<u2").astype(np.int64)
    spread = np.frombuffer(spread_b, dtype="<f2").astype(np.float64)
    tail = np.frombuffer(tail_b, dtype="<f2").astype(np.float64)
    codes = np.frombuffer(codes_b, dtype=np.uint8).astype(np.float64)
    total = int(counts.sum())
    gaps = _varint_decode(gaps_b, total)
    if counts.size != rows or codes.size != total or spread.size != rows or tail.size != rows:
        raise CorruptShard("stream sizes do not match the row count")
    keep = np.arange(k)[None, :] < counts[:, None]
    indices = np.full((rows, k), -1, dtype=np.int64)
    relative = np.full((rows, k), -np.inf)
    row_of = np.repeat(np.arange(rows), counts)
    indices[keep] = gaps + 1
    indices = np.where(keep, np.cumsum(np.where(keep, indices, 0), axis=1) - 1, -1)
    relative[keep] = -codes * (spread[row_of] / 255.0)
    # shift each row so its k alternatives hold exactly 1 - exp(tail) of the mass
    with np.errstate(divide="ignore"):
        mass = np.log(np.clip(-np.expm1(tail), 1e-30, None))
        present = np.where(keep, relative, -np.inf)
        peak = np.max(present, axis=1, initial=-np.inf)
        peak = np.where(np.isfinite(peak), peak, 0.0)
        norm = peak + np.log(np.exp(present - peak[:, None]).sum(1).clip(1e-300))
    logprobs = np.where(keep, relative + (mass - norm)[:, None], -np.inf)
    return indices.astype(np.int32), logprobs.astype(np.float32)


def quantisation_bound(spread: float) -> float:
    """The largest error of a decoded log-prob relative to its row's top one, for a row whose alternatives span
    ``spread`` nats: half a step, the step being the float16-rounded spread / 255."""
    return float(spread) * (1 + 2 ** -10) / 255.0 / 2


# ---------------------------------------------------------------------------------------------------------
# Keys and fingerprints


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides token ids: the vocabulary, the special tokens and the chat template."""
    digest = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":")).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    digest.update(json.dumps(getattr(tokenizer, "all_special_tokens", []) or []).encode())
    return digest.hexdigest()[:16]


def sequences_checksum(sequences: Sequence[tuple[Sequence[int], Sequence[bool]]]) -> str:
    """A checksum of token sequences and their target masks (what the teacher scores, and where)."""
    digest = hashlib.sha256()
    for ids, mask in sequences:
        digest.update(struct.pack("<I", len(ids)))
        digest.update(json.dumps([list(map(int, ids)), [1 if m else 0 for m in mask]], separators=(",", ":")).encode())
    return digest.hexdigest()


def signal_key(*, teacher: dict[str, Any], tokenizer: str, data: str, top_k: int) -> str:
    """The store key of a capture: teacher identity, tokenizer fingerprint, data checksum, k and codec."""
    return paths.content_digest({"teacher": teacher, "tokenizer": tokenizer, "data": data, "top_k": int(top_k),
                                 "codec": CODEC}) + f"-k{int(top_k)}"


# ---------------------------------------------------------------------------------------------------------
# The store


@dataclass
class Capture:
    """The outcome of :meth:`SignalStore.capture`: the key, its size, and what this call had the teacher do."""

    key: str
    folder: Path
    sequences: int
    tokens: int
    bytes: int
    top_k: int
    teacher_forward_tokens: int = 0
    """tokens the teacher ran forward in this call (0 when the capture existed and was intact)"""
    recomputed_shards: list[int] = field(default_factory=list)

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "path": str(self.folder), "sequences": self.sequences, "tokens": self.tokens,
                "bytes": self.bytes, "bytes_per_token": round(self.bytes_per_token, 2), "top_k": self.top_k,
                "codec": CODEC, "teacher_forward_tokens": self.teacher_forward_tokens,
                "recomputed_shards": self.recomputed_shards}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the folder's lock file: one writer per key at a time, across processes."""
    import fcntl

    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class SignalStore:
    """Captures under ``root`` (default ``cache_dir()/signals``), one folder per key."""

    def __init__(self, root: Path | None = None, *, shard_sequences: int = 256, batch_sequences: int = 16):
        self.root = Path(root) if root is not None else paths.cache_dir() / "signals"
        self.shard_sequences = shard_sequences
        self.batch_sequences = batch_sequences

    def folder(self, key: str) -> Path:
        return self.root / key

    def manifest(self, key: str) -> dict[str, Any] | None:
        path = self.folder(key) / MANIFEST
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def is_complete(self, key: str) -> bool:
        manifest = self.manifest(key)
        return bool(manifest and manifest.get("complete"))

    def _shard_bytes(self, key: str, entry: dict[str, Any]) -> bytes:
        path = self.folder(key) / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorruptShard(f"{path}: {exc.strerror or exc}") from None
        if len(data) != entry["bytes"]:
            raise CorruptShard(f"{path}: {len(data)} bytes, the manifest says {entry['bytes']} (truncated?)")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptShard(f"{path}: checksum mismatch")
        return data

    def capture(self, key: str, sequences: Sequence[tuple[Sequence[int], Sequence[bool]]], score: Scorer, *,
                top_k: int, describe: dict[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> Capture:
        """Make sure the capture ``key`` of ``sequences`` (token ids, target mask) exists and is intact: reuse
        verified shards, score only missing or damaged ones with ``score``. Safe against a concurrent writer of
        the same key (it waits for the lock); returns what this call computed."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(folder):
            manifest = self.manifest(key) or {}
            size = self.shard_sequences
            count = (len(sequences) + size - 1) // size
            fresh = (manifest.get("codec") != CODEC or manifest.get("sequences") != len(sequences)
                     or manifest.get("top_k") != top_k or manifest.get("shard_sequences") != size)
            if fresh:
                manifest = {"key": key, "codec": CODEC, "top_k": top_k, "sequences": len(sequences),
                            "shard_sequences": size, "shards": {}, "complete": False, "describe": describe or {},
                            "teacher_forward_tokens": 0}
            computed, redone = 0, []
            for number in range(count):
                entry = manifest["shards"].get(str(number))
                if entry is not None:
                    try:
                        self._shard_bytes(key, entry)
                        if progress:
                            progress(entry["sequences"])
                        continue
                    except CorruptShard:
                        redone.append(number)
                part = sequences[number * size:(number + 1) * size]
                data, tokens, forward = self._compute_shard(part, score, top_k, progress)
                name = f"shard-{number:05d}.bin"
                _write_atomic(folder / name, data)
                manifest["shards"][str(number)] = {"file": name, "first": number * size, "sequences": len(part),
                                                   "tokens": tokens, "bytes": len(data),
                                                   "sha256": hashlib.sha256(data).hexdigest()}
                manifest["teacher_forward_tokens"] += forward
                computed += forward
                manifest["complete"] = False
                _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
            if not manifest["complete"] or fresh:
                manifest["complete"] = True
                _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        shards = manifest["shards"].values()
        return Capture(key, folder, len(sequences), sum(s["tokens"] for s in shards), sum(s["bytes"] for s in shards),
                       top_k, computed, redone)

    def _compute_shard(self, part, score: Scorer, top_k: int, progress) -> tuple[bytes, int, int]:
        import numpy as np

        counts, index_rows, value_rows = [], [], []
        forward = 0
        for begin in range(0, len(part), self.batch_sequences):
            batch = part[begin:begin + self.batch_sequences]
            answers = score([list(map(int, ids)) for ids, _ in batch], top_k)
            if len(answers) != len(batch):
                raise RuntimeError(f"the scorer answered {len(answers)} sequences for {len(batch)}")
            for (ids, mask), (indices, logprobs) in zip(batch, answers):
                forward += len(ids)
                indices, logprobs = np.asarray(indices), np.asarray(logprobs)
                if indices.shape[0] != len(ids):
                    raise RuntimeError(f"the scorer gave {indices.shape[0]} rows for a sequence of {len(ids)} tokens")
                rows = np.flatnonzero(np.asarray(mask, dtype=bool))
                width = indices.shape[1]
                padded_i = np.full((rows.size, top_k), -1, dtype=np.int64)
                padded_v = np.full((rows.size, top_k), -np.inf)
                padded_i[:, :min(width, top_k)] = indices[rows, :top_k]
                padded_v[:, :min(width, top_k)] = logprobs[rows, :top_k]
                counts.append(int(rows.size))
                index_rows.append(padded_i)
                value_rows.append(padded_v)
            if progress:
                progress(len(batch))
        indices = np.concatenate(index_rows) if index_rows else np.zeros((0, top_k), dtype=np.int64)
        values = np.concatenate(value_rows) if value_rows else np.zeros((0, top_k))
        header = json.dumps({"rows": counts}, separators=(",", ":")).encode()
        body = MAGIC + struct.pack("<I", len(header)) + header + encode_rows(indices, values)
        return body, int(sum(counts)), forward

    def load(self, key: str) -> list[tuple[Any, Any]]:
        """Per sequence, ``(indices int32, logprobs float32)`` of shape (targets, k), from a complete capture;
        a UserError when it is missing or a shard fails its checksum (run the capture again to repair it)."""
        import numpy as np

        manifest = self.manifest(key)
        if not manifest or not manifest.get("complete"):
            raise UserError("no complete capture with this key; run `stillroom capture` or the method again",
                            str(self.folder(key)))
        out: list[tuple[Any, Any]] = []
        for number in range(len(manifest["shards"])):
            entry = manifest["shards"][str(number)]
            try:
                data = self._shard_bytes(key, entry)
                if not data.startswith(MAGIC):
                    raise CorruptShard("not a signal shard")
                (length,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
                start = len(MAGIC) + 4
                counts = json.loads(data[start:start + length])["rows"]
                indices, values = decode_rows(data[start + length:])
            except CorruptShard as exc:
                raise UserError(f"damaged teacher-signal shard ({exc}); run the capture again to recompute it",
                                str(self.folder(key))) from None
            bounds = np.cumsum([0, *counts])
            out.extend((indices[bounds[i]:bounds[i + 1]], values[bounds[i]:bounds[i + 1]])
                       for i in range(len(counts)))
        return out


# ---------------------------------------------------------------------------------------------------------
# The stage methods use


def sequence_digest(ids: Sequence[int], mask: Sequence[bool]) -> str:
    return sequences_checksum([(ids, mask)])


def teacher_signals(teacher, tokenizer, sequences: Sequence[tuple[Sequence[int], Sequence[bool]]], top_k: int, *,
                    store: SignalStore | None = None, describe: dict[str, Any] | None = None,
                    progress: Callable[[int], None] | None = None) -> tuple[Capture, list[tuple[Any, Any]]]:
    """The teacher's top-k at the target positions of ``sequences`` (token ids in ``tokenizer``'s vocabulary,
    target mask), captured once in the store and reused: ``(capture, per sequence (indices, logprobs))`` with
    arrays of shape (targets, k), alternatives in ascending index order.

    The capture holds the distinct sequences in a canonical order (by content), so every method, seed and
    data order that trains on the same sequences shares one capture: ``capture.teacher_forward_tokens`` is 0
    whenever it already existed."""
    unique: dict[str, tuple[Sequence[int], Sequence[bool]]] = {}
    digests = []
    for ids, mask in sequences:
        digest = sequence_digest(ids, mask)
        digests.append(digest)
        unique.setdefault(digest, (ids, mask))
    order = sorted(unique)
    canonical = [unique[d] for d in order]
    key = signal_key(teacher=teacher.signal_identity(), tokenizer=tokenizer_fingerprint(tokenizer),
                     data=sequences_checksum(canonical), top_k=top_k)
    store = store or SignalStore()
    capture = store.capture(key, canonical, teacher.score_targets, top_k=top_k, describe=describe, progress=progress)
    by_digest = dict(zip(order, store.load(key)))
    return capture, [by_digest[d] for d in digests]


class SignalIndex:
    """Captured signals looked up by the content of a training row, for trainers that batch sequences their own
    way (TRL's collators, on-policy mixes): ``batch`` returns the stored top-k laid out on a padded batch's
    positions, or None when a row was not captured (a freshly generated one), so the caller runs the teacher."""

    def __init__(self, sequences: Sequence[tuple[Sequence[int], Sequence[bool]]], signals: Sequence[tuple[Any, Any]]):
        self.by_digest = {sequence_digest(ids, mask): signal for (ids, mask), signal in zip(sequences, signals)}
        self.hits = 0
        self.misses = 0

    def batch(self, input_ids, attention_mask, labels):
        """``(indices (B, T, k) long, logprobs (B, T, k) float)`` torch tensors for a batch whose real tokens are
        where ``attention_mask`` is 1 (left or right padding) and whose targets are where ``labels`` != -100; row
        t holds the teacher's distribution of token t. None unless every row was captured."""
        import numpy as np
        import torch

        ids_rows = input_ids.detach().cpu().numpy()
        attention = attention_mask.detach().cpu().numpy().astype(bool)
        targets = (labels.detach().cpu().numpy() != -100)
        found = []
        for row in range(ids_rows.shape[0]):
            positions = np.flatnonzero(attention[row])
            mask = targets[row, positions]
            signal = self.by_digest.get(sequence_digest(ids_rows[row, positions].tolist(), mask.tolist()))
            if signal is None:
                self.misses += 1
                return None
            found.append((positions[mask], signal))
        self.hits += 1
        k = max(s[0].shape[1] for _, s in found)
        indices = np.full(ids_rows.shape + (k,), -1, dtype=np.int64)
        logprobs = np.full(ids_rows.shape + (k,), -np.inf, dtype=np.float32)
        for row, (positions, (top_ids, top_values)) in enumerate(found):
            indices[row, positions, :top_ids.shape[1]] = top_ids
            logprobs[row, positions, :top_values.shape[1]] = top_values
        return torch.from_numpy(indices).to(input_ids.device), torch.from_numpy(logprobs).to(input_ids.device)

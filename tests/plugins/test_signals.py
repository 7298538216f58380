"""The teacher-signal store (stillroom.signals): the codec's round trip and size, reuse of a capture, two
concurrent writers, and damaged shards detected and recomputed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

np = pytest.importorskip("numpy")

from stillroom.signals import (CODEC, SignalStore, decode_rows, encode_rows, quantisation_bound,  # noqa: E402
                               sequences_checksum, signal_key, tail_logmass)


def zipf_topk(rows: int, vocab: int, k: int, seed: int = 0):
    """Top-k of softmax rows whose logits favour frequent (low) ids, as BPE vocabularies are ordered."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, vocab)) * 2.0 - 1.1 * np.log(np.arange(vocab) + 20.0)
    logprobs = logits - logits.max(1, keepdims=True)
    logprobs -= np.log(np.exp(logprobs).sum(1, keepdims=True))
    top = np.argpartition(-logprobs, k, axis=1)[:, :k]
    return top, np.take_along_axis(logprobs, top, 1)


def sorted_by_index(indices, values):
    order = np.argsort(indices, axis=1, kind="stable")
    return np.take_along_axis(indices, order, 1), np.take_along_axis(values, order, 1)


def test_codec_round_trip_indices_exact_values_within_the_bound():
    indices, values = zipf_topk(64, 5000, 20)
    # padding: a row with only 7 alternatives, and one with a single alternative
    indices[3, 7:] = -1
    values[3, 7:] = -np.inf
    indices[5, 1:] = -1
    values[5, 1:] = -np.inf
    got_i, got_v = decode_rows(encode_rows(indices, values))
    want_i, want_v = sorted_by_index(np.where(indices >= 0, indices, 1 << 30), values)
    want_i = np.where(want_i == 1 << 30, -1, want_i)
    np.testing.assert_array_equal(got_i, want_i)
    assert np.isneginf(got_v[3, 7:]).all() and np.isneginf(got_v[5, 1:]).all()
    for row in range(64):
        keep = want_i[row] >= 0
        want, got = want_v[row][keep], got_v[row][keep].astype(np.float64)
        bound = quantisation_bound(want.max() - want.min())
        # relative to the row's top value, every log-prob is within half a quantisation step
        assert np.abs((got - got.max()) - (want - want.max())).max() <= bound + 1e-6
        # and the k alternatives keep the mass they had (the tail is stored, not derived from rounded values)
        assert math.isclose(np.exp(got).sum(), np.exp(want).sum(), rel_tol=2e-3)


def test_codec_on_a_qwen_sized_vocabulary_beats_100_bytes_and_keeps_the_kl():
    torch = pytest.importorskip("torch")
    from stillroom.plugins.losses.topk import TopKForwardKL

    vocab, k, rows = 151_936, 50, 32
    rng = np.random.default_rng(1)
    teacher = torch.from_numpy((rng.standard_normal((rows, vocab)) * 2.0
                                - 1.1 * np.log(np.arange(vocab) + 20.0)).astype(np.float32))
    values, indices = torch.log_softmax(teacher, -1).topk(k, -1)
    data = encode_rows(indices.numpy(), values.numpy())
    assert len(data) / rows <= 100
    got_i, got_v = decode_rows(data)
    student = (teacher + torch.randn(rows, vocab))[None]
    loss = TopKForwardKL(TopKForwardKL.Config(reduction="sum"))
    exact = float(loss(student, (indices[None], values[None])))
    decoded = float(loss(student, (torch.from_numpy(got_i)[None], torch.from_numpy(got_v)[None])))
    assert abs(decoded - exact) / exact < 0.005


def test_tail_and_varint_edges():
    # gaps of every varint width, including the largest ids a 32-bit vocabulary can hold
    indices = np.array([[0, 127, 128, 16_511, 2_113_662, 300_000_000]])
    values = np.log(np.full((1, 6), 0.1))
    got_i, got_v = decode_rows(encode_rows(indices, values))
    np.testing.assert_array_equal(got_i, indices)
    assert math.isclose(float(tail_logmass(values)[0]), math.log(0.4), rel_tol=1e-9)
    np.testing.assert_allclose(got_v, values, atol=2e-3)


def score_counter(vocab: int = 97):
    """A deterministic scorer (a fixed random bigram table) that counts the tokens it was asked to score."""
    rng = np.random.default_rng(7)
    table = rng.standard_normal((vocab, vocab)) * 3
    table -= np.log(np.exp(table).sum(1, keepdims=True))
    calls = {"tokens": 0}

    def score(sequences, k):
        calls["tokens"] += sum(len(s) for s in sequences)
        out = []
        for ids in sequences:
            indices = np.full((len(ids), k), -1, dtype=np.int32)
            values = np.full((len(ids), k), -np.inf, dtype=np.float32)
            for position in range(1, len(ids)):
                row = table[ids[position - 1]]
                top = np.argsort(-row)[:k]
                indices[position], values[position] = top, row[top]
            out.append((indices, values))
        return out

    return score, calls


def toy_sequences(count: int = 10):
    rng = np.random.default_rng(3)
    out = []
    for _ in range(count):
        length = int(rng.integers(6, 14))
        ids = rng.integers(0, 97, length).tolist()
        mask = [i >= 3 for i in range(length)]
        out.append((ids, mask))
    return out


def test_capture_twice_scores_nothing_the_second_time(tmp_path):
    sequences = toy_sequences()
    score, calls = score_counter()
    key = signal_key(teacher={"kind": "toy"}, tokenizer="t", data=sequences_checksum(sequences), top_k=5)
    store = SignalStore(tmp_path, shard_sequences=4)
    first = store.capture(key, sequences, score, top_k=5)
    assert first.teacher_forward_tokens == calls["tokens"] == sum(len(ids) for ids, _ in sequences)
    assert first.tokens == sum(sum(mask) for _, mask in sequences)
    manifest = json.loads((tmp_path / key / "manifest.json").read_text())
    assert manifest["complete"] and manifest["codec"] == CODEC and len(manifest["shards"]) == 3
    second = SignalStore(tmp_path, shard_sequences=4).capture(key, sequences, score, top_k=5)
    assert second.teacher_forward_tokens == 0 and calls["tokens"] == first.teacher_forward_tokens
    loaded = store.load(key)
    reference = score([ids for ids, _ in sequences], 5)
    for (ids, mask), (indices, values), (want_i, want_v) in zip(sequences, loaded, reference):
        rows = np.flatnonzero(mask)
        sorted_i, sorted_v = sorted_by_index(want_i[rows], want_v[rows])
        np.testing.assert_array_equal(indices, sorted_i)
        np.testing.assert_allclose(values, sorted_v, atol=0.05)
    # another k, another teacher or other data is another key
    assert key != signal_key(teacher={"kind": "toy"}, tokenizer="t", data=sequences_checksum(sequences), top_k=6)
    assert key != signal_key(teacher={"kind": "toy"}, tokenizer="t", data=sequences_checksum(sequences[1:]), top_k=5)


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete"])
def test_a_damaged_shard_is_detected_and_recomputed(tmp_path, damage):
    from stillroom import UserError

    sequences = toy_sequences()
    score, calls = score_counter()
    store = SignalStore(tmp_path, shard_sequences=4)
    key = "toy-key"
    store.capture(key, sequences, score, top_k=5)
    shard = tmp_path / key / "shard-00001.bin"
    data = bytearray(shard.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[:-9]))
    else:
        shard.unlink()
    with pytest.raises(UserError, match="damaged teacher-signal shard"):
        store.load(key)  # never decoded into training data
    before = calls["tokens"]
    repaired = store.capture(key, sequences, score, top_k=5)
    assert repaired.recomputed_shards == [1]
    assert repaired.teacher_forward_tokens == calls["tokens"] - before == sum(len(i) for i, _ in sequences[4:8])
    assert len(store.load(key)) == len(sequences)


WRITER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_signals import score_counter, toy_sequences
    from stillroom.signals import SignalStore
    score, calls = score_counter()

    def slow(sequences, k):
        time.sleep(0.05)  # long enough for the other writer to arrive while this one holds the lock
        return score(sequences, k)

    # start together: both processes are ready before either begins, so their captures overlap
    from pathlib import Path
    Path({root!r}, "ready-" + sys.argv[1]).touch()
    while not Path({root!r}, "go").exists():
        time.sleep(0.01)
    result = SignalStore({root!r}, shard_sequences=2, batch_sequences=1).capture("same-key", toy_sequences(), slow,
                                                                               top_k=5)
    print(json.dumps({{"forward": result.teacher_forward_tokens}}))
""")


def test_two_concurrent_captures_of_one_key_give_one_intact_store(tmp_path):
    from pathlib import Path

    script = WRITER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    import time

    writers = [subprocess.Popen([sys.executable, "-c", script, str(n)], stdout=subprocess.PIPE, text=True)
               for n in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    (tmp_path / "go").touch()
    # a reader meanwhile: it sees no capture or the whole capture, never a part of one
    from stillroom import UserError

    reader, seen = SignalStore(tmp_path), set()
    while any(w.poll() is None for w in writers):
        try:
            seen.add(len(reader.load("same-key")))
        except UserError as exc:
            assert "no complete capture" in str(exc)
            seen.add(0)
        time.sleep(0.02)
    assert seen <= {0, len(toy_sequences())}
    outputs = [json.loads(w.communicate(timeout=120)[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    total = sum(len(ids) for ids, _ in toy_sequences())
    # exactly one of them did the work; the other waited for the lock and found every shard verified
    assert sorted(o["forward"] for o in outputs) == [0, total]
    assert len(SignalStore(tmp_path).load("same-key")) == len(toy_sequences())
    assert not list((tmp_path / "same-key").glob("*.tmp*"))


def test_codec_refuses_duplicates_and_clips_negligible_values():
    with pytest.raises(ValueError, match="twice"):
        encode_rows(np.array([[3, 3]]), np.log(np.array([[0.5, 0.2]])))
    # a value 1e30 nats down (an API's "-9999" sentinel, say) costs no precision elsewhere in the row
    indices = np.array([[1, 2, 3]])
    values = np.array([[-0.1, -2.5, -1e30]])
    got_i, got_v = decode_rows(encode_rows(indices, values))
    np.testing.assert_array_equal(got_i, indices)
    assert np.isfinite(got_v).all() and abs(got_v[0, 1] - got_v[0, 0] - (-2.4)) < quantisation_bound(60)


def test_signal_index_lays_stored_rows_on_any_padding(tmp_path):
    torch = pytest.importorskip("torch")
    from stillroom.signals import SignalIndex

    sequences = toy_sequences(3)
    score, _ = score_counter()
    store = SignalStore(tmp_path)
    store.capture("k", sequences, score, top_k=5)
    index = SignalIndex(sequences, store.load("k"))
    width = max(len(ids) for ids, _ in sequences) + 2
    input_ids = torch.zeros((3, width), dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (ids, mask) in enumerate(sequences):
        start = width - len(ids) if row != 1 else 0  # left padding, and one right-padded row
        input_ids[row, start:start + len(ids)] = torch.tensor(ids)
        attention[row, start:start + len(ids)] = 1
        labels[row, start:start + len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
    indices, logprobs = index.batch(input_ids, attention, labels)
    for row, (ids, mask) in enumerate(sequences):
        start = width - len(ids) if row != 1 else 0
        want_i, _ = store.load("k")[row]
        got = indices[row, start:start + len(ids)][torch.tensor(mask)]
        assert torch.equal(got, torch.from_numpy(want_i.astype("int64")))
        assert bool((indices[row][labels[row] == -100] == -1).all())
    labels[2, -1] = -100  # another target mask: not what was captured
    assert index.batch(input_ids, attention, labels) is None and index.misses == 1

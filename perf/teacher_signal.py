"""The teacher-signal store: how small the codec keeps a top-k signal, what it costs the loss, and how fast a
capture runs against a plain batched forward loop and loads back for training.

1. Codec, on a Qwen-sized vocabulary (151,936 tokens) at k=50: synthetic but realistic teacher rows — logits
   with a Zipfian prior over token ids (BPE vocabularies number tokens roughly by frequency, so frequent tokens
   have small ids) plus per-position noise — and, as the worst case, the same without the prior (top-k ids
   spread uniformly; about 81 bytes of index entropy per token, whatever the codec). Prints bytes per token and
   the relative error of the top-k forward KL (the topk_forward_kl loss, tail bucket) computed from the decoded
   signal against the float32 top-k, for a student = teacher logits + N(0, 1) noise.
2. Capture: ``stillroom.signals.teacher_signals`` over an hf endpoint (forward, top-k, encode, checksum, atomic
   write, then one load) against a plain loop of the same batched forward passes with the top-k taken and kept
   in memory (what any top-k store must compute), in tokens per second, on a 2-layer Llama with a 32k
   vocabulary.
3. Load: decoding a capture back into per-sequence arrays (what a training stage does once), tokens per second.

Prints ``name=value`` lines; the last is ``signal_bytes_per_token`` (goal <= 100: DistillKit's budget setting
stores about 114 at k=50). Usage: python perf/teacher_signal.py [--tokens 256] [--sequences 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import stillroom
from stillroom.plugin_manager import use_host
from stillroom.signals import SignalStore, decode_rows, encode_rows, teacher_signals
from stillroom.testing import first_party_host

VOCAB, K = 151_936, 50


def teacher_rows(tokens: int, seed: int, zipf: bool) -> torch.Tensor:
    generator = np.random.default_rng(seed)
    logits = generator.standard_normal((tokens, VOCAB)).astype(np.float32) * 2.0
    if zipf:
        logits += (-1.1 * np.log(np.arange(VOCAB) + 20.0)).astype(np.float32)
    return torch.from_numpy(logits)


def codec_figures(tokens: int) -> dict[str, float]:
    loss = stillroom.build("loss", "topk_forward_kl", reduction="sum")
    out = {}
    for name, zipf in (("zipf", True), ("uniform_ids", False)):
        teacher = teacher_rows(tokens, 1, zipf)
        values, indices = torch.log_softmax(teacher, -1).topk(K, -1)
        encode_rows(indices[:2].numpy(), values[:2].numpy())  # warm-up: first-call costs are not the codec's
        start = time.perf_counter()
        data = encode_rows(indices.numpy(), values.numpy())
        encode_seconds = time.perf_counter() - start
        got_i, got_v = decode_rows(data)
        student = (teacher + torch.randn(teacher.shape, generator=torch.Generator().manual_seed(2)))[None]
        exact = float(loss(student, (indices[None], values[None])))
        decoded = float(loss(student, (torch.from_numpy(got_i)[None], torch.from_numpy(got_v)[None])))
        out[f"bytes_per_token_{name}"] = len(data) / tokens
        out[f"kl_relative_error_{name}"] = abs(decoded - exact) / exact
        out[f"encode_tokens_per_second_{name}"] = tokens / encode_seconds
    out["float32_topk_bytes_per_token"] = K * 8  # int32 index + float32 log-prob
    return out


def capture_figures(sequences: int, length: int, batch: int, repeats: int) -> dict[str, float]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    vocab = 32_000
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=length + 8)
    with tempfile.TemporaryDirectory() as scratch:
        LlamaForCausalLM(config).save_pretrained(Path(scratch) / "teacher")
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        word_level = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="t0")
        tokenizer.save_pretrained(Path(scratch) / "teacher")
        teacher = stillroom.build("teacher", "hf", model=str(Path(scratch) / "teacher"), dtype="float32",
                                  device="cpu", batch_size=batch)
        generator = np.random.default_rng(3)
        data = [(generator.integers(1, vocab, length).tolist(), [i >= length // 4 for i in range(length)])
                for _ in range(sequences)]
        tokens = sequences * length
        model = teacher.model.eval()

        def plain_loop() -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                for begin in range(0, sequences, batch):
                    ids = torch.tensor([ids for ids, _ in data[begin:begin + batch]])
                    values, indices = model(input_ids=ids).logits.float().log_softmax(-1).topk(K, -1)
                    values.numpy(), indices.numpy()
            return time.perf_counter() - start

        def through_store(repeat: int):
            store = SignalStore(Path(scratch) / f"store{repeat}", batch_sequences=batch)
            start = time.perf_counter()
            capture, _ = teacher_signals(teacher, tokenizer, data, K, store=store)
            return time.perf_counter() - start, store, capture

        # alternate the two sides and take medians: the machine is shared and noisy
        forward_times, capture_times = [], []
        for repeat in range(repeats):
            forward_times.append(plain_loop())
            seconds, store, capture = through_store(repeat)  # includes one load: teacher_signals returns arrays
            capture_times.append(seconds)
        forward_seconds, capture_seconds = float(np.median(forward_times)), float(np.median(capture_times))
        load_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            loaded = store.load(capture.key)
            load_times.append(time.perf_counter() - start)
        load_seconds = float(np.median(load_times))
        assert len(loaded) == sequences
    return {"capture_tokens_per_second": tokens / capture_seconds,
            "forward_tokens_per_second": tokens / forward_seconds,
            "capture_vs_forward": forward_seconds / capture_seconds,
            "load_target_tokens_per_second": capture.tokens / load_seconds,
            "capture_bytes_per_token_32k_random_model": capture.bytes_per_token}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("STILLROOM_NO_PROGRESS", "1")
    # the hf endpoint runs models this small on one thread (more only spin on a shared CPU); so does the loop
    torch.set_num_threads(1)
    use_host(first_party_host())
    print(f"vocab={VOCAB}")
    print(f"k={K}")
    codec = codec_figures(args.tokens)
    capture = capture_figures(args.sequences, args.length, args.batch, args.repeats)
    for name, value in {**capture, **codec}.items():
        print(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")
    print(f"signal_bytes_per_token={codec['bytes_per_token_zipf']:.1f}")


if __name__ == "__main__":
    main()

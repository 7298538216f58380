"""What stillroom's training engine costs: the same supervised fine-tuning through the engine (the hf student's
``fit``) and through a plain TRL ``SFTTrainer`` script, and the engine against the hand-written AdamW loop the
hf student used before the engine (a copy of it lives here, for this comparison only).

1. SFT on a tiny Llama (BPE tokenizer, chat template): N steps, same records, batch, learning rate, seed and
   precision on both sides, prompt tokens masked on both (TRL: prompt/completion records). The TRL side is timed
   from SFTConfig to the end of ``train()`` (its dataset preparation included); the engine side over the whole
   ``fit`` (encoding, trainer, training). Ratio = median engine / median TRL (goal <= 1.05).
2. The quickstart student (a ~10k-parameter character Llama) on arithmetic problems: the engine's ``fit``
   against the old loop, same steps and batch. Ratio = median engine / median loop (goal <= 1.2): the Trainer's
   fixed cost per step is what matters for models this small.

Both sides run in this process, alternating which goes first, ``--repeats`` times, on freshly loaded weights,
with one torch thread. Prints ``name=value`` lines; the last is ``engine_overhead_ratio`` (part 1).
Usage: python perf/engine_overhead.py [--steps 60] [--quickstart-steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("STILLROOM_NO_PROGRESS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import stillroom  # noqa: E402
from stillroom import Context  # noqa: E402
from stillroom.plugin_manager import use_host  # noqa: E402
from stillroom.testing import first_party_host, save_tiny_model  # noqa: E402

BATCH, LEARNING_RATE, SEED = 8, 1e-3, 0


def sft_records(count: int) -> list[dict]:
    return [{"id": str(i), "prompt": f"What is {i} + 7?", "target": f"The answer is {i + 7}."} for i in range(count)]


def time_engine(student, records, steps: int, batch: int, learning_rate: float) -> float:
    start = time.perf_counter()
    student.fit(records, steps=steps, batch_size=batch, learning_rate=learning_rate, seed=SEED)
    return time.perf_counter() - start


def time_trl(model, tokenizer, records, steps: int, folder: Path) -> float:
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["target"]}]} for r in records]
    start = time.perf_counter()
    args = SFTConfig(output_dir=str(folder), max_steps=steps, per_device_train_batch_size=BATCH,
                     learning_rate=LEARNING_RATE, lr_scheduler_type="linear", max_grad_norm=1.0, seed=SEED,
                     data_seed=SEED, bf16=False, fp16=False, use_cpu=True, activation_checkpointing=False,
                     report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    # the engine logs every step without printing; so does this side (the printed dicts would cost it time)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return time.perf_counter() - start


def old_hand_loop(student, records, *, steps: int, batch_size: int, learning_rate: float, seed: int) -> float:
    """The hf student's fit before the engine (kept here only to measure against): AdamW, linear decay,
    clipping at 1.0, a seeded permutation per epoch."""
    examples = student._encode_all(records, 512)
    start = time.perf_counter()
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    parameters = [p for p in student.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (steps - step) / steps))
    queue: list[int] = []
    student.model.train()
    for _ in range(steps):
        picked = []
        while len(picked) < min(batch_size, len(examples)):
            if not queue:
                queue = torch.randperm(len(examples), generator=order_generator).tolist()
            picked.append(queue.pop())
        loss, _ = student._batch_loss(student._batch([examples[i] for i in picked]))
        if not torch.isfinite(loss):
            raise RuntimeError("loss is not finite")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    student.model.eval()
    return time.perf_counter() - start


def alternate(first, second, repeats: int) -> tuple[list[float], list[float]]:
    a, b = [], []
    for round_ in range(repeats):
        if round_ % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--quickstart-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="stillroom-perf-engine-") as scratch:
        root = Path(scratch)
        os.environ.setdefault("STILLROOM_CACHE_DIR", str(root / "cache"))
        use_host(first_party_host())
        model_dir = save_tiny_model(root / "tiny")
        context = Context(cache=None)
        base = stillroom.build("student", "hf", context=context, model=str(model_dir), device="cpu")
        records = sft_records(64)

        def engine_side():
            return time_engine(base.fresh(), records, options.steps, BATCH, LEARNING_RATE)

        def trl_side():
            fresh = base.fresh()
            fresh.tokenizer.padding_side = "right"
            return time_trl(fresh.model, fresh.tokenizer, records, options.steps, root / "trl")

        engine_times, trl_times = alternate(engine_side, trl_side, options.repeats)

        data = stillroom.build("generator", "arithmetic", train_size=256, test_size=8).build_dataset()["train"]
        quick = stillroom.build("student", "quickstart", context=context, device="cpu")

        def engine_quick():
            return time_engine(quick.fresh(), data, options.quickstart_steps, 16, 1e-2)

        def loop_quick():
            fresh = quick.fresh()
            return old_hand_loop(fresh, data, steps=options.quickstart_steps, batch_size=16, learning_rate=1e-2,
                                 seed=SEED)

        engine_quick_times, loop_times = alternate(engine_quick, loop_quick, options.repeats)

    print(f"sft_steps={options.steps}")
    print(f"engine_sft_seconds={statistics.median(engine_times):.3f}")
    print(f"trl_sft_seconds={statistics.median(trl_times):.3f}")
    print(f"quickstart_steps={options.quickstart_steps}")
    print(f"engine_quickstart_seconds={statistics.median(engine_quick_times):.3f}")
    print(f"hand_loop_quickstart_seconds={statistics.median(loop_times):.3f}")
    print(f"engine_vs_hand_loop_ratio={statistics.median(engine_quick_times) / statistics.median(loop_times):.3f}")
    print(f"engine_overhead_ratio={statistics.median(engine_times) / statistics.median(trl_times):.3f}")


if __name__ == "__main__":
    main()

"""The hf plugin on tiny real models: batched generation, seeds, stops, logprobs, the call cache, and the
student's fit / save / load / fresh for causal, LoRA and encoder-decoder models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from stillroom import Context, GenerationRequest, UserError, build
from stillroom.cache import CallCache
from stillroom.testing import tiny_tokenizer

PROMPTS = ["The quick brown fox", "Question: what is 12 + 7? Answer:", "List three prime numbers",
           "a", "Explain why the sky is blue. Let's think step by step."]
RECORDS = [{"id": f"r{i}", "prompt": f"what is {i} + {i}?", "target": f"The answer is {2 * i}."} for i in range(8)]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def context(tmp_path):
    return Context(cache=CallCache(tmp_path / "calls.sqlite"), progress=False)


@pytest.fixture
def endpoint(stillroom_host, tiny_model_dir, context):
    return context.build("endpoint", "hf", model=str(tiny_model_dir))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=48, d_kv=12, d_ff=96, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-t5") / "model"
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def texts(answers):
    return [[c.text for c in completions] for completions in answers]


# -- endpoint ---------------------------------------------------------------------------------------------


def test_endpoint_identity_and_attributes(endpoint, tiny_model_dir):
    identity = endpoint.identity()
    assert identity["kind"] == "hf" and identity["model"] == str(tiny_model_dir.resolve())
    assert len(identity["fingerprint"]) == 16 and identity["dtype"] == "float32"
    assert endpoint.model is not None and endpoint.tokenizer is not None


def test_batched_greedy_equals_one_at_a_time(stillroom_host, tiny_model_dir):
    requests = [GenerationRequest(prompt=p, max_tokens=12) for p in PROMPTS]
    requests += [GenerationRequest(messages=chat(p), max_tokens=6 + i) for i, p in enumerate(PROMPTS)]
    batched = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir), batch_size=16)
    single = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir), batch_size=1)
    together = batched.generate(requests)
    alone = single.generate(requests)
    assert texts(together) == texts(alone)
    assert [c[0].completion_tokens for c in together] == [c[0].completion_tokens for c in alone]
    assert all(c[0].prompt_tokens > 0 for c in together)
    # a chat request really went through the chat template
    assert together[len(PROMPTS)][0].prompt_tokens > together[0][0].prompt_tokens - 5
    assert together[len(PROMPTS) + 3][0].completion_tokens <= 9


def test_seed_gives_the_same_sample_alone_and_in_a_batch(stillroom_host, tiny_model_dir):
    endpoint = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    seeded = GenerationRequest(prompt="Write a short poem", temperature=1.0, seed=7, max_tokens=16)
    others = [GenerationRequest(prompt=p, temperature=1.0, seed=i, max_tokens=16) for i, p in enumerate(PROMPTS)]
    alone = endpoint.generate([seeded])[0][0].text
    in_batch = endpoint.generate([*others, seeded])[-1][0].text
    assert alone == in_batch
    other_seed = endpoint.generate([seeded.model_copy(update={"seed": 8})])[0][0].text
    assert other_seed != alone  # a random tiny model at temperature 1 is far from deterministic


def test_n_samples(stillroom_host, tiny_model_dir):
    endpoint = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    sampled, greedy = endpoint.generate([
        GenerationRequest(prompt="The quick", temperature=1.0, n=4, seed=1, max_tokens=12),
        GenerationRequest(prompt="The quick", n=3, max_tokens=12),
    ])
    assert len(sampled) == 4 and len({c.text for c in sampled}) > 1
    assert len(greedy) == 3 and len({c.text for c in greedy}) == 1
    # sample k of n is the same whatever n is
    first = endpoint.generate([GenerationRequest(prompt="The quick", temperature=1.0, n=1, seed=1, max_tokens=12)])
    assert first[0][0].text == sampled[0].text


def test_top_p_tiny_keeps_only_the_top_token(stillroom_host, tiny_model_dir):
    endpoint = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    greedy = endpoint.generate([GenerationRequest(prompt="The quick", max_tokens=10)])[0][0].text
    nucleus = endpoint.generate([GenerationRequest(prompt="The quick", temperature=1.0, top_p=1e-6, seed=3,
                                                   max_tokens=10)])[0][0].text
    assert nucleus == greedy


def test_stop_strings_truncate(stillroom_host, tiny_model_dir):
    endpoint = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    full = endpoint.generate([GenerationRequest(prompt="a", temperature=1.0, seed=2, max_tokens=24)])[0][0]
    assert full.finish_reason == "length" and len(full.text) > 6
    stop = full.text[4:6]
    cut = endpoint.generate([GenerationRequest(prompt="a", temperature=1.0, seed=2, max_tokens=24, stop=[stop])])[0][0]
    assert cut.text == full.text[:full.text.find(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens


def test_logprobs(stillroom_host, tiny_model_dir):
    endpoint = build("endpoint", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    greedy, sampled = endpoint.generate([
        GenerationRequest(messages=chat("what is 12 + 7?"), max_tokens=8, logprobs=True, top_logprobs=3),
        GenerationRequest(prompt="The quick", temperature=1.0, seed=4, max_tokens=8, logprobs=True, top_logprobs=5),
    ])
    for completion, k in ((greedy[0], 3), (sampled[0], 5)):
        assert len(completion.tokens) == completion.completion_tokens == 8
        joined = "".join(t.token for t in completion.tokens)
        if "\ufffd" not in joined:  # a token can hold part of a UTF-8 character
            assert joined == completion.text
        for token in completion.tokens:
            assert token.logprob <= 0 and len(token.top) == k
            values = [lp for _, lp in token.top]
            assert values == sorted(values, reverse=True)
            assert values[0] >= token.logprob - 1e-6
            assert sum(math.exp(v) for v in values) <= 1 + 1e-5
    for token in greedy[0].tokens:  # greedy picks the most likely token
        assert token.token == token.top[0][0] and token.logprob == pytest.approx(token.top[0][1])
    plain = endpoint.generate([GenerationRequest(prompt="The quick", max_tokens=4)])[0][0]
    assert plain.tokens is None


def test_cache_second_generate_makes_no_model_call(endpoint):
    requests = [GenerationRequest(prompt=p, max_tokens=6) for p in PROMPTS[:3]]
    requests.append(GenerationRequest(prompt="The quick", temperature=1.0, seed=1, n=2, max_tokens=6))
    first = endpoint.generate(requests)
    assert endpoint.stats["requests"] == 4 and endpoint.stats["cache_hits"] == 0
    second = endpoint.generate(requests)
    assert endpoint.stats["requests"] == 4 and endpoint.stats["cache_hits"] == 4
    assert texts(first) == texts(second)


def test_missing_model_path_is_a_user_error(stillroom_host, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="no-such-model"):
        build("endpoint", "hf", model=str(missing))
    with pytest.raises(UserError, match="does not exist"):
        build("student", "hf", model="./nowhere/at/all")


def test_teacher_exposes_model_and_endpoint(stillroom_host, tiny_teacher_dir, context):
    teacher = context.build("teacher", "hf", model=str(tiny_teacher_dir))
    assert teacher.model is teacher.endpoint.model and teacher.tokenizer is teacher.endpoint.tokenizer
    # the Teacher role's white-box interface, and where the weights live (evaluators load them from there)
    assert teacher.white_box and Path(teacher.path).resolve() == Path(tiny_teacher_dir).resolve()
    answer = teacher.generate([GenerationRequest(prompt="The quick", max_tokens=5)])
    assert answer[0][0].completion_tokens == 5 and teacher.endpoint.stats["requests"] == 1
    ids = teacher.tokenizer("The quick", return_tensors="pt")
    assert teacher.model(**ids).logits.shape[-1] >= len(teacher.tokenizer)


# -- student ----------------------------------------------------------------------------------------------


def test_loss_masking_covers_prompt_tokens_only(stillroom_host, tiny_model_dir):
    student = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    ids, labels, weight = student.encode_example({"prompt": "what is 2 + 2?", "target": "4", "weight": 0.5})
    tokenizer = student.tokenizer
    prompt = tokenizer.apply_chat_template(chat("what is 2 + 2?"), tokenize=False, add_generation_prompt=True)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels) and weight == 0.5
    assert labels[:prompt_length] == [-100] * prompt_length
    assert labels[prompt_length:] == ids[prompt_length:]
    assert tokenizer.decode(labels[prompt_length:]) == "4<|im_end|>"
    # the training loss is the mean cross-entropy of the target tokens alone
    batch = student._batch([(ids, labels, 1.0)])
    loss, count = student._batch_loss(batch)
    logits = student.model(input_ids=batch[0]).logits[0]
    manual = torch.nn.functional.cross_entropy(logits[prompt_length - 1:-1], torch.tensor(ids[prompt_length:]))
    assert count == len(ids) - prompt_length and float(loss) == pytest.approx(float(manual), rel=1e-5)
    with pytest.raises(UserError, match="target"):
        student.encode_example({"prompt": "x"}, location="data.jsonl:3")


def test_fit_lowers_loss_deterministically_and_fresh_restores(stillroom_host, tiny_model_dir, context):
    student = context.build("student", "hf", model=str(tiny_model_dir))
    initial = student.endpoint.refresh_fingerprint()
    before = student.target_loss(RECORDS)
    twin = student.fresh()
    result = student.fit(RECORDS, steps=25, batch_size=4, learning_rate=5e-3, seed=0)
    after = student.target_loss(RECORDS)
    assert result["steps"] == 25 and len(result["losses"]) == 25
    assert after < before - 1.0 and result["loss"] < result["first_loss"]
    assert student.path is None  # trained weights are not on disk yet
    again = twin.fit(RECORDS, steps=25, batch_size=4, learning_rate=5e-3, seed=0)
    assert again["losses"] == result["losses"]
    restored = student.fresh()
    assert restored.endpoint.refresh_fingerprint() == initial
    assert restored.target_loss(RECORDS) == pytest.approx(before)


def test_zero_weight_records_do_not_train(stillroom_host, tiny_model_dir):
    student = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    before = student.endpoint.refresh_fingerprint()
    student.fit([{**r, "weight": 0.0} for r in RECORDS], steps=3, batch_size=4, learning_rate=1e-2, seed=0)
    assert student.endpoint.refresh_fingerprint() == before
    with pytest.raises(UserError, match="weight"):
        student.fit([{**RECORDS[0], "weight": -1}], steps=1, batch_size=1, learning_rate=1e-3, seed=0)


def test_student_generation_is_cached_per_weights(stillroom_host, tiny_model_dir, context):
    student = context.build("student", "hf", model=str(tiny_model_dir))
    requests = [GenerationRequest(messages=chat(r["prompt"]), max_tokens=8) for r in RECORDS[:3]]
    student.generate(requests)
    student.generate(requests)
    assert student.endpoint.stats["requests"] == 3 and student.endpoint.stats["cache_hits"] == 3
    student.fit(RECORDS, steps=20, batch_size=4, learning_rate=5e-3, seed=0)
    trained = student.generate(requests)
    assert student.endpoint.stats["requests"] == 6  # new weights, new cache keys
    assert any(c[0].text.startswith("The answer is") for c in trained)


def test_save_load_round_trip(stillroom_host, tiny_model_dir, tmp_path):
    student = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    student.fit(RECORDS, steps=10, batch_size=4, learning_rate=5e-3, seed=1)
    requests = [GenerationRequest(messages=chat(r["prompt"]), max_tokens=8) for r in RECORDS[:4]]
    student.save(tmp_path / "saved")
    loaded = student.load(tmp_path / "saved")
    assert loaded.path == str((tmp_path / "saved").resolve())
    assert loaded.endpoint.refresh_fingerprint() == student.endpoint.refresh_fingerprint()
    assert texts(loaded.generate(requests)) == texts(student.generate(requests))
    assert loaded.fresh().endpoint.refresh_fingerprint() == loaded.endpoint.refresh_fingerprint()
    with pytest.raises(UserError, match="missing-folder"):
        student.load(tmp_path / "missing-folder")


def test_random_init(stillroom_host, tiny_model_dir):
    pretrained = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir))
    one = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir), init="random", init_seed=3)
    two = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir), init="random", init_seed=3)
    other = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir), init="random", init_seed=4)
    fingerprints = [s.endpoint.refresh_fingerprint() for s in (pretrained, one, two, other)]
    assert fingerprints[1] == fingerprints[2] and len(set(fingerprints)) == 3
    assert one.path is None and one.fresh().endpoint.refresh_fingerprint() == fingerprints[1]


def test_lora_fit_save_load(stillroom_host, tiny_model_dir, tmp_path):
    student = build("student", "hf", context=Context(cache=None), model=str(tiny_model_dir),
                    lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"]})
    trainable = [name for name, p in student.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    before = student.target_loss(RECORDS)
    student.fit(RECORDS, steps=20, batch_size=4, learning_rate=2e-2, seed=0)
    assert student.target_loss(RECORDS) < before - 0.3
    student.save(tmp_path / "lora")
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # merged: a plain model folder
    loaded = student.load(tmp_path / "lora")
    assert loaded.target_loss(RECORDS) == pytest.approx(student.target_loss(RECORDS), abs=1e-4)
    requests = [GenerationRequest(messages=chat(r["prompt"]), max_tokens=8) for r in RECORDS[:3]]
    assert texts(loaded.generate(requests)) == texts(student.generate(requests))


def test_t5_student_fit_and_generate(stillroom_host, t5_dir, context, tmp_path):
    student = context.build("student", "hf", model=str(t5_dir))
    assert student.is_encoder_decoder
    ids, labels, _ = student.encode_example(RECORDS[0])
    assert -100 not in labels and labels[-1] == student.tokenizer.eos_token_id
    before = student.target_loss(RECORDS)
    result = student.fit(RECORDS, steps=30, batch_size=4, learning_rate=5e-3, seed=0)
    assert student.target_loss(RECORDS) < before - 1.0 and result["loss"] < result["first_loss"]
    answers = student.generate([GenerationRequest(messages=chat(r["prompt"]), max_tokens=8, logprobs=True,
                                                  top_logprobs=2) for r in RECORDS[:3]])
    assert any(a[0].text.startswith("The answer") for a in answers)
    assert all(len(a[0].tokens) == a[0].completion_tokens - (a[0].finish_reason == "stop") for a in answers)
    student.save(tmp_path / "t5")
    loaded = student.load(tmp_path / "t5")
    assert loaded.is_encoder_decoder and loaded.target_loss(RECORDS) == pytest.approx(student.target_loss(RECORDS))

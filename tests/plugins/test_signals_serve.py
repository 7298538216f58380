"""Prompt scoring on every teacher: `stillroom serve` answers echo + logprobs and vLLM's prompt_logprobs, the
openai endpoint requests them, and both equal an in-process forward pass."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest

from stillroom import Context, build
from stillroom.testing import served_model

TEXT = "Question: what is 12 + 7? Answer: 19."


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-scoring")
    with served_model(tiny_model_dir, home=home, log=home / "server.log", name="tiny", device="cpu",
                      dtype="float32") as url:
        yield url


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    """The same model in process, float32 (what the server must match)."""
    return build("endpoint", "hf", context=Context(cache=None, progress=False), model=str(tiny_model_dir),
                 dtype="float32", device="cpu")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def forward_logprobs(endpoint, ids):
    import torch

    with torch.no_grad():
        logits = endpoint.model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, -1)


def test_echo_logprobs_equal_an_in_process_forward_pass(server, local):
    answer = post(server, {"model": "tiny", "prompt": TEXT, "echo": True, "logprobs": 5, "max_tokens": 0})
    choice = answer["choices"][0]
    logprobs = choice["logprobs"]
    ids = local.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(logprobs["tokens"]) == len(ids) > 5
    assert choice["text"] == TEXT and "".join(logprobs["tokens"]) == TEXT
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["text_offset"][:3] == [0, len(logprobs["tokens"][0]),
                                           len(logprobs["tokens"][0]) + len(logprobs["tokens"][1])]
    full = forward_logprobs(local, ids)
    for position in range(1, len(ids)):
        expected = float(full[position - 1, ids[position]])
        assert math.isclose(logprobs["token_logprobs"][position], expected, abs_tol=1e-4)
        top_values, top_ids = full[position - 1].topk(5)
        expected_top: dict[str, float] = {}
        for value, token in zip(top_values.tolist(), top_ids.tolist()):
            # the legacy layout keys alternatives by text: two byte pieces decoding alike keep the likelier
            expected_top.setdefault(local.tokenizer.decode([token]), value)
        got = logprobs["top_logprobs"][position]
        assert got.keys() == expected_top.keys()
        for text, value in expected_top.items():
            assert math.isclose(got[text], value, abs_tol=1e-4)
    assert answer["usage"]["prompt_tokens"] == len(ids) and answer["usage"]["completion_tokens"] == 0


def test_prompt_logprobs_in_vllm_layout(server, local):
    ids = local.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    answer = post(server, {"model": "tiny", "prompt": ids, "max_tokens": 1, "prompt_logprobs": 3})
    entries = answer["choices"][0]["prompt_logprobs"]
    assert entries[0] is None and len(entries) == len(ids)
    full = forward_logprobs(local, ids)
    for position in range(1, len(ids)):
        entry = entries[position]
        own = entry[str(ids[position])]  # the prompt's own token is always there, with its true rank
        assert math.isclose(own["logprob"], float(full[position - 1, ids[position]]), abs_tol=1e-4)
        assert own["rank"] == int((full[position - 1] > full[position - 1, ids[position]]).sum()) + 1
        ranked = sorted(entry.values(), key=lambda e: e["rank"])
        assert [e["rank"] for e in ranked[:3]] == [1, 2, 3] and len(entry) in (3, 4)
    # a generated token came back too (vLLM clients score with max_tokens=1)
    assert answer["usage"]["completion_tokens"] == 1


def test_openai_endpoint_scores_through_prompt_logprobs(server, local):
    import numpy as np

    api = build("endpoint", "openai", context=Context(cache=None, progress=False), base_url=server + "/v1",
                model="tiny")
    assert api.can_score and local.can_score
    sequences = [local.tokenizer(t, add_special_tokens=False)["input_ids"] for t in (TEXT, "List three prime numbers")]
    served = api.score(sequences, 8)
    in_process = local.score(sequences, 8)
    for (si, sv), (li, lv), ids in zip(served, in_process, sequences):
        assert si.shape == li.shape == (len(ids), 8)
        assert (si[0] == -1).all() and np.isneginf(sv[0]).all()
        np.testing.assert_array_equal(si[1:], li[1:])
        np.testing.assert_allclose(sv[1:], lv[1:], atol=1e-4)
    assert api.stats["requests"] == 2 and api.stats["prompt_tokens"] == sum(len(s) for s in sequences)


def test_openai_echo_scores_and_a_server_without_scoring(server, servers):
    from stillroom import UserError
    from stillroom.plugins.openai.scoring import echo_scores

    api = build("endpoint", "openai", context=Context(cache=None, progress=False), base_url=server + "/v1",
                model="tiny")
    [scored] = echo_scores(api, [TEXT], 3)
    assert scored["token_logprobs"][0] is None and len(scored["top_logprobs"][1]) == 3
    # a plain OpenAI-compatible server that ignores prompt_logprobs: a clear error, not empty signals
    plain = servers()
    other = build("endpoint", "openai", context=Context(cache=None, progress=False), base_url=plain.base_url,
                  model="m", max_retries=0)
    with pytest.raises(UserError, match="prompt_logprobs"):
        other.score([[1, 2, 3]], 4)


def test_a_served_teacher_fills_the_store_like_the_in_process_one(server, local, tiny_model_dir, tmp_path,
                                                                  stillroom_env):
    import numpy as np

    from stillroom.signals import SignalStore, teacher_signals

    api_teacher = build("teacher", "api", context=Context(cache=None, progress=False), base_url=server + "/v1",
                        model="tiny")
    hf_teacher = build("teacher", "hf", context=Context(cache=None, progress=False), model=str(tiny_model_dir),
                       dtype="float32", device="cpu")
    ids = local.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    sequences = [(ids, [i >= 4 for i in range(len(ids))]), (ids[:9], [i >= 2 for i in range(9)])]
    store = SignalStore(tmp_path / "signals")
    served, served_signals = teacher_signals(api_teacher, local.tokenizer, sequences, 6, store=store)
    again, _ = teacher_signals(api_teacher, local.tokenizer, sequences, 6, store=store)
    local_capture, local_signals = teacher_signals(hf_teacher, local.tokenizer, sequences, 6, store=store)
    assert served.key != local_capture.key  # the teacher's identity is part of the key
    assert served.teacher_forward_tokens == len(ids) + 9 and again.teacher_forward_tokens == 0
    assert api_teacher.endpoint.stats["requests"] == 2  # the second capture sent nothing
    for (si, sv), (li, lv) in zip(served_signals, local_signals):
        np.testing.assert_array_equal(si, li)
        np.testing.assert_allclose(sv, lv, atol=0.02)  # both went through the 8-bit codec

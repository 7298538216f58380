"""`stillroom serve` as a real subprocess on loopback, spoken to with the real `openai` SDK."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stillroom.testing import served_model


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-env")
    with served_model(tiny_model_dir, home=home, log=home / "server.log", max_batch=16, batch_wait_ms=50,
                      name="tiny") as base:
        yield base


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def stats(server) -> dict:
    return httpx.get(f"{server}/stats").json()


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_chat_completion(client):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "what is 12 + 7?"}],
                                           temperature=0, max_tokens=6)
    choice = reply.choices[0]
    assert isinstance(choice.message.content, str) and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and reply.usage.completion_tokens <= 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "what is 12 + 7?"}],
                                           temperature=0, max_tokens=6)
    assert again.choices[0].message.content == choice.message.content


def test_text_completion_with_logprobs(client):
    reply = client.completions.create(model="tiny", prompt=["The quick brown", "List three"], max_tokens=5,
                                      temperature=0, logprobs=3)
    assert [c.index for c in reply.choices] == [0, 1]
    for choice in reply.choices:
        assert choice.finish_reason == "length" and len(choice.logprobs.tokens) == 5
        assert len(choice.logprobs.token_logprobs) == 5 and all(lp <= 0 for lp in choice.logprobs.token_logprobs)
        assert all(len(top) <= 3 for top in choice.logprobs.top_logprobs)
        assert choice.logprobs.text_offset[0] == 0


def test_chat_n_seed_and_logprobs(client):
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    first = client.chat.completions.create(model="tiny", messages=messages, n=3, temperature=1.0, seed=11,
                                           max_tokens=10, logprobs=True, top_logprobs=4)
    second = client.chat.completions.create(model="tiny", messages=messages, n=3, temperature=1.0, seed=11,
                                            max_tokens=10)
    texts = [c.message.content for c in first.choices]
    assert len(texts) == 3 and len(set(texts)) > 1
    assert [c.message.content for c in second.choices] == texts
    for choice in first.choices:
        content = choice.logprobs.content
        assert len(content) == 10 or choice.finish_reason == "stop"
        for token in content:
            assert len(token.top_logprobs) == 4
            assert token.top_logprobs[0].logprob >= token.logprob - 1e-6
            assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs),
                                                                     reverse=True)


def test_stop_and_bad_request(client):
    import openai

    full = client.completions.create(model="tiny", prompt="a", max_tokens=12, temperature=1.0, seed=5)
    text = full.choices[0].text
    cut = client.completions.create(model="tiny", prompt="a", max_tokens=12, temperature=1.0, seed=5, stop=[text[3:5]])
    assert cut.choices[0].text == text[:text.find(text[3:5])] and cut.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=0)


def test_concurrent_requests_are_batched(server):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    before = stats(server)

    async def fire():
        return await asyncio.gather(*[
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"what is {i} + 7?"}],
                                           temperature=0, max_tokens=8)
            for i in range(8)])

    replies = asyncio.run(fire())
    after = stats(server)
    assert len(replies) == 8 and all(r.choices[0].message.content is not None for r in replies)
    assert after["requests"] - before["requests"] == 8
    assert after["batches"] - before["batches"] < 8

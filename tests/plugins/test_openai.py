"""The openai endpoint and api teacher against real loopback servers: the fault-injection server, and
`stillroom serve` over a tiny model when the hf plugin provides it."""

from __future__ import annotations

import asyncio
import time

import pytest

import stillroom
from stillroom import BudgetExceeded, Context, GenerationRequest, UserError
from stillroom.plugins.openai.backoff import parse_retry_after
from stillroom.testing import served_model

SENTINEL = "sk-SENTINEL-do-not-leak-4f2b9c"


def chat(text: str, **options) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], **options)


def endpoint(server, context=None, **options):
    options.setdefault("backoff_base", 0.01)
    return stillroom.build("endpoint", "openai", context=context, base_url=server.base_url, model="tiny", **options)


def texts(answers):
    return [[c.text for c in completions] for completions in answers]


def test_chat_and_text_completions(stillroom_host, clean):
    server = clean
    api = endpoint(server)
    assert api.identity() == {"kind": "openai", "base_url": server.base_url, "model": "tiny"}
    [samples] = api.generate([chat("why is the sky blue", n=2, logprobs=True, top_logprobs=3)])
    assert [s.text for s in samples] == ["echo: why is the sky blue", "echo: why is the sky blue #1"]
    first = samples[0]
    assert first.finish_reason == "stop"
    assert [t.token for t in first.tokens] == ["echo:", " why", " is", " the", " sky", " blue"]
    assert len(first.tokens[0].top) == 3 and first.tokens[0].top[0][0] == "echo:"
    assert first.tokens[0].logprob == first.tokens[0].top[0][1] > first.tokens[0].top[1][1]
    # prompt tokens once per request, completion tokens per sample
    assert (first.prompt_tokens, samples[1].prompt_tokens) == (5, 0)
    assert (first.completion_tokens, samples[1].completion_tokens) == (6, 7)

    [[raw]] = api.generate([GenerationRequest(prompt="one two three", max_tokens=2, logprobs=True, top_logprobs=2)])
    assert raw.text == "echo: one" and raw.finish_reason == "length"
    assert [t.token for t in raw.tokens] == ["echo:", " one"] and len(raw.tokens[1].top) == 2
    [[stopped]] = api.generate([chat("a b c d", stop=[" c"])])
    assert stopped.text == "echo: a b" and stopped.tokens is None
    assert server.stats()["by_path"] == {"/v1/chat/completions": 2, "/v1/completions": 1}
    assert api.stats["requests"] == 3 and api.stats["retries"] == 0


def test_concurrency_is_bounded(stillroom_host, servers):
    server = servers(delay_ms=60)
    api = endpoint(server, Context(cache=None), concurrency=4)
    answers = api.generate([chat(f"question {i}") for i in range(24)])
    assert texts(answers) == [[f"echo: question {i}"] for i in range(24)]
    stats = server.stats()
    assert stats["requests"] == 24
    assert stats["max_in_flight"] == 4  # never more than the limit, and the limit is used


def test_async_caller_gets_answers(stillroom_host, clean):
    """generate() called from inside a running event loop (a notebook, an async app) still works."""
    server = clean
    api = endpoint(server, Context(cache=None))

    async def inside_a_loop():
        return api.generate([chat("from a loop")])

    assert texts(asyncio.run(inside_a_loop())) == [["echo: from a loop"]]


def test_retries_under_faults_give_the_fault_free_answers(stillroom_host, servers, clean):
    rates = {"rate_429": 0.06, "rate_500": 0.06, "rate_slow": 0.04, "rate_drop": 0.06, "rate_truncated": 0.06,
             "rate_garbage": 0.06}
    faulty = servers(seed=7, retry_after="0", slow_ms=3000, **rates)
    requests = [chat(f"prompt number {i}", n=1 + i % 2) for i in range(48)]
    requests += [GenerationRequest(prompt=f"raw {i}", logprobs=True, top_logprobs=1) for i in range(12)]
    expected = endpoint(clean, Context(cache=None)).generate(requests)
    api = endpoint(faulty, Context(cache=None), concurrency=8, timeout=1.0)
    got = api.generate(requests)
    assert [[c.model_dump() for c in a] for a in got] == [[c.model_dump() for c in a] for a in expected]
    faults = faulty.stats()["faults"]
    assert all(faults[kind] > 0 for kind in ("429", "500", "slow", "drop", "truncated", "garbage")), faults
    # one retry per injected fault (more only if a healthy answer was slower than the timeout)
    assert api.stats["retries"] >= sum(faults.values()) > 0
    assert api.stats["failures"] == 0


def test_retry_after_is_honoured(stillroom_host, servers):
    server = servers(first_fault="429", retry_after="1")
    api = endpoint(server, Context(cache=None), backoff_base=0.001)
    started = time.perf_counter()
    assert texts(api.generate([chat("wait for it")])) == [["echo: wait for it"]]
    assert time.perf_counter() - started >= 1.0
    assert api.stats["retries"] == 1 and server.stats()["requests"] == 2


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_exhausted_retries_name_the_endpoint_not_the_key(stillroom_host, servers, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    server = servers(rate_500=1.0)
    api = endpoint(server, Context(cache=None), max_retries=2, backoff_base=0.001)
    with pytest.raises(UserError) as caught:
        api.generate([chat("doomed question")])
    message = str(caught.value)
    assert server.base_url in message and "tiny" in message and "'doomed question'" in message
    assert "after 2 retries" in message and "internal error" in message
    assert SENTINEL not in message
    assert server.stats()["requests"] == 3


def test_refused_request_is_not_retried_and_the_echoed_key_is_redacted(stillroom_host, servers, monkeypatch):
    monkeypatch.setenv("MY_KEY", SENTINEL)
    server = servers(require_key="the-right-key")
    api = endpoint(server, Context(cache=None), api_key_env="MY_KEY")
    with pytest.raises(UserError) as caught:
        api.generate([chat("hello")])
    message = str(caught.value)
    assert "HTTP 401" in message and "[redacted]" in message and SENTINEL not in message
    assert server.stats()["requests"] == 1
    monkeypatch.setenv("MY_KEY", "the-right-key")  # read at call time: fixing the variable fixes the endpoint
    assert texts(api.generate([chat("hello")])) == [["echo: hello"]]
    assert "the-right-key" not in repr(api.identity()) + repr(api.config.model_dump())


def test_remote_endpoint_needs_its_key(stillroom_host, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    api = stillroom.build("endpoint", "openai", base_url="https://api.example.invalid/v1", model="m",
                          api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(UserError, match="NO_SUCH_KEY_VAR is not set"):
        api.generate([chat("hi")])


def test_call_budget_stops_before_exceeding_and_keeps_what_finished(stillroom_host, clean):
    server = clean
    requests = [chat(f"q {i}") for i in range(12)]
    api = endpoint(server, concurrency=2, budget_calls=5)
    with pytest.raises(BudgetExceeded, match="budget_calls = 5"):
        api.generate(requests)
    assert server.stats()["requests"] == 5
    # the five answers were cached: a bigger budget pays only for the other seven
    more = endpoint(server, concurrency=2, budget_calls=7)
    assert texts(more.generate(requests)) == [[f"echo: q {i}"] for i in range(12)]
    assert server.stats()["requests"] == 12 and more.stats["cache_hits"] == 5


def test_cost_accounting_and_cost_budget(stillroom_host, clean):
    server = clean
    prices = {"prompt": 2.0, "completion": 4.0}
    api = endpoint(server, Context(cache=None), prices=prices)
    api.generate([chat("one two three", n=2), GenerationRequest(prompt="four five")])
    # usage: 3 prompt + (4 + 5) completion tokens, then 2 prompt + 3 completion tokens
    assert api.stats["prompt_tokens"] == 5 and api.stats["completion_tokens"] == 12
    assert api.stats["cost"] == pytest.approx((5 * 2.0 + 12 * 4.0) / 1e6)

    # worst case of "q N": (3 bytes + 8) prompt at $2 + 10 completion at $4 = $62e-6; each really costs
    # 2 * $2 + 3 * $4 = $16e-6, so after k answers the next is refused once 16k + 62 > 150: after 6
    capped = endpoint(server, Context(cache=None), prices=prices, budget_cost=150e-6, concurrency=1)
    server.reset()
    with pytest.raises(BudgetExceeded, match="budget_cost"):
        capped.generate([chat(f"q {i}", max_tokens=10) for i in range(20)])
    assert server.stats()["requests"] == 6
    assert capped.stats["cost"] == pytest.approx(6 * 16e-6) and capped.stats["cost"] <= 150e-6


def test_budget_cost_needs_prices(stillroom_host):
    with pytest.raises(UserError, match=r"budget_cost: needs a price table"):
        stillroom.build("endpoint", "openai", model="m", budget_cost=1.0)


def test_second_identical_generate_sends_nothing(stillroom_host, clean):
    server = clean
    requests = [chat(f"cached {i}", n=2, temperature=0.7, seed=1) for i in range(6)]
    first = endpoint(server).generate(requests)
    again = endpoint(server)  # a new endpoint object, same identity, same cache
    assert texts(again.generate(requests)) == texts(first)
    assert server.stats()["requests"] == 6 and again.stats["cache_hits"] == 6


def test_api_teacher_by_name_or_inline(stillroom_host, clean):
    server = clean
    named = endpoint(server)
    context = Context(endpoints={"gpt": named})
    teacher = stillroom.build("teacher", "api", context=context, endpoint="gpt")
    assert teacher.endpoint is named
    assert texts(teacher.generate([chat("teach me")])) == [["echo: teach me"]]
    inline = stillroom.build("teacher", "api", base_url=server.base_url, model="tiny", concurrency=3)
    assert inline.endpoint.identity() == named.identity() and inline.endpoint.config.concurrency == 3
    assert texts(inline.generate([chat("teach me")])) == [["echo: teach me"]]
    assert server.stats()["requests"] == 1  # same identity: the inline teacher hit the cache
    with pytest.raises(UserError, match="not both"):
        stillroom.build("teacher", "api", context=context, endpoint="gpt", model="tiny")
    with pytest.raises(UserError, match="give endpoint"):
        stillroom.build("teacher", "api")
    with pytest.raises(UserError, match="no endpoint named 'gtp'.*did you mean 'gpt'"):
        stillroom.build("teacher", "api", context=context, endpoint="gtp")


def test_api_teacher_endpoint_is_a_spec_reference(stillroom_host):
    """Specs check `endpoint` against their [endpoints] table because the field is an EndpointRef."""
    from stillroom.specs import ENDPOINT_REF

    config = stillroom_host.component("teacher", "api").Config
    assert config.model_fields["endpoint"].json_schema_extra[ENDPOINT_REF] is True
    assert all(info.description for info in config.model_fields.values())


# ---------------------------------------------------------------------------------------------------------
# End to end with `stillroom serve` (the hf plugin's OpenAI-compatible server over a real tiny model).


def _has_serve() -> bool:
    try:
        import stillroom.plugins.hf.serve  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def served_tiny_model(request, tmp_path):
    """(base_url, model path) of `stillroom serve` running over the tiny model in a subprocess."""
    if not _has_serve():
        pytest.skip("the hf plugin's `stillroom serve` is not available")
    tiny_model_dir = request.getfixturevalue("tiny_model_dir")
    with served_model(tiny_model_dir, log=tmp_path / "serve.log",
                      env={"STILLROOM_DISABLE_PLUGINS": None, "STILLROOM_PLUGINS": "hf"}) as url:
        yield url + "/v1", tiny_model_dir


@pytest.mark.slow
def test_end_to_end_with_stillroom_serve(stillroom_host, served_tiny_model):
    base_url, model_dir = served_tiny_model
    api = stillroom.build("endpoint", "openai", base_url=base_url, model=str(model_dir),
                          context=Context(cache=None), concurrency=2, timeout=60)
    [samples] = api.generate([chat("Question: what is 12 + 7?", n=3, max_tokens=6, temperature=1.0, seed=1,
                                   logprobs=True, top_logprobs=3)])
    assert len(samples) == 3
    for sample in samples:
        assert isinstance(sample.text, str) and sample.tokens
        assert 1 <= len(sample.tokens) <= 6
        for token in sample.tokens:
            assert token.logprob <= 0.0 and len(token.top) == 3
            assert [lp for _, lp in token.top] == sorted((lp for _, lp in token.top), reverse=True)
    greedy = api.generate([chat("Write a short poem about the sea.", max_tokens=5)] * 2)
    assert greedy[0][0].text == greedy[1][0].text  # temperature 0 is deterministic
    assert api.stats["prompt_tokens"] > 0 and api.stats["completion_tokens"] > 0

"""Options of the ``openai`` endpoint and the ``api`` teacher. No secret is ever a config value: the API key
is named by the environment variable that holds it. A ``base_url`` may carry ``user:password@`` for a proxy
that wants them: they are sent, but never serialised (a run's spec.json, events) nor shown."""

from __future__ import annotations

from typing import Any

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_serializer, field_validator,
                      model_validator)

from stillroom import ComponentConfig, EndpointRef
from stillroom.cache import redact_credentials, without_credentials

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class Prices(BaseModel):
    """What the provider charges, in dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")
    prompt: float = Field(..., ge=0, description="dollars per 1M prompt (input) tokens")
    completion: float = Field(..., ge=0, description="dollars per 1M completion (output) tokens")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


class OpenAIEndpointConfig(ComponentConfig):
    """Options of an OpenAI-compatible endpoint."""

    base_url: str = Field(DEFAULT_BASE_URL, description="API root including /v1, e.g. http://127.0.0.1:8000/v1 "
                                                        "for a local vLLM or `stillroom serve`")
    model: str = Field(..., min_length=1, description="model name sent with every request")
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1,
                             description="environment variable holding the API key, read at call time and never "
                                         "stored; a loopback base_url works without it")
    concurrency: int = Field(16, ge=1, le=1024, description="most requests in flight at once; the pool keeps this "
                                                            "many in flight while work remains")
    adaptive_concurrency: bool = Field(True, description="on a 429 or a spent rate-limit quota cut the requests "
                                                         "in flight by a quarter, then add about one per round of "
                                                         "successes, up to concurrency (AIMD)")
    requests_per_minute: float | None = Field(None, gt=0, description="send at most this many requests per minute, "
                                                                      "evenly spaced (a provider's published quota)")
    tokens_per_minute: float | None = Field(None, gt=0, description="send at most this many tokens per minute "
                                                                    "(prompt bytes / 4 + max_tokens * n per request, "
                                                                    "evenly spaced)")
    max_retries: int = Field(6, ge=0, le=100, description="retries of one request after 429s, 5xx errors, timeouts, "
                                                          "dropped connections or malformed answers")
    timeout: float = Field(120.0, gt=0, description="seconds to wait for one answer before retrying")
    backoff_base: float = Field(0.5, ge=0, description="seconds; retry k waits a random time up to "
                                                      "backoff_base * 2**k (full jitter), or Retry-After if longer")
    backoff_max: float = Field(30.0, ge=0, description="seconds; cap on the jittered backoff (a server's "
                                                      "Retry-After is honoured even when longer)")
    prices: Prices | None = Field(None, description="price table {prompt, completion} in $ per 1M tokens, "
                                                    "for cost accounting and budget_cost")
    budget_calls: int | None = Field(None, ge=0, description="most API requests this endpoint may send (cache hits "
                                                             "are free); the run stops before exceeding it")
    budget_cost: float | None = Field(None, ge=0, description="most dollars this endpoint may spend; a request is "
                                                              "refused when its worst case (max_tokens * n) would "
                                                              "exceed it; needs prices")

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {redact_credentials(value)!r})")
        return value

    @field_serializer("base_url", when_used="json")
    def _no_credentials(self, value: str) -> str:
        return without_credentials(value)

    @field_validator("budget_cost")
    @classmethod
    def _priced(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("prices") is None:
            raise ValueError("needs a price table: prices = {prompt = ..., completion = ...} ($ per 1M tokens)")
        return value


def _inline_fields() -> dict[str, Any]:
    """The endpoint's options, each optional, for a teacher that defines its endpoint inline."""
    fields: dict[str, Any] = {}
    for name, info in OpenAIEndpointConfig.model_fields.items():
        fields[name] = (info.annotation | None, Field(None, description=f"inline endpoint: {info.description}"))
    return fields


class _TeacherBase(ComponentConfig):
    endpoint: EndpointRef = Field(None, description="name of an endpoint in the spec's [endpoints] table; "
                                                    "or leave it out and give base_url/model inline")

    @model_validator(mode="after")
    def _one_source(self):
        inline = {name: getattr(self, name) for name in OpenAIEndpointConfig.model_fields
                  if getattr(self, name, None) is not None}
        if self.endpoint is not None and inline:
            raise ValueError(f"give either endpoint = {self.endpoint!r} or inline options, not both "
                             f"(also set: {', '.join(sorted(inline))})")
        if self.endpoint is None and "model" not in inline:
            raise ValueError("give endpoint = '<name of a spec endpoint>' or an inline model (and base_url)")
        if self.endpoint is None:
            OpenAIEndpointConfig.model_validate(inline)
        return self

    @field_serializer("base_url", when_used="json", check_fields=False)
    def _no_credentials(self, value: str | None) -> str | None:
        return without_credentials(value) if value is not None else None

    def inline(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OpenAIEndpointConfig.model_fields
                if getattr(self, name, None) is not None}


ApiTeacherConfig = create_model("ApiTeacherConfig", __base__=_TeacherBase,
                                __doc__="Options of the api teacher: a spec endpoint by name, or an inline one.",
                                **_inline_fields())

"""The ``lion_llm`` instruction generator: any endpoint writes a new instruction from one seed instruction.

As in Lion: one seed per request, the hard prompt ("same domain and the same task type") or the easy prompt
("same domain, but rarer"), assembled as prompt + "\\n" + seed + "\\n\\n" + marker, sampled at temperature 1.0
with max_tokens = 4 x the seed's word count, and the original post-filters on the reply. Every request carries
a distinct sampling seed, so repeated draws from one seed are distinct cache entries and a resumed run gets
the same draws back from the call cache.

An instruction generator for the lion method implements ``stillroom.InstructionWriter`` (``propose(asks)``, one
candidate per ask; ``rejects(candidate, avoid)``, its post-filters; ``avoid_keys(records)``);
``arithmetic_variations`` (module ``arithmetic``) is the offline one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from stillroom import (ComponentConfig, Dataset, Endpoint, EndpointRef, GenerationRequest, Generator,
                       InstructionWriter, UserError)

from .pools import lion_post_filter, normalise
from .prompts import generator_prompts


def draw_seed(key: str) -> int:
    """A request sampling seed from a draw key (stable across runs and processes)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


class LionLLMInstructions(Generator, InstructionWriter):
    """Asks an endpoint for new instructions from hard or easy seed instructions (Lion's generator role)."""

    name = "lion_llm"

    class Config(ComponentConfig):
        endpoint: EndpointRef = Field(..., description="the spec endpoint that writes the new instructions")
        prompts: str | None = Field(None, description="a prompts JSON with a 'generator' section (system, "
                                                      "hard_prompt, easy_prompt, created_marker), or a folder holding "
                                                      "prompts.json; relative paths are also looked up in the data "
                                                      "mirror, so 'lion/prompts.json' loads the original Lion texts; "
                                                      "default: stillroom's own texts")
        system_prompt: str | None = Field(None, description="system message (text, or @path); overrides the file's")
        hard_prompt: str | None = Field(None, description="prompt for hard seeds (text, or @path, e.g. "
                                                          "'@lion/prompt_hard.txt'); overrides the file's")
        easy_prompt: str | None = Field(None, description="prompt for easy seeds (text, or @path); overrides the file's")
        created_marker: str | None = Field(None, description="the line after which the model writes its instruction; "
                                                             "default: the file's, else Lion's '#Created Instruction#:'")
        temperature: float = Field(1.0, ge=0, description="sampling temperature (Lion: 1.0)")
        top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (Lion: 1.0)")
        tokens_per_word: float = Field(4.0, gt=0, description="max_tokens = this x the seed's word count (Lion: 4)")
        min_tokens: int = Field(16, ge=1, description="floor of max_tokens for very short seeds")
        max_tokens: int | None = Field(None, ge=1, description="a fixed max_tokens instead of the per-seed rule")
        post_filters: bool = Field(True, description="apply Lion's post-filters (mentions 'instruction', cut off at "
                                                     "max_tokens, 3 words or fewer, starts with punctuation or a "
                                                     "non-ASCII character)")

    def __init__(self, config=None, context=None, *, endpoint: Endpoint | None = None):
        super().__init__(config, context)
        cfg = self.config
        self._endpoint = endpoint
        self.prompts = generator_prompts(cfg.prompts, cfg.system_prompt, cfg.hard_prompt, cfg.easy_prompt,
                                         cfg.created_marker, self.context, "generator[lion_llm]")

    def build_dataset(self) -> Dataset:
        raise UserError("lion_llm writes new instructions from seeds inside the lion method; it cannot be a "
                        "spec's [data]", "data.kind")

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            self._endpoint = self.context.endpoint(self.config.endpoint, "generator[lion_llm].endpoint")
        return self._endpoint

    def writer_endpoint(self) -> Endpoint:
        return self.endpoint

    def request(self, seed_instruction: str, mode: str, key: str) -> GenerationRequest:
        cfg = self.config
        budget = cfg.max_tokens or max(cfg.min_tokens, int(cfg.tokens_per_word * len(seed_instruction.split())))
        messages = [{"role": "system", "content": self.prompts.system}] if self.prompts.system else []
        messages.append({"role": "user", "content": self.prompts.user_message(mode, seed_instruction)})
        return GenerationRequest(messages=messages, temperature=cfg.temperature, top_p=cfg.top_p,
                                 max_tokens=budget, seed=draw_seed(key))

    def clean(self, text: str) -> str:
        """The reply without surrounding whitespace or an echoed marker."""
        text = text.strip()
        marker = self.prompts.marker.strip()
        if marker and text.startswith(marker):
            text = text[len(marker):].strip()
        return text

    def propose(self, asks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One candidate per ask ``{"seed": pool record, "mode": "hard"|"easy", "key": unique draw key}``."""
        requests = [self.request(str(ask["seed"]["prompt"]), ask["mode"], str(ask["key"])) for ask in asks]
        answers = self.endpoint.generate(requests, description="lion instruction generation")
        out = []
        for ask, completions in zip(asks, answers):
            completion = completions[0] if completions else None
            out.append({"prompt": self.clean(completion.text) if completion else "",
                        "finish_reason": completion.finish_reason if completion else None,
                        "seed_id": ask["seed"].get("id"), "seed_prompt": ask["seed"]["prompt"], "mode": ask["mode"]})
        return out

    def rejects(self, candidate: dict[str, Any], avoid: set[str]) -> str | None:
        """Lion's post-filters, then: the instruction is a held-out (test) instruction."""
        text = candidate["prompt"]
        if not text:
            return "empty"
        if self.config.post_filters:
            reason = lion_post_filter(text, candidate.get("finish_reason"))
            if reason:
                return reason
        if normalise(text) in avoid:
            return "a test-split instruction"
        return None

    def avoid_keys(self, records: list[dict[str, Any]]) -> set[str]:
        return {normalise(str(row.get("prompt", ""))) for row in records}

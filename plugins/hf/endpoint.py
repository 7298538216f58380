"""The hf endpoint (an in-process transformers model behind the call cache) and the hf teacher over it."""

from __future__ import annotations

from typing import Any, Callable

from stillroom import Completion, Endpoint, GenerationRequest, Teacher

from stillroom.plugins.hf import generation
from stillroom.plugins.hf.config import EndpointOptions
from stillroom.plugins.hf.loading import (load_config, load_model, load_tokenizer, resolve_device, resolve_dtype,
                                          small_model_threads, weights_fingerprint)


class HFEndpoint(Endpoint):
    """Generates with a transformers model loaded in this process: batched, chat-templated, with logprobs."""

    name = "hf"

    class Config(EndpointOptions):
        pass

    def __init__(self, config=None, context=None, *, model=None, tokenizer=None, source: str | None = None,
                 location: str = "endpoint.model"):
        """Load ``config.model``; or wrap an already loaded ``model`` and ``tokenizer`` (the student does,
        to generate with its current weights)."""
        super().__init__(config, context)
        options = self.config
        if model is None:
            source, model_config = load_config(options.model, trust_remote_code=options.trust_remote_code,
                                               location=location)
            device = resolve_device(options.device)
            model = load_model(source, model_config, dtype=resolve_dtype(options.dtype, device), device=device,
                               trust_remote_code=options.trust_remote_code, location=location)
            tokenizer = load_tokenizer(source, trust_remote_code=options.trust_remote_code, location=location)
        self.model = model
        self.tokenizer = tokenizer
        self.source = source or options.model
        self.is_encoder_decoder: bool = bool(getattr(model.config, "is_encoder_decoder", False))
        self._fingerprint: str | None = None

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def refresh_fingerprint(self) -> str:
        """Re-hash the weights (after training them in place)."""
        self._fingerprint = weights_fingerprint(self.model, self.tokenizer)
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self.refresh_fingerprint()
        dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        return {"kind": "hf", "model": self.source, "fingerprint": self._fingerprint, "dtype": dtype}

    def generate(self, requests: list[GenerationRequest], *, description: str | None = None) -> list[list[Completion]]:
        # Weights may have been trained in place since the last call (methods train `.model` directly), so
        # the cache key is re-fingerprinted once per call; it costs one pass of sums over the weights.
        self.refresh_fingerprint()
        return super().generate(requests, description=description)

    def _generate(self, requests: list[GenerationRequest],
                  cancelled: Callable[[int], bool] | None = None) -> list[list[Completion]]:
        """``cancelled(index)`` (`stillroom serve`): request ``index`` has nobody waiting; see generation.generate."""
        was_training = self.model.training
        self.model.eval()
        try:
            with small_model_threads(self.model):
                return generation.generate(self.model, self.tokenizer, requests, batch_size=self.batch_size,
                                           is_encoder_decoder=self.is_encoder_decoder, cancelled=cancelled)
        finally:
            if was_training:
                self.model.train()


    can_score = True

    def score(self, sequences: list[list[int]], top_k: int):
        """Prompt scoring in process, batched (``batch_size`` sequences per forward pass)."""
        return self.score_tokens(sequences, top_k, chosen=False)

    def score_tokens(self, sequences: list[list[int]], top_k: int, *, chosen: bool = True):
        """:meth:`score`, plus (``chosen``) each position's own token log-prob and rank (what serve echoes)."""
        from stillroom import UserError

        if self.is_encoder_decoder:
            raise UserError("prompt scoring needs a causal language model; this one is encoder-decoder",
                            f"endpoint hf {self.source}")
        was_training = self.model.training
        self.model.eval()
        pad = getattr(self.tokenizer, "pad_token_id", None)
        try:
            with small_model_threads(self.model):
                return generation.score_sequences(self.model, sequences, top_k, batch_size=self.batch_size,
                                                  pad_id=pad if pad is not None else 0, chosen=chosen)
        finally:
            if was_training:
                self.model.train()


class HFTeacher(Teacher):
    """A white-box teacher: a transformers model that generates through the hf endpoint and exposes its
    model and tokenizer for full logits."""

    name = "hf"

    class Config(EndpointOptions):
        pass

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.endpoint = HFEndpoint(HFEndpoint.Config(**self.config.model_dump()), self.context,
                                   location="teacher.model")
        self.model = self.endpoint.model
        self.tokenizer = self.endpoint.tokenizer
        self.path = self.endpoint.source
        self.is_encoder_decoder = self.endpoint.is_encoder_decoder

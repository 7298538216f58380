"""Finding, loading and fingerprinting transformers models and tokenizers; turning chat messages into the
prompt text a model was trained on. Nothing here generates or trains."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from stillroom import UserError
# one owner of the thread rule for small models (one intra-op thread on CPU): the training engine
from stillroom.training import SMALL_MODEL_PARAMETERS, small_model_threads  # noqa: F401

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available; use 'cpu' or 'auto'", "device")
    return device


def resolve_dtype(dtype: str, device: str, *, training: bool = False):
    """'auto' is bfloat16 on a CUDA device that supports it (float32 for training weights), else float32."""
    import torch

    if dtype == "auto":
        if not training and device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, _DTYPES[dtype])


def locate(model: str, location: str = "model") -> str:
    """A local folder as an absolute path, or a hub id unchanged; a path that does not exist is a UserError."""
    expanded = Path(os.path.expanduser(model))
    if expanded.exists():
        if not expanded.is_dir():
            raise UserError(f"model path {str(expanded)!r} is a file; give the folder that holds config.json",
                            location)
        if not (expanded / "config.json").exists():
            raise UserError(f"model path {str(expanded)!r} has no config.json; is it a saved transformers "
                            "model folder?", location)
        return str(expanded.resolve())
    looks_like_path = (model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or "\\" in model
                       or model.startswith("."))
    if looks_like_path:
        raise UserError(f"model path {model!r} does not exist", location)
    return model


def _hub_error(model: str, exc: Exception, location: str) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    hint = " (HF_HUB_OFFLINE is set and it is not in the local hub cache)" if offline else ""
    return UserError(f"could not load model {model!r}: not a local folder and not loadable from the hub{hint}: "
                     f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", location)


def load_config(model: str, *, trust_remote_code: bool = False, location: str = "model"):
    from transformers import AutoConfig

    source = locate(model, location)
    try:
        return source, AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(model, exc, location) from exc


def load_tokenizer(source: str, *, trust_remote_code: bool = False, location: str = "model"):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc, location) from exc
    tokenizer.padding_side = "left"  # generation pads on the left so every row ends at the same position
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise UserError(f"tokenizer of {source!r} has neither a pad nor an eos token", location)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def load_model(source: str, config, *, dtype, device: str, trust_remote_code: bool = False,
               random_init: bool = False, seed: int = 0, location: str = "model"):
    """The model in eval mode on ``device``; ``random_init`` builds fresh weights from ``config`` with ``seed``."""
    import os
    import sys

    import torch
    import transformers

    if os.environ.get("STILLROOM_NO_PROGRESS") or not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()  # its loading bars would break one-line error output

    cls = model_class(config)
    try:
        if random_init:
            torch.manual_seed(seed)
            model = cls.from_config(config, trust_remote_code=trust_remote_code, dtype=dtype)
        else:
            model = cls.from_pretrained(source, config=config, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc, location) from exc
    return model.to(device).eval()


def weights_fingerprint(model, tokenizer=None) -> str:
    """A cheap hash of the current weights: every tensor's shape, dtype, float64 sum and a strided sample of
    its values. Fine-tuning, even of an adapter only, changes sums and samples; hashing every byte of a
    multi-GB model per call would not be cheap."""
    import torch

    header, parts = [], []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not torch.is_tensor(tensor) or tensor.numel() == 0:
                continue
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // 64)
            header.append(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}")
            parts.append(flat.sum(dtype=torch.float64).reshape(1))
            parts.append(flat[::stride][:64].double())
        values = torch.cat(parts).cpu().numpy().tobytes() if parts else b""
    digest = hashlib.sha256("\n".join(header).encode())
    digest.update(values)
    if tokenizer is not None:
        digest.update(str(len(tokenizer)).encode())
        digest.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return digest.hexdigest()[:16]


def render_prompt(tokenizer, *, messages: list[dict[str, Any]] | None = None, prompt: str | None = None,
                  is_encoder_decoder: bool = False) -> tuple[str, bool]:
    """The text a model sees, and whether the tokenizer should add its special tokens to it.

    Chat ``messages`` go through the chat template (with the generation prompt) for causal models that have
    one; encoder-decoder models and tokenizers without a template see the message contents joined by blank
    lines, which is also what the student is trained on, so training and generation agree."""
    if messages is None:
        return prompt or "", True
    if not is_encoder_decoder and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, False  # templates write their own BOS where the model wants one
    return "\n\n".join(str(m.get("content", "")) for m in messages), True


def encode_prompt(tokenizer, *, messages=None, prompt=None, is_encoder_decoder: bool = False) -> list[int]:
    text, special = render_prompt(tokenizer, messages=messages, prompt=prompt, is_encoder_decoder=is_encoder_decoder)
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if item is not None and int(item) not in ids:
                ids.append(int(item))
    return ids

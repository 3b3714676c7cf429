"""`TextEncoder`: one named encoder (ul2, byt5 or metaclip) = tokenizer + MindSpore model + max length.

It turns prompts into zero-padded per-token embeddings and masks. The model runs only as far as the longest
prompt of the batch (outputs at real tokens do not depend on padding: T5 masks padded keys, CLIP is causal),
and the result is padded with zeros to `max_length`, so `encode` returns exactly what the cache reader
rebuilds from the stored real tokens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import mindspore as ms
import numpy as np

from mg_transformer._atomic import atomic_dir
from mg_transformer.text.clip import CLIPTextConfig, CLIPTextEncoder
from mg_transformer.text.hf_io import CONFIG, SAFETENSORS, read_config
from mg_transformer.text.t5 import T5Encoder, T5EncoderConfig
from mg_transformer.text.tokenization import (
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    ByteTokenizer,
    Tokenizer,
    load_tokenizer,
    pad_batch,
)

# What `TextEncoder.save_pretrained` writes; it replaces a folder only when it holds nothing else.
HF_FOLDER_FILES = (CONFIG, SAFETENSORS, TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)

ENCODER_NAMES = ("ul2", "byt5", "metaclip")
"""Encoder names of the contract (docs/contracts.md section 1), in Movie Gen's concatenation order."""

ENCODER_ARCH = {"ul2": "t5", "byt5": "t5", "metaclip": "clip"}

DEFAULT_MAX_LENGTHS = {"ul2": 512, "byt5": 100, "metaclip": 256}
"""Movie Gen's text lengths in tokens; MetaCLIP is further capped by the checkpoint's position table."""

PRESET_SIZES = ("tiny", "small")

# Random-initialised presets with byte-level tokenisation (vocabulary 384 as ByT5's): "tiny" for tests and the
# quickstart, "small" (T5-v1.1-small-like UL2, byt5-small's encoder, a CLIP-B-like MetaCLIP) for benchmarks.
_PRESETS = {
    ("tiny", "ul2"): T5EncoderConfig(
        vocab_size=384,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-silu",
    ),
    ("tiny", "byt5"): T5EncoderConfig(
        vocab_size=384,
        d_model=48,
        d_kv=12,
        d_ff=96,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
    ),
    ("tiny", "metaclip"): CLIPTextConfig(
        vocab_size=384,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        hidden_act="gelu",
        projection_dim=32,
        pad_token_id=ByteTokenizer.pad_id,
        bos_token_id=ByteTokenizer.eos_id,
        eos_token_id=ByteTokenizer.eos_id,
    ),
    ("small", "ul2"): T5EncoderConfig(
        vocab_size=384,
        d_model=512,
        d_kv=64,
        d_ff=1024,
        num_layers=8,
        num_heads=6,
        feed_forward_proj="gated-silu",
    ),
    ("small", "byt5"): T5EncoderConfig(
        vocab_size=384,
        d_model=1472,
        d_kv=64,
        d_ff=3584,
        num_layers=12,
        num_heads=6,
        feed_forward_proj="gated-gelu",
    ),
    ("small", "metaclip"): CLIPTextConfig(
        vocab_size=384,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=256,
        hidden_act="quick_gelu",
        pad_token_id=ByteTokenizer.pad_id,
        bos_token_id=ByteTokenizer.eos_id,
        eos_token_id=ByteTokenizer.eos_id,
    ),
}
PRESET_MAX_LENGTHS = {"tiny": {"ul2": 64, "byt5": 64, "metaclip": 64}, "small": DEFAULT_MAX_LENGTHS}

_PRESET_SOURCE = re.compile(r"^preset:(?P<size>[a-z]+):seed=(?P<seed>-?\d+)$")


@dataclass
class EncodedText:
    """Encoder outputs for a batch, padded to the encoder's max length.

    emb (B, L, D) float32, zero at padding; mask (B, L) uint8, 1 = real token; tokens (B, L) int32;
    lengths (B,) real tokens per prompt; dropped / dropped_text: what truncation cut from each prompt.
    """

    emb: np.ndarray
    mask: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    dropped: list[int]
    dropped_text: list[str]


def check_encoder_name(name: str) -> str:
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown text encoder {name!r}; expected one of {', '.join(ENCODER_NAMES)}")
    return name


class TextEncoder:
    """A named text encoder: `encode(prompts)` -> `EncodedText` with (B, max_length, dim) embeddings.

    Build it with `TextEncoder.from_pretrained(name, folder)` (a Hugging Face folder), `TextEncoder.preset(name,
    "tiny", seed)` (random weights, byte tokens) or `TextEncoder.from_source(name, source)` (either, by string).
    """

    def __init__(
        self,
        name: str,
        model: T5Encoder | CLIPTextEncoder,
        tokenizer: Tokenizer,
        max_length: int | None = None,
        source: str = "",
    ) -> None:
        self.name = check_encoder_name(name)
        expected = CLIPTextEncoder if ENCODER_ARCH[name] == "clip" else T5Encoder
        if not isinstance(model, expected):
            raise TypeError(f"text encoder {name!r} needs a {expected.__name__}, got {type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        limit = model.config.max_position_embeddings if isinstance(model, CLIPTextEncoder) else None
        if max_length is None:
            max_length = DEFAULT_MAX_LENGTHS[name] if limit is None else min(DEFAULT_MAX_LENGTHS[name], limit)
        if max_length < 2:
            raise ValueError(f"{name}: max_length must be at least 2, got {max_length}")
        if limit is not None and max_length > limit:
            raise ValueError(
                f"{name}: max_length {max_length} exceeds the model's max_position_embeddings {limit}"
            )
        self.max_length = int(max_length)
        self.source = source

    @property
    def dim(self) -> int:
        """Width D of the per-token embeddings."""
        config = self.model.config
        return config.hidden_size if isinstance(config, CLIPTextConfig) else config.d_model

    def meta(self) -> dict:
        """This encoder's entry in the cache's `meta.json`."""
        return {"dim": self.dim, "max_length": self.max_length, "model": self.source}

    def tokenize(self, prompts: Sequence[str]) -> list:
        """Truncated token ids per prompt (`Tokenized`); an empty result keeps one pad token as its only token."""
        tokenized = self.tokenizer.encode(list(prompts), self.max_length)
        for item in tokenized:
            if not item.ids:  # a tokenizer without special tokens on an empty prompt
                item.ids = [self.tokenizer.pad_id]
        return tokenized

    def encode(self, prompts: Sequence[str]) -> EncodedText:
        """Embed one batch of prompts."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a sequence of prompts, not a single string")
        tokenized = self.tokenize(prompts)
        if not tokenized:
            empty = np.zeros((0, self.max_length), np.int32)
            return EncodedText(
                np.zeros((0, self.max_length, self.dim), np.float32),
                empty.astype(np.uint8),
                empty,
                np.zeros(0, np.int64),
                [],
                [],
            )
        longest = max(len(t.ids) for t in tokenized)
        run_length = min(-(-longest // 8) * 8, self.max_length)  # a multiple of 8 limits distinct shapes
        ids, mask = pad_batch(tokenized, run_length, self.tokenizer.pad_id)
        out = self.model(ms.Tensor(ids), ms.Tensor(mask.astype(np.int32)))
        hidden = (out[0] if isinstance(out, tuple) else out).asnumpy().astype(np.float32)
        emb = np.zeros((len(tokenized), self.max_length, self.dim), dtype=np.float32)
        emb[:, :run_length] = hidden * mask[:, :, None]
        full_ids, full_mask = pad_batch(tokenized, self.max_length, self.tokenizer.pad_id)
        return EncodedText(
            emb=emb,
            mask=full_mask,
            tokens=full_ids,
            lengths=full_mask.sum(1).astype(np.int64),
            dropped=[t.dropped for t in tokenized],
            dropped_text=[t.dropped_text for t in tokenized],
        )

    # --- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        folder: str | os.PathLike,
        *,
        max_length: int | None = None,
        dtype: ms.Type = ms.float32,
        strict: bool = True,
    ) -> TextEncoder:
        """Load a Hugging Face folder: `config.json`, `model.safetensors` (or a sharded index), tokenizer files."""
        check_encoder_name(name)
        config = read_config(folder)
        model_cls = CLIPTextEncoder if ENCODER_ARCH[name] == "clip" else T5Encoder
        model = model_cls.from_pretrained(folder, dtype=dtype, strict=strict)
        tokenizer = load_tokenizer(
            folder, default_pad_id=config.get("pad_token_id") or 0, model_config=config
        )
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                f"{model.config.vocab_size} embeddings"
            )
        return cls(name, model, tokenizer, max_length, source=str(Path(folder).resolve()))

    @classmethod
    def preset(
        cls,
        name: str,
        size: str = "tiny",
        seed: int = 0,
        *,
        max_length: int | None = None,
        dtype: ms.Type = ms.float32,
        tokenizer: Tokenizer | None = None,
    ) -> TextEncoder:
        """A random-initialised encoder, deterministic by `seed` (distinct per encoder name), with byte tokens or
        the given `tokenizer` (e.g. `word_level_tokenizer(captions)`; pad id 0 and EOS id 1 as the presets').

        With a tokenizer the encoder is no longer described by its preset string: save it with
        `save_pretrained` and refer to the folder."""
        check_encoder_name(name)
        if size not in PRESET_SIZES:
            raise ValueError(f"unknown preset size {size!r}; expected one of {', '.join(PRESET_SIZES)}")
        config = _PRESETS[size, name]
        if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
            raise ValueError(
                f"preset {size!r} {name} has {config.vocab_size} token embeddings; the tokenizer needs "
                f"{tokenizer.vocab_size}"
            )
        model_cls = CLIPTextEncoder if ENCODER_ARCH[name] == "clip" else T5Encoder
        model = model_cls(replace(config), dtype).init_weights([seed, ENCODER_NAMES.index(name)])
        if max_length is None:
            max_length = PRESET_MAX_LENGTHS[size][name]
        source = f"preset:{size}:seed={seed}"
        if tokenizer is None:
            return cls(name, model, ByteTokenizer(), max_length, source=source)
        return cls(name, model, tokenizer, max_length, source=f"{source}:custom-tokenizer")

    @classmethod
    def from_source(
        cls,
        name: str,
        source: str | os.PathLike,
        *,
        seed: int = 0,
        max_length: int | None = None,
        dtype: ms.Type = ms.float32,
    ) -> TextEncoder:
        """Build from a string: "tiny" / "small" (preset with `seed`), "preset:tiny:seed=3", or a model folder.

        The preset strings are what `meta()` records, so a cache's `meta.json` names how to rebuild its encoders.
        """
        text = str(source)
        if text in PRESET_SIZES:
            return cls.preset(name, text, seed, max_length=max_length, dtype=dtype)
        match = _PRESET_SOURCE.match(text)
        if match:
            return cls.preset(name, match["size"], int(match["seed"]), max_length=max_length, dtype=dtype)
        return cls.from_pretrained(name, source, max_length=max_length, dtype=dtype)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the model and tokenizer as a Hugging Face folder that `from_pretrained` (ours or HF's) reads.
        All files appear together; an existing `folder` may hold only files of such a folder."""
        with atomic_dir(folder, replaces=HF_FOLDER_FILES) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save(tmp, self.max_length)


class TextTruncationWarning(UserWarning):
    """Prompts were longer than an encoder's max length and lost their tail."""


def truncation_message(name: str, max_length: int, total: int, cut: Sequence[tuple[str, int, str]]) -> str:
    """A one-paragraph summary of truncations: how many prompts, by how many tokens, and the worst case.

    `cut` holds (label, tokens dropped, dropped text) per truncated prompt, e.g. ("prompt 3", 12, "...").
    """
    amounts = [n for _, n, _ in cut]
    label, worst, text = max(cut, key=lambda item: item[1])
    shown = text if len(text) <= 80 else text[:77] + "..."
    spread = f"{min(amounts)} to {max(amounts)}" if min(amounts) != max(amounts) else f"{worst}"
    return (
        f"{name}: {len(cut)} of {total} prompts exceed max_length {max_length} tokens and were truncated by "
        f"{spread} tokens; {label} lost the most ({worst} tokens: {shown!r})"
    )

"""`TextEmbedder`: any subset of Movie Gen's text encoders behind one call, plus the cache writer."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import mindspore as ms
import numpy as np

from mg_transformer.text.cache import CacheReport, write_text_cache
from mg_transformer.text.encoders import (
    ENCODER_NAMES,
    TextEncoder,
    TextTruncationWarning,
    check_encoder_name,
    truncation_message,
)

BYT5_TEXT_MODES = ("full", "quoted")
_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”')


def quoted_text(prompt: str) -> str:
    """The text inside double quotes ("..." or “...”), spans joined by a space; "" when there is none.

    Movie Gen gives ByT5 only the visual text a prompt asks to render (e.g. a sign reading "OPEN").
    """
    return " ".join(a or b for a, b in _QUOTED.findall(prompt))


class TextEmbedder:
    """Runs text encoders ("ul2", "byt5", "metaclip") on prompts and writes the text-embedding cache.

    `encoders` maps each wanted name to a Hugging Face model folder, a preset ("tiny", "small",
    "preset:tiny:seed=3") or a ready `TextEncoder`. `max_lengths` overrides the default token limits (UL2 512,
    ByT5 100, MetaCLIP 256; 64 for the tiny preset). `byt5_text="quoted"` feeds ByT5 only the quoted part of
    each prompt, as the Movie Gen paper does; the default "full" feeds whole prompts, as the reference
    implementation does. Encoders run in `ENCODER_NAMES` order whatever the mapping's order.
    """

    def __init__(
        self,
        encoders: Mapping[str, str | os.PathLike | TextEncoder],
        *,
        seed: int = 0,
        max_lengths: Mapping[str, int] | None = None,
        dtype: ms.Type = ms.float32,
        byt5_text: str = "full",
    ) -> None:
        if not encoders:
            raise ValueError(
                f"no text encoders given; expected a mapping with any of {', '.join(ENCODER_NAMES)}"
            )
        max_lengths = dict(max_lengths or {})
        for name in list(encoders) + list(max_lengths):
            check_encoder_name(name)
        if byt5_text not in BYT5_TEXT_MODES:
            raise ValueError(f"byt5_text {byt5_text!r}: expected one of {', '.join(BYT5_TEXT_MODES)}")
        self.byt5_text = byt5_text
        self.encoders: dict[str, TextEncoder] = {}
        for name in ENCODER_NAMES:
            if name not in encoders:
                continue
            source, limit = encoders[name], max_lengths.get(name)
            if isinstance(source, TextEncoder):
                if source.name != name:
                    raise ValueError(f"encoder given for {name!r} is named {source.name!r}")
                if limit is not None and limit != source.max_length:
                    raise ValueError(
                        f"{name}: max_lengths says {limit} but the given encoder has {source.max_length}"
                    )
                self.encoders[name] = source
            else:
                self.encoders[name] = TextEncoder.from_source(
                    name, source, seed=seed, max_length=limit, dtype=dtype
                )

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        names: Iterable[str] = ENCODER_NAMES,
        *,
        max_lengths: Mapping[str, int] | None = None,
        byt5_text: str = "full",
    ) -> TextEmbedder:
        """Random-initialised tiny encoders (dims 64 / 48 / 32, byte tokens, 64 tokens), deterministic by seed."""
        return cls(dict.fromkeys(names, "tiny"), seed=seed, max_lengths=max_lengths, byt5_text=byt5_text)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.encoders)

    @property
    def dims(self) -> dict[str, int]:
        """Embedding width per encoder, e.g. {"ul2": 4096, "byt5": 1472, "metaclip": 1280} for the real ones."""
        return {name: enc.dim for name, enc in self.encoders.items()}

    @property
    def max_lengths(self) -> dict[str, int]:
        """Padded token length per encoder: the L of `embed`'s outputs."""
        return {name: enc.max_length for name, enc in self.encoders.items()}

    def meta(self) -> dict[str, dict]:
        """{name: {"dim", "max_length", "model"}}, the `encoders` object of the cache's meta.json."""
        return {name: enc.meta() for name, enc in self.encoders.items()}

    def prepare(self, name: str, prompts: Sequence[str]) -> list[str]:
        """The text encoder `name` sees for each prompt (the quoted part for ByT5 with byt5_text="quoted")."""
        if name == "byt5" and self.byt5_text == "quoted":
            return [quoted_text(p) for p in prompts]
        return list(prompts)

    def embed(self, prompts: Sequence[str], batch_size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{name: (emb (B, L, D) float32, mask (B, L) uint8)} with L = that encoder's max length.

        mask is 1 at real tokens; emb is zero at padding. Prompts over the limit are truncated with a
        `TextTruncationWarning` saying by how many tokens.
        """
        if isinstance(prompts, str):
            raise TypeError("embed takes a sequence of prompts; wrap a single prompt in a list")
        prompts = list(prompts)
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompt {i} is {type(prompt).__name__}, expected str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        result = {}
        for name, encoder in self.encoders.items():
            texts = self.prepare(name, prompts)
            # batches of similar length compute less padding; results land back in prompt order
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            emb = np.zeros((len(texts), encoder.max_length, encoder.dim), np.float32)
            mask = np.zeros((len(texts), encoder.max_length), np.uint8)
            cut = []
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                out = encoder.encode([texts[i] for i in rows])
                emb[rows], mask[rows] = out.emb, out.mask
                cut += [(i, n, t) for i, n, t in zip(rows, out.dropped, out.dropped_text, strict=True) if n]
            if cut:
                labelled = [(f"prompt {i}", n, t) for i, n, t in sorted(cut)]
                message = truncation_message(name, encoder.max_length, len(prompts), labelled)
                warnings.warn(message, TextTruncationWarning, stacklevel=2)
            result[name] = (emb, mask)
        return result

    def embed_null(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`embed([""])`: the unconditional input for classifier-free guidance."""
        return self.embed([""])

    def write_cache(
        self,
        cache_dir: str | os.PathLike,
        keys: Sequence[str],
        prompts: Sequence[str],
        *,
        batch_size: int = 16,
        dtype: str = "float32",
        skip_existing: bool = True,
        progress: bool | Callable[[str], None] = True,
    ) -> CacheReport:
        """Write the text-embedding cache of docs/contracts.md section 2 for `prompts` under `keys`.

        Writes `<cache>/meta.json`, `<cache>/<encoder>/__null__.npz` (the empty prompt) and
        `<cache>/<encoder>/<key>.npz` with the real tokens only. A key is a relative path with or without
        `.npz` (mg-train passes the video path with its extension replaced). Entries already present are
        kept when `skip_existing` (an interrupted run resumes); `dtype` "float16" halves the files. Progress
        lines go to stdout (`progress=True`), to a callable, or nowhere (False). Truncated prompts are
        summarised in one `TextTruncationWarning` per encoder and listed in the returned report.
        """
        return write_text_cache(
            self,
            cache_dir,
            keys,
            prompts,
            batch_size=batch_size,
            dtype=dtype,
            skip_existing=skip_existing,
            progress=progress,
        )

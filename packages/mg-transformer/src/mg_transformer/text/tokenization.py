"""Tokenisers for the text encoders: ByT5's byte tokenizer (no files), `tokenizer.json` through HF `tokenizers`,
and word-level vocabularies built from a closed set of texts (toy datasets).

All truncate the same way as Hugging Face with `truncation=True`: the content is cut so that the special
tokens (T5's EOS, CLIP's BOS/EOS) still fit, and they report how many tokens, and which text, were cut off.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"


@dataclass
class Tokenized:
    """One prompt's token ids (special tokens included, after truncation) and what truncation cut off."""

    ids: list[int]
    dropped: int = 0
    dropped_text: str = ""


class ByteTokenizer:
    """ByT5's tokenizer: each UTF-8 byte b becomes id b + 3 (0 pad, 1 EOS, 2 UNK) and an EOS is appended.

    All text is taken as bytes: unlike Hugging Face's ByT5Tokenizer, strings such as "<pad>" inside a prompt
    stay plain text rather than becoming special tokens.
    """

    pad_id, eos_id, unk_id, offset = 0, 1, 2, 3
    vocab_size = 256 + 3

    def encode(self, texts: Sequence[str], max_length: int) -> list[Tokenized]:
        """Token ids of each text, truncated to `max_length` tokens including the EOS."""
        if max_length < 2:
            raise ValueError(f"max_length {max_length} leaves no room for text next to the EOS token")
        budget = max_length - 1
        out = []
        for text in texts:
            data = text.encode("utf-8")
            kept, cut = data[:budget], data[budget:]
            ids = [b + self.offset for b in kept] + [self.eos_id]
            out.append(Tokenized(ids, len(cut), cut.decode("utf-8", errors="replace")))
        return out

    def save(self, folder: str | os.PathLike, max_length: int) -> None:
        """Write a `tokenizer_config.json` that both `load_tokenizer` and `transformers.AutoTokenizer` read."""
        config = {
            "tokenizer_class": "ByT5Tokenizer",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "extra_ids": 125,
            "model_max_length": max_length,
        }
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


class HFTokenizer:
    """A tokenizer loaded from a Hugging Face `tokenizer.json` (SentencePiece-Unigram for T5, BPE for CLIP, ...)."""

    def __init__(self, tokenizer, pad_id: int, source: str | os.PathLike | None = None) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.pad_id = pad_id
        self.source = Path(source) if source is not None else None
        self.num_special = tokenizer.num_special_tokens_to_add(False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, default_pad_id: int = 0) -> HFTokenizer:
        """Load `<folder>/tokenizer.json`; the pad token comes from the tokenizer config, else `default_pad_id`."""
        from tokenizers import Tokenizer

        path = Path(folder) / TOKENIZER_JSON
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a plain Exception for malformed files
            raise ValueError(f"{path}: cannot be read by the `tokenizers` library ({err})") from err
        pad_id = default_pad_id
        pad_token = _special_token(Path(folder), "pad_token")
        if pad_token is not None and tokenizer.token_to_id(pad_token) is not None:
            pad_id = tokenizer.token_to_id(pad_token)
        return cls(tokenizer, pad_id, source=path)

    def encode(self, texts: Sequence[str], max_length: int) -> list[Tokenized]:
        """Token ids of each text, truncated to `max_length` tokens including the special tokens."""
        budget = max_length - self.num_special
        if budget < 1:
            raise ValueError(
                f"max_length {max_length} leaves no room for text next to {self.num_special} special tokens"
            )
        out = []
        for text, encoding in zip(
            texts, self.tokenizer.encode_batch(list(texts), add_special_tokens=False), strict=True
        ):
            dropped, dropped_text = len(encoding.ids) - budget, ""
            if dropped > 0:
                dropped_text = text[encoding.offsets[budget][0] :]
                encoding.truncate(budget)
            final = self.tokenizer.post_process(encoding, None, True)
            out.append(Tokenized(list(final.ids), max(dropped, 0), dropped_text))
        return out

    def save(self, folder: str | os.PathLike, max_length: int) -> None:
        """Write `tokenizer.json` and a `tokenizer_config.json` naming the pad token."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(Path(folder) / TOKENIZER_JSON))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "pad_token": self.tokenizer.id_to_token(self.pad_id),
            "model_max_length": max_length,
        }
        if self.source is not None and (self.source.parent / TOKENIZER_CONFIG).is_file():
            shutil.copyfile(self.source.parent / TOKENIZER_CONFIG, Path(folder) / TOKENIZER_CONFIG)
        else:
            (Path(folder) / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


WORD_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def word_level_tokenizer(texts: Sequence[str]) -> HFTokenizer:
    """A lower-cased whitespace/punctuation word tokenizer whose vocabulary is the words of `texts`.

    Ids: 0 `<pad>`, 1 `</s>` (appended to every text, as T5 does), 2 `<unk>` (any word not in `texts`), then the
    words in sorted order. For toy datasets with a closed vocabulary (the quickstart's synthetic captions):
    random-initialised tiny encoders then see one token per word instead of one per byte, which their
    transformers learn to read much sooner. Saved with `HFTokenizer.save`, it loads back from `tokenizer.json`.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    splitter = pre_tokenizers.Whitespace()
    words = sorted(
        {word for text in texts for word, _ in splitter.pre_tokenize_str(text.lower())}
        - set(WORD_SPECIAL_TOKENS)
    )
    vocab = {token: i for i, token in enumerate((*WORD_SPECIAL_TOKENS, *words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.add_special_tokens(list(WORD_SPECIAL_TOKENS))
    return HFTokenizer(tokenizer, pad_id=0)


Tokenizer = ByteTokenizer | HFTokenizer


def _special_token(folder: Path, key: str) -> str | None:
    """A special token's text from `tokenizer_config.json` or `special_tokens_map.json`, if either names it."""
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        path = folder / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text()).get(key)
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


BYT5_VOCAB_SIZE = 384  # 256 bytes + 3 specials + 125 sentinel ids


def load_tokenizer(
    folder: str | os.PathLike, default_pad_id: int = 0, model_config: dict | None = None
) -> Tokenizer:
    """The tokenizer of a Hugging Face model folder.

    `tokenizer.json` when present; else ByT5's byte tokenizer when `tokenizer_config.json` or the model's
    `config.json` (`model_config`) names `ByT5Tokenizer`, or when the folder has no vocabulary file at all and
    the model has ByT5's 384-entry vocabulary (ByT5 folders ship no vocabulary file).
    """
    folder = Path(folder)
    model_config = model_config or {}
    if (folder / TOKENIZER_JSON).is_file():
        return HFTokenizer.from_folder(folder, default_pad_id)
    tokenizer_class = model_config.get("tokenizer_class")
    if (folder / TOKENIZER_CONFIG).is_file():
        try:
            tokenizer_class = (
                json.loads((folder / TOKENIZER_CONFIG).read_text()).get("tokenizer_class") or tokenizer_class
            )
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{folder / TOKENIZER_CONFIG}: not a JSON object ({err})") from err
    has_vocabulary = (
        any(folder.glob("*.model")) or any(folder.glob("vocab.*")) or any(folder.glob("merges.txt"))
    )
    if tokenizer_class == "ByT5Tokenizer" or (
        tokenizer_class is None and not has_vocabulary and model_config.get("vocab_size") == BYT5_VOCAB_SIZE
    ):
        return ByteTokenizer()
    hint = ""
    if (folder / "spiece.model").is_file():
        hint = (
            " It has a SentencePiece `spiece.model`: write its tokenizer.json once with `transformers`, "
            "`AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`."
        )
    raise FileNotFoundError(
        f"{folder}: no {TOKENIZER_JSON}, and neither {TOKENIZER_CONFIG} nor config.json names ByT5Tokenizer "
        f"(found tokenizer_class {tokenizer_class!r}).{hint}"
    )


def pad_batch(tokenized: Sequence[Tokenized], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, length) int32, mask (B, length) uint8 with 1 = real token) from truncated token lists."""
    ids = np.full((len(tokenized), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(tokenized), length), dtype=np.uint8)
    for row, item in enumerate(tokenized):
        if len(item.ids) > length:
            raise ValueError(f"prompt {row} has {len(item.ids)} tokens, more than the padded length {length}")
        ids[row, : len(item.ids)] = item.ids
        mask[row, : len(item.ids)] = 1
    return ids, mask

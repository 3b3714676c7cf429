"""Movie Gen's frozen text encoders in MindSpore: UL2 and ByT5 (T5 encoders), MetaCLIP (a CLIP text encoder).

Loads Hugging Face model folders (config.json, single or sharded safetensors, tokenizer files), tokenises with
HF `tokenizers` (or ByT5's byte scheme), and embeds prompts into mg-data's text-embedding cache:

    from mg_transformer.text import TextEmbedder
    embedder = TextEmbedder({"ul2": "/models/ul2", "byt5": "/models/byt5-small", "metaclip": "/models/metaclip"})
    embedder = TextEmbedder.tiny(seed=0)                     # random tiny encoders, no downloads
    out = embedder.embed(["a red ball rolls left"])          # {"ul2": (emb (1, L, D), mask (1, L)), ...}
    embedder.write_cache("cache/text", keys=["clips/a"], prompts=["a red ball rolls left"])
"""

from mg_transformer.text.cache import NULL_KEY, CacheReport, write_text_cache
from mg_transformer.text.clip import CLIPTextConfig, CLIPTextEncoder
from mg_transformer.text.embedder import TextEmbedder, quoted_text
from mg_transformer.text.encoders import (
    DEFAULT_MAX_LENGTHS,
    ENCODER_NAMES,
    EncodedText,
    TextEncoder,
    TextTruncationWarning,
)
from mg_transformer.text.hf_io import HFWeights, SafetensorsFile
from mg_transformer.text.t5 import T5Encoder, T5EncoderConfig
from mg_transformer.text.tokenization import ByteTokenizer, HFTokenizer, load_tokenizer, word_level_tokenizer

__all__ = [
    "DEFAULT_MAX_LENGTHS",
    "ENCODER_NAMES",
    "NULL_KEY",
    "ByteTokenizer",
    "CLIPTextConfig",
    "CLIPTextEncoder",
    "CacheReport",
    "EncodedText",
    "HFTokenizer",
    "HFWeights",
    "SafetensorsFile",
    "T5Encoder",
    "T5EncoderConfig",
    "TextEmbedder",
    "TextEncoder",
    "TextTruncationWarning",
    "load_tokenizer",
    "quoted_text",
    "word_level_tokenizer",
    "write_text_cache",
]

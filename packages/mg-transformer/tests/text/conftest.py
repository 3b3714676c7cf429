"""Fixtures for the text-encoder tests: tiny random PyTorch `transformers` models and trained tiny tokenizers,
saved with `save_pretrained` as real Hugging Face folders. The models are small enough that building all of
them takes a second or two."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

WORDS = [
    "a",
    "an",
    "the",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "circle",
    "square",
    "triangle",
    "star",
    "ball",
    "cube",
    "moves",
    "moving",
    "slides",
    "rolls",
    "left",
    "right",
    "up",
    "down",
    "across",
    "over",
    "under",
    "on",
    "in",
    "of",
    "with",
    "and",
    "slowly",
    "quickly",
    "background",
    "sign",
    "that",
    "says",
    "cat",
    "dog",
    "runs",
    "jumps",
    "bright",
    "dark",
    "small",
    "large",
]

PROMPTS = [
    "a red circle moving left",
    "a blue square slides right on a white background",
    "",
    "the dog jumps over a bright yellow star, slowly",
    "Ünïcödé prompt with émojis 🎬 and CAPITALS",
    'a sign that says "OPEN" in green',
]


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """Prompts with padding, an empty one, non-ASCII text and quotes."""
    return list(PROMPTS)


def _corpus() -> list[str]:
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(400)]
    return lines + PROMPTS


@pytest.fixture(scope="session")
def shared_data() -> Path | None:
    """The project's shared data folder (`shared/data` beside the repository or above it), or None."""
    here = Path(__file__).resolve()
    candidates = [Path(os.environ["MG_SHARED_DIR"]) / "data"] if "MG_SHARED_DIR" in os.environ else []
    candidates += [p / "shared" / "data" for p in here.parents]
    for candidate in candidates:
        if (candidate / "moviegen_video_bench").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    return torch


@pytest.fixture(scope="session")
def unigram_tokenizer_dir(tmp_path_factory, torch):
    """A T5-style tokenizer: SentencePiece-like Unigram model, Metaspace pre-tokenizer, `$A </s>` template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder = tmp_path_factory.mktemp("unigram_tok")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory, torch):
    """A CLIP-style tokenizer: byte-level BPE with `<|startoftext|> $A <|endoftext|>`, padding with EOS."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[bos, eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))]
    )
    folder = tmp_path_factory.mktemp("bpe_tok")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)
    hf.save_pretrained(folder)
    return folder


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())


@pytest.fixture(scope="session")
def hf_t5(tmp_path_factory, torch):
    """Factory: (folder, eval-mode torch model) for a random T5 encoder saved with `save_pretrained`."""
    from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

    made = {}

    def make(feed_forward_proj="gated-gelu", vocab_size=150, full=False, tokenizer_dir=None, **save_kwargs):
        key = (feed_forward_proj, vocab_size, full, tokenizer_dir, tuple(sorted(save_kwargs.items())))
        if key in made:
            return made[key]
        torch.manual_seed(len(made))
        config = T5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=48,
            num_layers=2,
            num_decoder_layers=1,
            num_heads=4,
            feed_forward_proj=feed_forward_proj,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=64,
        )
        model = (T5ForConditionalGeneration if full else T5EncoderModel)(config).eval()
        with torch.no_grad():  # a random T5's norms are all ones: perturb them so they are tested too
            for name, param in model.named_parameters():
                if "layer_norm" in name:
                    param.add_(0.1 * torch.randn_like(param))
        folder = tmp_path_factory.mktemp(f"t5_{feed_forward_proj}")
        model.save_pretrained(folder, **save_kwargs)
        if tokenizer_dir is not None:
            _copy_tokenizer(Path(tokenizer_dir), folder)
        encoder = model.get_encoder() if full else model
        made[key] = (folder, encoder)
        return made[key]

    return make


@pytest.fixture(scope="session")
def hf_clip(tmp_path_factory, bpe_tokenizer_dir, torch):
    """(folder, eval-mode CLIPTextModelWithProjection) with 300 positions and the BPE tokenizer."""
    from tokenizers import Tokenizer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok = Tokenizer.from_file(str(bpe_tokenizer_dir / "tokenizer.json"))
    config = CLIPTextConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=300,
        projection_dim=24,
        hidden_act="quick_gelu",
        bos_token_id=tok.token_to_id("<|startoftext|>"),
        eos_token_id=tok.token_to_id("<|endoftext|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    torch.manual_seed(1)
    model = CLIPTextModelWithProjection(config).eval()
    with torch.no_grad():  # CLIP's initialisation is tiny (std 0.02): widen it so the outputs mean something
        for name, param in model.named_parameters():
            if "embedding" in name:
                param.normal_(0.0, 1.0)
            elif "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif param.ndim == 2:
                param.normal_(0.0, param.shape[1] ** -0.5)
            else:
                param.normal_(0.0, 0.1)
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    _copy_tokenizer(bpe_tokenizer_dir, folder)
    return folder, model

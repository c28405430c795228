"""Tiny random model checkpoints built offline, loaded by tests through the real code paths.

    path = build_tiny_clip(tmp_dir)   # loadable by transformers CLIPModel and infinity-emb

Tokenizer: byte-level CLIP BPE with NO merges. Vocab = 256 byte-chars + the same
256 chars with "</w>" suffix (CLIP marks word ends that way) + 2 specials = 514.
Every character becomes one token (last char of a word gets the </w> variant).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

TEXT_MAX_LEN = 77  # positions in the text tower == truncation length used by infinity


def _bytes_to_unicode() -> dict[int, str]:
    # same mapping as transformers.models.clip.tokenization_clip.bytes_to_unicode
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _bpe_tokenizer(slow_cls, fast_cls, vocab: dict[str, int], max_len: int):
    """A byte-level BPE tokenizer with ``vocab`` and NO merges (one token per character)."""
    with tempfile.TemporaryDirectory() as td:
        vf, mf = os.path.join(td, "vocab.json"), os.path.join(td, "merges.txt")
        with open(vf, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(mf, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")  # header line only = no merges
        slow_cls(vf, mf, model_max_length=max_len).save_pretrained(td)
        return fast_cls.from_pretrained(td, model_max_length=max_len)


def build_tiny_clip(dir: str, seed: int = 0, config_max_length: int | None = None, full_size: bool = False,
                    input_side: int | None = None) -> str:
    """Like a hub CLIP checkpoint, config.json has no top-level max_length unless given.

    ``full_size``: the ViT-B/32 architecture of openai/clip-vit-base-patch32 (224-px images,
    512-d projection) with random weights, for throughput measurements. ``input_side``: the tiny
    network, but taking pictures of that side (patches of 32) with a processor to match, so that
    the preprocessing of a real-size model is nearly all an embedder's work.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        CLIPTokenizerFast,
    )

    os.makedirs(dir, exist_ok=True)

    # ---- tokenizer (slow from vocab/merges files, then converted to fast) ----
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = _bpe_tokenizer(CLIPTokenizer, CLIPTokenizerFast, vocab, TEXT_MAX_LEN)

    # ---- model config ----
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TEXT_MAX_LEN,
            # IMPORTANT: transformers' CLIP text pooling picks the hidden state at the
            # first position where input_ids == eos_token_id (default 49407). With a
            # custom vocab that id never occurs -> position 0 (BOS) is pooled and ALL
            # texts get the SAME vector. Point the ids at our tokenizer.
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
        # infinity takes `config.max_length` as the text truncation length; transformers
        # defaults it to 20. Real checkpoints do not set it: msearch must fix it at load.
        **({"max_length": config_max_length} if config_max_length else {}),
    )
    side = 32
    if input_side:
        cfg.vision_config.image_size, cfg.vision_config.patch_size = input_side, 32
        side = input_side
    if full_size:  # transformers' defaults are ViT-B/32
        cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=TEXT_MAX_LEN,
                                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                          pad_token_id=tok.pad_token_id),
                         vision_config=dict(image_size=224, patch_size=32), projection_dim=512)
        side = 224
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()

    # ---- image processor ----
    improc = CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        do_resize=True,
        do_center_crop=True,
    )
    proc = CLIPProcessor(image_processor=improc, tokenizer=tok)

    model.save_pretrained(dir)  # config.json + model.safetensors
    proc.save_pretrained(dir)  # tokenizer files + preprocessor_config.json
    return dir


CLAP_TEXT_POSITIONS = 80  # RoBERTa position table; usable length is 2 less (78)


def build_tiny_clap(dir: str, seed: int = 0, full_size: bool = False) -> str:
    """Tiny random CLAP (RoBERTa text tower + HTSAT audio tower), loadable by transformers
    ClapModel/AutoProcessor and infinity-emb's TorchAudioModel. No top-level max_length.

    Audio: stock feature settings (48 kHz, 64 mel bins, hop 480, 10 s window ->
    1001x64 log-mel), truncation "rand_trunc" with an UNFUSED model, so inputs of 10 s or
    less are deterministic (only inputs longer than 10 s get a random 10 s crop).
    Note: infinity calls the processor with padding=True, which the feature extractor takes
    as its padding *mode*: clips under 10 s get zero-padded there, not "repeatpad".

    ``full_size``: the laion/clap-htsat-unfused architecture (RoBERTa-base text tower, HTSAT
    audio tower, 512-d projection) with random weights, for throughput measurements.
    """
    import torch
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        RobertaTokenizer,
        RobertaTokenizerFast,
    )

    INIT_FACTOR = 10.0
    os.makedirs(dir, exist_ok=True)

    # ---- tokenizer: byte-level BPE with NO merges -> one token per byte-char ----
    specials_front = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in RoBERTa
    vocab_list = specials_front + list(_bytes_to_unicode().values()) + ["<mask>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    positions = 514 if full_size else CLAP_TEXT_POSITIONS
    max_len = positions - 2  # RoBERTa positions start at pad_id + 1
    tok = _bpe_tokenizer(RobertaTokenizer, RobertaTokenizerFast, vocab, max_len)

    # ---- model config ----
    cfg = ClapConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CLAP_TEXT_POSITIONS,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            initializer_factor=INIT_FACTOR,
        ),
        audio_config=dict(
            # spec_size 256 / num_mel_bins 64 must stay: the 1001 frames of a 10 s window
            # are resized into spec_size * (spec_size // num_mel_bins) = 1024 frames.
            spec_size=256,
            num_mel_bins=64,
            patch_size=8,
            patch_stride=[8, 8],  # 256x256 "image" -> 32x32 patches
            window_size=8,
            patch_embeds_hidden_size=16,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            hidden_size=32,  # must equal patch_embeds_hidden_size * 2 ** (len(depths) - 1)
            mlp_ratio=2.0,
            enable_fusion=False,  # fusion needs is_longer, which infinity never passes
            initializer_factor=INIT_FACTOR,
        ),
        projection_dim=16,
        # init only: with the stock init a tiny random CLAP maps every input to nearly the
        # same direction (text-text and sine-sine cosines > 0.99); x10 spreads them. Set on
        # all three configs: the sub-towers initialise themselves with their own config.
        initializer_factor=INIT_FACTOR,
    )
    if full_size:  # transformers' defaults are the HTSAT-unfused architecture
        cfg = ClapConfig(
            text_config=dict(vocab_size=len(vocab), max_position_embeddings=positions, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
            audio_config=dict(enable_fusion=False), projection_dim=512,
        )
    torch.manual_seed(seed)
    model = ClapModel(cfg).eval()

    # ---- feature extractor: stock settings except truncation ----
    fe = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48_000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    proc = ClapProcessor(feature_extractor=fe, tokenizer=tok)

    model.save_pretrained(dir)  # config.json + model.safetensors
    proc.save_pretrained(dir)  # tokenizer files + preprocessor_config.json
    return dir



# Text pieces that Qwen2-VL's processor / chat template and ColQwen2's prompts use.
QWEN2_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Minimal Qwen2-VL style chat template (only needed for processor.apply_chat_template).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen2_byte_tokenizer():
    """A Qwen2-style byte-level BPE: 256 byte symbols, no merges, + special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    ordered = [bytes_to_unicode()[b] for b in range(256)]  # stable ids: id == byte value
    if set(ordered) != set(byte_chars):
        raise RuntimeError("byte-level alphabets differ")
    vocab = {ch: i for i, ch in enumerate(ordered)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    # Same pre-tokenization as Qwen2 (regex split, then byte-level without its own regex).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
                ),
                behavior="isolated",
                invert=False,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL_TOKENS])
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        model_max_length=32768,
        errors="replace",
        clean_up_tokenization_spaces=False,
        additional_special_tokens=[t for t in QWEN2_SPECIAL_TOKENS if t != "<|endoftext|>"],
    )
    fast.padding_side = "left"
    return fast


def build_tiny_colqwen2(dir: str, seed: int = 0, max_image_tokens: int = 36) -> str:
    """Write a tiny random ColQwen2 (model + processor) into ``dir``; return ``dir``.

    ``max_image_tokens``: the most image vectors (merged 28x28-pixel patches) one image gives.
    Deterministic for a given ``seed``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor

    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _qwen2_byte_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_SPECIAL_TOKENS}
    vocab_size = len(tokenizer)  # 256 bytes + 14 specials = 270

    hidden, heads = 64, 4
    # head_dim = hidden // heads = 16: the mrope sections must sum to head_dim / 2 = 8
    config = Qwen2VLConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        max_window_layers=2,
        rope_theta=10000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        tie_word_embeddings=False,
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,  # the merger's output == text hidden size
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None,
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = ColQwen2(config).eval()
    model.save_pretrained(str(out), safe_serialization=True)

    image_processor = Qwen2VLImageProcessor(
        min_pixels=4 * 28 * 28,
        max_pixels=max_image_tokens * 28 * 28,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_CHAT_TEMPLATE)
    processor.save_pretrained(str(out))
    return str(out)



if __name__ == "__main__":
    import sys

    print(build_tiny_clip(sys.argv[1] if len(sys.argv) > 1 else "/tmp/inf/tiny-clip"))

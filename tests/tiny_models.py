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


def build_tiny_clip(dir: str, seed: int = 0, config_max_length: int | None = None) -> str:
    """Like a hub CLIP checkpoint, config.json has no top-level max_length unless given."""
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
    with tempfile.TemporaryDirectory() as td:
        vf, mf = os.path.join(td, "vocab.json"), os.path.join(td, "merges.txt")
        with open(vf, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(mf, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")  # header line only = no merges
        slow = CLIPTokenizer(vf, mf, model_max_length=TEXT_MAX_LEN)
        slow.save_pretrained(td)
        tok = CLIPTokenizerFast.from_pretrained(td, model_max_length=TEXT_MAX_LEN)

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
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()

    # ---- image processor ----
    improc = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
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
    with tempfile.TemporaryDirectory() as td:
        vf, mf = os.path.join(td, "vocab.json"), os.path.join(td, "merges.txt")
        with open(vf, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(mf, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")  # header line only = no merges
        slow = RobertaTokenizer(vf, mf, model_max_length=max_len)
        slow.save_pretrained(td)
        tok = RobertaTokenizerFast.from_pretrained(td, model_max_length=max_len)

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


if __name__ == "__main__":
    import sys

    print(build_tiny_clip(sys.argv[1] if len(sys.argv) > 1 else "/tmp/inf/tiny-clip"))

"""Fixture models: tiny, randomly initialised models saved in the layouts of real model folders.

They produce noise, not speech or text, but they are loaded by exactly the code that loads the real models,
so tests exercise that code without downloading weights.
"""

import math
import os
import string
import time
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from multai.registry import MANIFEST_NAME

BARK_FIXTURE_ID = "bark-tiny-random"
# The preset names of suno/bark-small that the fixture carries.
BARK_FIXTURE_VOICES = [*(f"v2/en_speaker_{i}" for i in range(10)), "v2/es_speaker_8"]

# Bark's token layout, shrunk. In suno/bark-small there are 10_000 semantic tokens, then the end-of-semantic
# token, spare outputs up to 10_048, then the text tokens; EnCodec codebooks have 1024 codes.
SEMANTIC_VOCAB_SIZE = 32
SEMANTIC_EOS_TOKEN = SEMANTIC_VOCAB_SIZE
SEMANTIC_OUTPUT_VOCAB_SIZE = SEMANTIC_VOCAB_SIZE + 8
CODEBOOK_SIZE = 16
N_COARSE_CODEBOOKS = 2
N_FINE_CODEBOOKS = 8
# The coarse model reads semantic tokens and writes codes of both coarse codebooks after them.
COARSE_SEMANTIC_PAD_TOKEN = SEMANTIC_VOCAB_SIZE + N_COARSE_CODEBOOKS * CODEBOOK_SIZE
COARSE_INFER_TOKEN = COARSE_SEMANTIC_PAD_TOKEN + 2
COARSE_VOCAB_SIZE = COARSE_SEMANTIC_PAD_TOKEN + 8
# The fine model pads codebooks with the id CODEBOOK_SIZE.
FINE_VOCAB_SIZE = CODEBOOK_SIZE + 8
# EnCodec at 24 kHz with a hop of 8*5*4*2 = 320 samples runs at the coarse rate of 75 frames a second.
SAMPLE_RATE = 24_000
FRAME_RATE_HZ = 75
ENCODEC_UPSAMPLING_RATIOS = [8, 5, 4, 2]
# EnCodec derives its number of quantizers from its largest bandwidth: 2400 bit/s / (75 Hz * 4 bits) = 8.
ENCODEC_BANDWIDTH_KBPS = N_FINE_CODEBOOKS * FRAME_RATE_HZ * math.log2(CODEBOOK_SIZE) / 1000
TINY_TRANSFORMER = {"hidden_size": 8, "num_heads": 1, "num_layers": 1}
# Voice presets: the semantic prompt of real presets is ~2/3 as long as their coarse and fine prompts.
PRESET_SEMANTIC_LENGTH = 20
PRESET_FRAMES = 30

# A few common words, so that not every word is spelled one piece at a time.
COMMON_WORDS = (
    "the and of to in is you that it he she was for on are with as they be at one have this from "
    "hello there how what we can my your not"
)


def _bert_vocab() -> list[str]:
    """WordPiece vocabulary that spells any ASCII sentence: every printable character, alone or continuing."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = [c for c in string.printable if not c.isspace()]
    continuations = [f"##{c}" for c in string.ascii_letters + string.digits]
    return list(dict.fromkeys([*specials, *characters, *continuations, *COMMON_WORDS.split()]))


def _bark_generation_settings(text_vocab_size: int) -> dict[str, Any]:
    """generation_config.json's contents: the real keys, with lengths small enough for a fast sentence."""
    text_encoding_offset = SEMANTIC_OUTPUT_VOCAB_SIZE
    text_pad_token = text_encoding_offset + text_vocab_size
    return {
        "semantic_config": {
            "do_sample": True,
            "temperature": 0.7,
            "eos_token_id": SEMANTIC_EOS_TOKEN,
            # Random weights would end a sentence at any step; a floor keeps every sentence audible.
            "min_new_tokens": 8,
            "max_new_tokens": 24,
            "min_eos_p": 0.2,
            "text_encoding_offset": text_encoding_offset,
            "text_pad_token": text_pad_token,
            "semantic_infer_token": text_pad_token + 4,
            "semantic_vocab_size": SEMANTIC_VOCAB_SIZE,
            "max_input_semantic_length": 64,
            "semantic_rate_hz": 49.9,
        },
        "coarse_acoustics_config": {
            "do_sample": True,
            "temperature": 0.7,
            "coarse_semantic_pad_token": COARSE_SEMANTIC_PAD_TOKEN,
            "coarse_rate_hz": FRAME_RATE_HZ,
            "n_coarse_codebooks": N_COARSE_CODEBOOKS,
            "coarse_infer_token": COARSE_INFER_TOKEN,
            "max_coarse_input_length": 64,
            "max_coarse_history": 60,
            "sliding_window_len": 30,
        },
        "fine_acoustics_config": {
            "temperature": 0.5,
            "max_fine_history_length": 32,
            "max_fine_input_length": 64,
            "n_fine_codebooks": N_FINE_CODEBOOKS,
        },
        "sample_rate": SAMPLE_RATE,
        "codebook_size": CODEBOOK_SIZE,
    }


def _bark_model_config(text_vocab_size: int, generation: dict[str, Any]) -> dict[str, Any]:
    """config.json's contents: four minimal sub-models whose context windows fit the generation lengths."""
    semantic = generation["semantic_config"]
    coarse = generation["coarse_acoustics_config"]
    fine = generation["fine_acoustics_config"]
    return {
        "semantic_config": {
            **TINY_TRANSFORMER,
            # The prompt (text plus voice history), the infer token, then the generated tokens.
            "block_size": semantic["max_input_semantic_length"] + 1 + semantic["max_new_tokens"],
            "input_vocab_size": semantic["semantic_infer_token"] + 1,
            "output_vocab_size": SEMANTIC_OUTPUT_VOCAB_SIZE,
        },
        "coarse_acoustics_config": {
            **TINY_TRANSFORMER,
            # Semantic input, the infer token, the coarse history, then one sliding window of new codes.
            "block_size": coarse["max_coarse_input_length"]
            + 1
            + coarse["max_coarse_history"]
            + coarse["sliding_window_len"],
            "input_vocab_size": COARSE_VOCAB_SIZE,
            "output_vocab_size": COARSE_VOCAB_SIZE,
        },
        "fine_acoustics_config": {
            **TINY_TRANSFORMER,
            "block_size": fine["max_fine_input_length"],
            "input_vocab_size": FINE_VOCAB_SIZE,
            "output_vocab_size": FINE_VOCAB_SIZE,
            "n_codes_total": N_FINE_CODEBOOKS,
            "n_codes_given": 1,
        },
        "codec_config": {
            "model_type": "encodec",
            "sampling_rate": SAMPLE_RATE,
            "target_bandwidths": [ENCODEC_BANDWIDTH_KBPS],
            "upsampling_ratios": ENCODEC_UPSAMPLING_RATIOS,
            "codebook_size": CODEBOOK_SIZE,
            "hidden_size": 8,
            "num_filters": 2,
            "num_lstm_layers": 1,
        },
    }


def _write_voice_presets(folder: Path) -> dict[str, Any]:
    """Writes random but valid prompts for each preset; returns BarkProcessor's speaker_embeddings dict."""
    rng = np.random.default_rng(0)
    speaker_embeddings: dict[str, Any] = {"repo_or_path": str(folder)}
    for name in BARK_FIXTURE_VOICES:
        coarse = rng.integers(0, CODEBOOK_SIZE, (N_COARSE_CODEBOOKS, PRESET_FRAMES))
        # As in real presets, the fine prompt's first codebooks are the coarse prompt.
        extra_codebooks = rng.integers(
            0, CODEBOOK_SIZE, (N_FINE_CODEBOOKS - N_COARSE_CODEBOOKS, PRESET_FRAMES)
        )
        prompts = {
            "semantic_prompt": rng.integers(0, SEMANTIC_VOCAB_SIZE, PRESET_SEMANTIC_LENGTH),
            "coarse_prompt": coarse,
            "fine_prompt": np.concatenate([coarse, extra_codebooks]),
        }
        paths = {}
        for key, prompt in prompts.items():
            relative = f"speaker_embeddings/{name}_{key}.npy"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(folder / relative, prompt.astype(np.int64), allow_pickle=False)
            paths[key] = relative
        speaker_embeddings[name] = paths
    return speaker_embeddings


def build_bark_fixture(folder: Path) -> Path:
    """Builds `bark-tiny-random` into folder (absent or empty) in suno/bark-small's layout; returns folder.

    A folder that already has its manifest is complete and left alone.
    """
    if (folder / MANIFEST_NAME).is_file():
        return folder
    # Imported here: torch and transformers take seconds to import, and only this builder needs them.
    import torch
    from transformers import BarkConfig, BarkModel, BarkProcessor, BertTokenizer, GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    generation = _bark_generation_settings(len(vocab))

    torch.manual_seed(0)
    model = BarkModel(BarkConfig(**_bark_model_config(len(vocab), generation)))
    # A plain GenerationConfig with nested dicts is what BarkModel.from_pretrained reads back;
    # BarkGenerationConfig itself cannot be saved (it skips GenerationConfig.__init__).
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(folder)

    # Cased like bert-base-multilingual-cased; accents are stripped so Spanish text mostly tokenizes too.
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=False, strip_accents=True)
    # save_pretrained reads the prompts back and stores them with speaker_embeddings_path.json, as in the
    # real repo; its "repo_or_path" is this folder, and from_pretrained replaces it with the folder it reads.
    processor = BarkProcessor(tokenizer, speaker_embeddings=_write_voice_presets(folder))
    processor.save_pretrained(str(folder))

    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    )
    manifest = {
        "id": BARK_FIXTURE_ID,
        "aliases": [],
        "modality": "audio",
        "backend": "bark",
        "files": files,
        "size_bytes": sum(os.path.getsize(folder / name) for name in files),
        "n_layers": 0,
        "fixture": True,
        "description": (
            "Tiny randomly initialised Bark fixture that produces noise; built from configs to exercise "
            "the code path of real suno/bark-small folders"
        ),
        "created": int(time.time()),
        "defaults": {"voices": BARK_FIXTURE_VOICES},
    }
    # The manifest is written last, so a folder with a manifest is always complete.
    (folder / MANIFEST_NAME).write_bytes(tomli_w.dumps(manifest).encode())
    return folder

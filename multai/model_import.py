"""Adding a model from its own files: detect what a file or folder holds, read its size and layers from the
files' metadata, and write a model folder with its manifest (`multai models add` and `add-lora`).

What cannot be served is refused with the reason, before anything is written.
"""

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from multai.bundled_models import link_or_copy, write_model_folder
from multai.errors import ModelNotFoundError
from multai.registry import (
    MANIFEST_NAME,
    ModelManifest,
    ModelRegistry,
    is_valid_model_name,
    read_manifest,
)

GGUF_MAGIC = b"GGUF"
# Whisper's multilingual vocabularies hold 51,865 tokens or more; the English-only ones 51,864.
WHISPER_MULTILINGUAL_VOCABULARY = 51_865
# GGUF architectures that are not text models of their own (vision projectors, audio encoders).
NOT_CHAT_ARCHITECTURES = {"clip", "clap"}


class ModelImportError(ValueError):
    """The path holds nothing MultAI can serve, or the model cannot be added as asked; says why."""


@dataclass
class DetectedModel:
    """What a path holds, as the fields of its manifest, and the files to take (source → name in folder)."""

    fields: dict[str, Any]
    files: dict[Path, str]
    default_id: str
    defaults: dict[str, Any] = field(default_factory=dict)


def _slug(name: str) -> str:
    """A model id made of a file or folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.").lower()
    return slug[:128] or "model"


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """The key-value metadata of a GGUF file (strings, numbers and arrays), without its tensors."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ModelImportError(f"{path} is not a readable GGUF file: {exc}") from exc
    return {name: value.contents() for name, value in reader.fields.items()}


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def detect_gguf(path: Path) -> DetectedModel:
    """A GGUF model (llama_cpp, with its layer count) or a GGUF LoRA adapter (llama_cpp_lora)."""
    metadata = _gguf_metadata(path)
    architecture = str(metadata.get("general.architecture", ""))
    size = path.stat().st_size
    name = str(metadata.get("general.name", "")) or path.stem
    if metadata.get("general.type") == "adapter":
        kind = metadata.get("adapter.type")
        if kind != "lora":
            raise ModelImportError(
                f"{path} is a GGUF adapter of type {kind!r}; only LoRA adapters are served"
            )
        return DetectedModel(
            fields={
                "modality": "chat",
                "backend": "llama_cpp_lora",
                "size_bytes": size,
                "description": f"LoRA adapter {path.name} for {architecture} models",
            },
            files={path: "adapter.gguf"},
            default_id=_slug(path.stem),
        )
    layers = metadata.get(f"{architecture}.block_count")
    if not architecture or architecture in NOT_CHAT_ARCHITECTURES or not isinstance(layers, int):
        raise ModelImportError(
            f"{path} is a GGUF file of architecture {architecture or 'unknown'!r} without a layer count: "
            "not a text model the chat service can serve"
        )
    return DetectedModel(
        fields={
            "modality": "chat",
            "backend": "llama_cpp",
            "size_bytes": size,
            "n_layers": layers,
            "description": f"{name}, GGUF ({architecture}, {layers} layers)",
        },
        files={path: "model.gguf"},
        default_id=_slug(path.stem),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _folder_files(folder: Path) -> dict[Path, str]:
    return {
        path: path.relative_to(folder).as_posix()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.startswith(".")
    }


def _whisper_vocabulary_size(folder: Path) -> int:
    text_vocabulary = folder / "vocabulary.txt"
    if text_vocabulary.is_file():
        return len(text_vocabulary.read_text(encoding="utf-8").splitlines())
    listed = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    return len(listed)


def detect_folder(folder: Path) -> DetectedModel:
    """A folder of diffusers, LLaVA, Bark, sentence-transformers, Whisper (CTranslate2) or Piper."""
    config = _read_json(folder / "config.json")
    onnx = sorted(folder.glob("*.onnx"))
    defaults: dict[str, Any] = {}
    if (folder / "model_index.json").is_file():
        modality, backend, what = "image", "diffusers", "diffusers pipeline"
    elif config.get("model_type") == "llava":
        modality, backend, what = "vision", "llava", "LLaVA model"
    elif config.get("model_type") == "bark":
        modality, backend, what = "audio", "bark", "Bark model"
    elif (folder / "modules.json").is_file():
        modality, backend, what = "embedding", "sentence_transformers", "sentence-transformers model"
    elif (folder / "model.bin").is_file() and "alignment_heads" in config:
        if not any((folder / name).is_file() for name in ("vocabulary.txt", "vocabulary.json")):
            raise ModelImportError(f"{folder} holds a CTranslate2 Whisper model without its vocabulary file")
        modality, backend, what = "audio", "faster_whisper", "Whisper model (CTranslate2)"
        defaults["multilingual"] = _whisper_vocabulary_size(folder) >= WHISPER_MULTILINGUAL_VOCABULARY
    elif len(onnx) == 1 and onnx[0].with_suffix(".onnx.json").is_file():
        modality, backend, what = "audio", "piper", "Piper voice"
    else:
        raise ModelImportError(
            f"{folder} holds no model MultAI can serve: expected a folder of diffusers (model_index.json), "
            "LLaVA or Bark (config.json), sentence-transformers (modules.json), Whisper in CTranslate2 "
            "format (model.bin, config.json, vocabulary) or Piper (VOICE.onnx with VOICE.onnx.json)"
        )
    files = _folder_files(folder)
    return DetectedModel(
        fields={
            "modality": modality,
            "backend": backend,
            "size_bytes": sum(path.stat().st_size for path in files),
            "description": f"{what}, added from {folder.name}",
        },
        files=files,
        default_id=_slug(folder.name),
        defaults=defaults,
    )


def detect(path: Path) -> DetectedModel:
    """What `path` holds; ModelImportError with the reason when it is nothing MultAI can serve."""
    if path.is_dir():
        return detect_folder(path)
    if not path.is_file():
        raise ModelImportError(f"{path} does not exist")
    if not _is_gguf(path):
        raise ModelImportError(
            f"{path} is not a GGUF file; a model is a GGUF file or a folder of model files"
        )
    return detect_gguf(path)


def _installed(models_dir: Path) -> list[ModelManifest]:
    """Every readable manifest in the models folder, adapters whose base is missing included."""
    manifests = []
    if models_dir.is_dir():
        for folder in sorted(p for p in models_dir.iterdir() if (p / MANIFEST_NAME).is_file()):
            try:
                manifests.append(read_manifest(folder))
            except (ValueError, OSError):
                continue
    return manifests


def find_installed(models_dir: Path, name: str) -> ModelManifest:
    """The installed model with this id or alias; ModelImportError when there is none."""
    for manifest in _installed(models_dir):
        if name == manifest.id or name in manifest.aliases:
            return manifest
    raise ModelImportError(f"no model {name!r} is installed in {models_dir}")


def _check_names(models_dir: Path, model_id: str, aliases: list[str]) -> None:
    for name in (model_id, *aliases):
        if not is_valid_model_name(name):
            raise ModelImportError(f"{name!r} is not a valid model name: use only A-Z a-z 0-9 . _ : -")
    for manifest in _installed(models_dir):
        taken = {manifest.id, *manifest.aliases}
        for name in (model_id, *aliases):
            if name in taken:
                raise ModelImportError(f"the name {name!r} is taken by the installed model {manifest.id}")
    if (models_dir / model_id).exists():
        raise ModelImportError(f"{models_dir / model_id} exists already")


def _check_base(models_dir: Path, adapter: Path, base: str) -> None:
    """An adapter is only installed onto an installed GGUF model of its own architecture."""
    registry = ModelRegistry.scan(models_dir)
    try:
        manifest = registry.resolve(base)
    except ModelNotFoundError as exc:
        raise ModelImportError(
            f"the base model {base!r} of this adapter is not installed in {models_dir}; add it first"
        ) from exc
    if manifest.backend != "llama_cpp" or manifest.id != base:
        raise ModelImportError(
            f"the base model {base!r} must be the id of an installed GGUF model (llama_cpp), "
            f"not {manifest.id!r} ({manifest.backend})"
        )
    adapter_architecture = _gguf_metadata(adapter).get("general.architecture")
    base_architecture = _gguf_metadata(manifest.file_path()).get("general.architecture")
    if adapter_architecture != base_architecture:
        raise ModelImportError(
            f"the adapter is for {adapter_architecture!r} models, "
            f"but {base!r} is a {base_architecture!r} model"
        )


def add_model(
    models_dir: Path,
    path: Path,
    model_id: str | None = None,
    aliases: list[str] | None = None,
    base: str | None = None,
    scale: float = 1.0,
) -> Path:
    """Writes a model folder for `path` in models_dir (files hard-linked or copied, manifest last); a LoRA
    adapter needs the id of its installed base model. Returns the folder."""
    path = path.resolve()
    detected = detect(path)
    is_adapter = detected.fields["backend"] == "llama_cpp_lora"
    if is_adapter and not base:
        raise ModelImportError(f"{path} is a LoRA adapter; name the model it adapts with --base")
    if base and not is_adapter:
        raise ModelImportError(f"{path} is not a LoRA adapter, so it takes no --base")
    if base:
        _check_base(models_dir, path, base)
    model_id = model_id or detected.default_id
    aliases = aliases or []
    _check_names(models_dir, model_id, aliases)
    manifest: dict[str, Any] = {"id": model_id, "aliases": aliases, **detected.fields}
    if base:
        manifest |= {"base": base, "scale": scale}
    manifest |= {"files": list(detected.files.values()), "created": int(time.time())}
    if detected.defaults:
        manifest["defaults"] = detected.defaults
    # Checked as the services will read it, before anything is written.
    ModelManifest(**manifest)

    def write(folder: Path) -> None:
        for source, name in detected.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, folder / name)
        (folder / MANIFEST_NAME).write_bytes(tomli_w.dumps(manifest).encode())

    models_dir.mkdir(parents=True, exist_ok=True)
    return write_model_folder(models_dir, model_id, write)

"""Models as folders: each folder under MULTAI_MODELS_DIR with a model.toml manifest is one model."""

import hashlib
import logging
import re
import tomllib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from multai.errors import InvalidRequestError, ModelNotFoundError

MANIFEST_NAME = "model.toml"
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Modality = Literal["chat", "embedding", "audio", "image", "vision"]
Backend = Literal[
    "llama_cpp",
    "llama_cpp_lora",
    "faster_whisper",
    "piper",
    "bark",
    "diffusers",
    "llava",
    "sentence_transformers",
]
# A LoRA adapter is served on its base model, a GGUF of this backend.
ADAPTER_BACKENDS = {"llama_cpp_lora": "llama_cpp"}

log = logging.getLogger(__name__)


def is_valid_model_name(name: str) -> bool:
    """True for names made only of [A-Za-z0-9._:-]; rules out path separators and '..' tricks."""
    return bool(MODEL_NAME_PATTERN.match(name)) and name not in {".", ".."}


class ModelManifest(BaseModel):
    """The contents of model.toml, plus the folder it was read from."""

    id: str
    aliases: list[str] = Field(default_factory=list)
    modality: Modality
    backend: Backend
    files: list[str] = Field(min_length=1)
    size_bytes: int = Field(ge=0)
    n_layers: int = Field(0, ge=0)
    # Requests a batching engine serves at once (llama_cpp); 0 takes the service's default.
    parallel: int = Field(0, ge=0, le=64)
    fixture: bool = False
    description: str = ""
    created: int = 0
    # Engine-specific defaults, e.g. context_length and chat_template for llama_cpp.
    defaults: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)
    # For an adapter (llama_cpp_lora): the id of the model it is applied to, and its weight there.
    base: str = ""
    scale: float = Field(1.0, ge=-16, le=16)
    folder: Path = Path()

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not is_valid_model_name(value):
            raise ValueError(f"model id {value!r} must match {MODEL_NAME_PATTERN.pattern}")
        return value

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not is_valid_model_name(alias):
                raise ValueError(f"alias {alias!r} must match {MODEL_NAME_PATTERN.pattern}")
        return value

    @field_validator("files")
    @classmethod
    def _check_files(cls, value: list[str]) -> list[str]:
        for name in value:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"file {name!r} must be a path inside the model folder")
        return value

    @model_validator(mode="after")
    def _check_base(self) -> "ModelManifest":
        if (self.backend in ADAPTER_BACKENDS) != bool(self.base):
            raise ValueError(f"model {self.id}: `base` names the model of an adapter, and only of one")
        if self.base and not is_valid_model_name(self.base):
            raise ValueError(f"base {self.base!r} must match {MODEL_NAME_PATTERN.pattern}")
        return self

    @property
    def is_adapter(self) -> bool:
        """Whether this is an adapter served on its `base` model rather than a model of its own."""
        return bool(self.base)

    def file_path(self, index: int = 0) -> Path:
        """The absolute path of one of the model's files."""
        return self.folder / self.files[index]

    def int_default(self, name: str, fallback: int) -> int:
        """An integer default of the manifest (e.g. context_length), or `fallback` when it sets none."""
        value = self.numeric_default(name)
        return fallback if value is None else int(value)

    def numeric_default(self, name: str) -> int | float | None:
        """A numeric default of the manifest, if it sets one; a non-number is a broken manifest."""
        value = self.defaults.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"model {self.id}: defaults.{name} must be a number, not {value!r}")
        return value

    def system_fingerprint(self, engine: str) -> str:
        """OpenAI's `system_fingerprint`: the same while the model's files and the engine build are, so a
        client that compares seeded replies can tell when either changed."""
        identity = f"{self.id}|{self.size_bytes}|{self.created}|{engine}"
        return "fp_" + hashlib.sha256(identity.encode()).hexdigest()[:10]


def read_manifest(folder: Path) -> ModelManifest:
    """Parses folder/model.toml; raises ValueError with the reason when it is not a valid manifest."""
    with open(folder / MANIFEST_NAME, "rb") as f:
        data = tomllib.load(f)
    try:
        return ModelManifest(**data, folder=folder)
    except ValidationError as exc:
        raise ValueError(f"{folder / MANIFEST_NAME}: {exc}") from exc


class ModelRegistry:
    """The installed models of one modality (or all), by id and alias."""

    def __init__(self, manifests: Iterable[ModelManifest]) -> None:
        self._by_id: dict[str, ModelManifest] = {}
        self._by_name: dict[str, ModelManifest] = {}
        ordered = sorted(manifests, key=lambda m: m.id)
        backends = {m.id: m.backend for m in ordered}
        for manifest in ordered:
            if manifest.is_adapter and backends.get(manifest.base) != ADAPTER_BACKENDS[manifest.backend]:
                log.warning(
                    "skipping adapter %s: its base %s is not an installed %s model",
                    manifest.id,
                    manifest.base,
                    ADAPTER_BACKENDS[manifest.backend],
                )
                continue
            self._by_id[manifest.id] = manifest
            self._by_name[manifest.id] = manifest
        for manifest in self._by_id.values():
            for alias in manifest.aliases:
                if alias in self._by_name:
                    log.warning("alias %s of %s is taken by %s", alias, manifest.id, self._by_name[alias].id)
                    continue
                self._by_name[alias] = manifest

    @classmethod
    def scan(cls, models_dir: Path, modalities: Collection[Modality] | None = None) -> "ModelRegistry":
        """Reads every manifest under models_dir (of the given modalities, or all); broken folders are
        logged and skipped, never fatal."""
        manifests = []
        if models_dir.is_dir():
            for folder in sorted(p for p in models_dir.iterdir() if (p / MANIFEST_NAME).is_file()):
                try:
                    manifest = read_manifest(folder)
                except (ValueError, OSError) as exc:
                    log.warning("skipping model folder %s: %s", folder, exc)
                    continue
                if modalities is None or manifest.modality in modalities:
                    manifests.append(manifest)
        return cls(manifests)

    def resolve(self, name: str) -> ModelManifest:
        """The manifest for an id or alias; ModelNotFoundError otherwise."""
        manifest = self._by_name.get(name) if is_valid_model_name(name) else None
        if manifest is None:
            raise ModelNotFoundError(name)
        return manifest

    def resolve_for(self, name: str, backends: Collection[str], purpose: str) -> ModelManifest:
        """The manifest, if its engine serves `purpose`; otherwise a 400 that names the models that do."""
        manifest = self.resolve(name)
        if manifest.backend not in backends:
            fitting = ", ".join(m.id for m in self.models() if m.backend in backends) or "none installed"
            raise InvalidRequestError(
                f"'{name}' cannot be used for {purpose}; use one of: {fitting}",
                param="model",
            )
        return manifest

    def models(self) -> list[ModelManifest]:
        """All manifests in id order."""
        return list(self._by_id.values())

    def adapters_of(self, base: str) -> list[ModelManifest]:
        """The adapters served on a model, in id order."""
        return [m for m in self._by_id.values() if m.base == base]

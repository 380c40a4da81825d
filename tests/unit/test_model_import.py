"""`multai models add` and `remove`: what a path holds, the manifest from its own metadata, refusals."""

import shutil
import tomllib
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from multai.bundled_models import install_bundled
from multai.model_import import ModelImportError, add_model
from multai.models_cli import remove_model
from multai.ports import free_port
from multai.registry import MANIFEST_NAME, ModelRegistry
from multai.settings import MultaiSettings
from tests.e2e.mesh import PROJECT_ROOT

BASE_ID = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def bundled() -> Path:
    folder = PROJECT_ROOT / ".cache" / "test-models"
    install_bundled(folder)
    return folder


def copy_without_manifest(source: Path, target: Path) -> Path:
    """A model's files as a user would have them: the folder without MultAI's manifest."""
    shutil.copytree(source, target, copy_function=shutil.copy, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    return target


def manifest_of(folder: Path) -> dict[str, Any]:
    return tomllib.loads((folder / MANIFEST_NAME).read_text())


def write_gguf(path: Path, architecture: str, adapter: bool) -> Path:
    """A tiny GGUF file: a LoRA adapter's metadata and one tensor pair, or a model's without layer count."""
    writer = gguf.GGUFWriter(path, architecture)
    if adapter:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 16.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 64), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((64, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_file_becomes_a_chat_model_with_its_size_and_layers(bundled: Path, tmp_path: Path) -> None:
    source = tmp_path / "downloads" / "SmolLM2-135M.Q4_1.gguf"
    source.parent.mkdir()
    shutil.copy(bundled / BASE_ID / "model.gguf", source)
    folder = add_model(tmp_path / "models", source, aliases=["tiny"])
    manifest = manifest_of(folder)
    assert folder.name == "smollm2-135m.q4_1"
    assert manifest["backend"] == "llama_cpp"
    assert manifest["size_bytes"] == source.stat().st_size
    assert manifest["n_layers"] == 30  # llama.block_count of the GGUF
    assert ModelRegistry.scan(tmp_path / "models").resolve("tiny").id == folder.name


@pytest.mark.parametrize(
    ("bundled_name", "modality", "backend", "defaults"),
    [
        ("sdxl-tiny-random", "image", "diffusers", None),
        ("llava-tiny-random", "vision", "llava", None),
        ("bark-tiny-random", "audio", "bark", None),
        ("whisper-tiny.en", "audio", "faster_whisper", {"multilingual": False}),
        ("whisper-base", "audio", "faster_whisper", {"multilingual": True}),
        ("piper-en-us-joe", "audio", "piper", None),
        ("all-minilm-l6-v2", "embedding", "sentence_transformers", None),
    ],
)
def test_model_folders_are_recognised_by_their_files(
    bundled: Path, tmp_path: Path, bundled_name: str, modality: str, backend: str, defaults: object
) -> None:
    source = copy_without_manifest(bundled / bundled_name, tmp_path / "incoming" / bundled_name)
    folder = add_model(tmp_path / "models", source, model_id="added")
    manifest = manifest_of(folder)
    assert (manifest["modality"], manifest["backend"], manifest.get("defaults")) == (
        modality,
        backend,
        defaults,
    )
    original = manifest_of(bundled / bundled_name)
    assert sorted(manifest["files"]) == sorted(original["files"])
    assert manifest["size_bytes"] == original["size_bytes"]


def test_what_cannot_be_served_is_refused_with_the_reason(tmp_path: Path) -> None:
    noise = tmp_path / "notes.bin"
    noise.write_bytes(b"\x00not a model at all" * 100)
    with pytest.raises(ModelImportError, match="is not a GGUF file"):
        add_model(tmp_path / "models", noise)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelImportError, match="holds no model MultAI can serve"):
        add_model(tmp_path / "models", tmp_path / "empty")
    projector = write_gguf(tmp_path / "mmproj.gguf", "clip", adapter=False)
    with pytest.raises(ModelImportError, match="architecture 'clip'"):
        add_model(tmp_path / "models", projector)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_an_adapter_needs_an_installed_base_of_its_architecture(bundled: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    adapter = write_gguf(tmp_path / "style.gguf", "llama", adapter=True)
    with pytest.raises(ModelImportError, match="name the model it adapts with --base"):
        add_model(models, adapter)
    with pytest.raises(ModelImportError, match="base model 'smollm2-135m-instruct' of this adapter is not"):
        add_model(models, adapter, base=BASE_ID)
    install_bundled(models, [BASE_ID])
    other = write_gguf(tmp_path / "gemma-style.gguf", "gemma3", adapter=True)
    with pytest.raises(
        ModelImportError, match="for 'gemma3' models, but 'smollm2-135m-instruct' is a 'llama'"
    ):
        add_model(models, other, base=BASE_ID)

    folder = add_model(models, adapter, model_id="style", aliases=["house-style"], base=BASE_ID, scale=0.5)
    manifest = manifest_of(folder)
    assert (manifest["backend"], manifest["base"], manifest["scale"]) == ("llama_cpp_lora", BASE_ID, 0.5)
    assert ModelRegistry.scan(models).adapters_of(BASE_ID)[0].id == "style"
    with pytest.raises(ModelImportError, match="taken by the installed model style"):
        add_model(models, adapter, model_id="house-style", base=BASE_ID)


def test_adapters_whose_base_is_gone_are_not_served(bundled: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install_bundled(models, [BASE_ID])
    add_model(models, write_gguf(tmp_path / "style.gguf", "llama", adapter=True), "style", base=BASE_ID)
    shutil.rmtree(models / BASE_ID)
    assert ModelRegistry.scan(models).models() == []


def test_remove_deletes_a_model_no_scheduler_holds_but_not_a_base_in_use(
    bundled: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    install_bundled(models, [BASE_ID])
    add_model(models, write_gguf(tmp_path / "style.gguf", "llama", adapter=True), "style", base=BASE_ID)
    # No scheduler answers at this address, so nothing can be loaded.
    settings = MultaiSettings(models_dir=models, scheduler_address=f"127.0.0.1:{free_port()}", mesh_tls=False)
    with pytest.raises(ModelImportError, match="is the base of the adapters style"):
        remove_model(settings, BASE_ID, force=False)
    assert remove_model(settings, "style", force=False) == models / "style"
    assert remove_model(settings, BASE_ID, force=False) == models / BASE_ID
    assert not any(models.iterdir())
    with pytest.raises(ModelImportError, match="no model 'style' is installed"):
        remove_model(settings, "style", force=False)

"""ModelRegistry: manifests, aliases, name validation."""

from pathlib import Path

import pytest

from multai.errors import ModelNotFoundError
from multai.registry import ModelRegistry


def write_model(root: Path, folder: str, body: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "model.toml").write_text(body)


MANIFEST = """
id = "{id}"
aliases = {aliases}
modality = "chat"
backend = "llama_cpp"
files = ["w.gguf"]
size_bytes = 10
"""


def test_resolves_ids_and_aliases_and_skips_broken_folders(tmp_path: Path) -> None:
    write_model(tmp_path, "a", MANIFEST.format(id="model-a", aliases='["gpt-4"]'))
    write_model(tmp_path, "bad", MANIFEST.format(id="../evil", aliases="[]"))
    write_model(tmp_path, "junk", "not toml [")
    registry = ModelRegistry.scan(tmp_path)
    assert [m.id for m in registry.models()] == ["model-a"]
    assert registry.resolve("gpt-4").id == "model-a"
    assert registry.resolve("model-a").folder == tmp_path / "a"


@pytest.mark.parametrize("name", ["nope", "../model-a", "model-a/..", "", "a b"])
def test_unknown_or_malformed_names_are_model_not_found(tmp_path: Path, name: str) -> None:
    write_model(tmp_path, "a", MANIFEST.format(id="model-a", aliases="[]"))
    with pytest.raises(ModelNotFoundError):
        ModelRegistry.scan(tmp_path).resolve(name)


def test_modality_filter(tmp_path: Path) -> None:
    write_model(tmp_path, "a", MANIFEST.format(id="model-a", aliases="[]"))
    assert ModelRegistry.scan(tmp_path, ["audio"]).models() == []

"""SentenceTransformersBackend: text embeddings with a sentence-transformers model folder."""

from typing import Any

import numpy as np
import numpy.typing as npt

from multai.registry import ModelManifest


class SentenceTransformersBackend:
    """One sentence-transformers folder (e.g. all-MiniLM-L6-v2); vectors come back unit-length."""

    def __init__(self, manifest: ModelManifest) -> None:
        self._manifest = manifest
        self._model: Any = None

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        # Imported here: sentence-transformers pulls in torch, which only embedding hosts need.
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(
            str(self._manifest.folder), device="cuda" if use_gpu else "cpu", local_files_only=True
        )
        return self._manifest.size_bytes

    def unload(self) -> None:
        self._model = None

    def dimensions(self) -> int:
        """The length of the model's vectors."""
        return int(self._require_loaded().get_sentence_embedding_dimension())

    def vocabulary_size(self) -> int:
        """The number of token ids the tokenizer knows."""
        return len(self._require_loaded().tokenizer)

    def decode(self, token_ids: list[int]) -> str:
        """Token ids of the model's own tokenizer, back to text."""
        return str(self._require_loaded().tokenizer.decode(token_ids, skip_special_tokens=True))

    def embed(self, texts: list[str], dimensions: int) -> tuple[npt.NDArray[np.float32], int]:
        """One unit vector of `dimensions` numbers per text, and the number of tokens read (as the model
        truncates them).

        Fewer dimensions than the model's keep the first ones and renormalise, as OpenAI shortens its
        text-embedding-3 vectors; models not trained for that (Matryoshka) lose more quality doing it.
        """
        model = self._require_loaded()
        encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
        if dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, 1)
        return vectors.astype(np.float32), tokens

    def _require_loaded(self) -> Any:
        if self._model is None:
            raise RuntimeError(f"model {self._manifest.id} is not loaded")
        return self._model

"""What the PyTorch backends (Bark, LLaVA, diffusers) share: where a leased model runs, in which precision,
how its memory is handed back, and seeded sampling."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Seeding is process-wide in torch, so concurrent generations would draw from each other's sequence.
_SEEDED_GENERATION_LOCK = threading.Lock()


def leased_device(use_gpu: bool) -> torch.device:
    """The device a lease grants: CUDA when granted and present, else the CPU."""
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def weights_dtype(device: torch.device) -> torch.dtype:
    """Half precision on a GPU halves its memory; CPUs are slow at it, so they keep float32."""
    return torch.float16 if device.type == "cuda" else torch.float32


def release_device_memory(device: torch.device) -> None:
    """After a model is dropped: empties the CUDA cache so that the scheduler sees the memory as free."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def seeded_generation(seed: int, device: torch.device) -> Iterator[None]:
    """Runs the block alone with torch's generators seeded, restoring them afterwards, so the same seed gives
    the same samples whatever ran before."""
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with _SEEDED_GENERATION_LOCK, torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield

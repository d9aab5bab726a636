"""Safe weight loading, fingerprints and device choice shared by every model adapter."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


class ModelWeightsMissing(FileNotFoundError):
    """Real weights were asked for and are not installed. The message says how to provide them."""


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint without executing code: safetensors, or torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def fingerprint_module(name: str, module: torch.nn.Module) -> str:
    """sha256 over a module's name, parameter names and parameter bytes (16 hex chars).

    Two workers with the same weights get the same fingerprint, so they share cache
    entries; any changed weight changes it.
    """
    digest = hashlib.sha256(name.encode())
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def combine_fingerprints(parts: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(parts):
        digest.update(f"{key}={parts[key]};".encode())
    return digest.hexdigest()[:16]


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
    return device

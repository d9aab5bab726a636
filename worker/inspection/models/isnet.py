"""IS-Net (DIS, "Highly Accurate Dichotomous Image Segmentation") salient-object model.

The ONNX file is fetched by ``make models`` (``scripts/fetch_isnet.py``) into
``models/isnet/isnet.onnx``. This module only wraps it in an
``onnxruntime.InferenceSession`` and reproduces the reference pre/post-processing
of ``xuebinqin/DIS`` ``IS-Net/Inference.py``:

* input: RGB uint8, bilinear resize to 1024x1024, ``x / 255``, then
  ``(x - 0.5) / 1.0`` per channel (torchvision ``normalize(image, [0.5]*3, [1.0]*3)``);
  layout NCHW float32 ``[1, 3, 1024, 1024]``.
* output: ``sigmoid(d1)`` ``[1, 1, 1024, 1024]`` float32 (the sigmoid is inside the
  graph), min-max normalised to [0, 1] per image, bilinear resize back to HxW.

The ``@imgly/background-removal`` JS runtime that ships this ONNX feeds
``(x - 128) / 256``, i.e. the same transform up to <0.5% (mean 0.502, std 1.004).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DEFAULT_ISNET_PATH",
    "ISNET_FILE",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "IsNetSalientModel",
    "default_isnet_path",
    "load_isnet",
    "providers_for",
    "sha256_file",
]

#: Where the model lies inside a models folder (``ModelSettings.models_dir``).
ISNET_FILE = Path("isnet") / "isnet.onnx"


def default_isnet_path(models_dir: str | Path = "models") -> Path:
    """The IS-Net file when ``ModelSettings.isnet_path`` is not set: ``<models_dir>/isnet/isnet.onnx``."""
    return Path(models_dir) / ISNET_FILE


#: Where ``make models`` puts the model, relative to the repository root.
DEFAULT_ISNET_PATH = default_isnet_path()
#: IS-Net's fixed square input resolution.
INPUT_SIZE = 1024
#: Per-channel normalisation applied to pixels scaled to [0, 1] (DIS reference).
MEAN = 0.5
STD = 1.0

_EPS = 1e-8


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def providers_for(device_type: str, device_index: int | None, available: Sequence[str]) -> list:
    """onnxruntime providers for the torch device the worker runs on: IS-Net on the same GPU, or the CPU.

    A CPU worker never takes a GPU; a CUDA worker whose onnxruntime is the CPU build (no
    `gpu` extra) runs IS-Net on the CPU.
    """
    if device_type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device_index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class IsNetSalientModel:
    """Salient-object (foreground) probability maps from IS-Net.

    Attributes:
        path: the ONNX file.
        fingerprint: hex sha256 of the ONNX file bytes (64 chars);
            ``short_fingerprint`` is its first 16 chars.
        providers: execution providers the session actually uses.
        batch_size: the model's batch dimension if fixed (IS-Net exports use 1),
            ``None`` if dynamic.
    """

    def __init__(self, session, path: Path, fingerprint: str) -> None:
        self.session = session
        self.path = Path(path)
        self.fingerprint = fingerprint
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected 1 input, got {[i.name for i in inputs]}")
        inp = inputs[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2] != INPUT_SIZE or shape[3] != INPUT_SIZE:
            raise ValueError(f"{path}: input {inp.name} has shape {shape}, expected [N, 3, {INPUT_SIZE}, {INPUT_SIZE}]")
        self.input_name: str = inp.name
        self.batch_size: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        outputs = session.get_outputs()
        names = [o.name for o in outputs]
        # The imgly export names the final sigmoid(d1) map "output" and also
        # exposes the side outputs d2..d6 and decoder features; we only need d1.
        self.output_name: str = "output" if "output" in names else names[0]
        self.providers: list[str] = list(session.get_providers())

    @property
    def short_fingerprint(self) -> str:
        """First 16 hex chars of :attr:`fingerprint`."""
        return self.fingerprint[:16]

    def __repr__(self) -> str:
        return (
            f"IsNetSalientModel(path={str(self.path)!r}, fingerprint={self.short_fingerprint}, "
            f"providers={self.providers})"
        )

    # ------------------------------------------------------------------ pre/post
    @staticmethod
    def preprocess(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
        """HxWx3 uint8 RGB -> 3 x size x size float32 (1024 for the shipped graph), ``(x/255 - 0.5) / 1.0``."""
        _check_image(image)
        h, w = image.shape[:2]
        if (h, w) != (size, size):
            resized = Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR)
            arr = np.asarray(resized, dtype=np.float32)
        else:
            arr = image.astype(np.float32)
        arr = (arr / 255.0 - MEAN) / STD
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    @staticmethod
    def postprocess(raw: np.ndarray, height: int, width: int, size: int = INPUT_SIZE) -> np.ndarray:
        """size x size float32 (``sigmoid(d1)``) -> HxW float32 in [0, 1].

        Min-max normalised per image like the DIS reference. A constant map
        (``max - min < 1e-8``, where DIS would divide by zero) becomes all zeros.
        """
        raw = np.asarray(raw, dtype=np.float32).reshape(size, size)
        lo = float(raw.min())
        hi = float(raw.max())
        if hi - lo < _EPS:
            norm = np.zeros_like(raw)
        else:
            norm = (raw - lo) / (hi - lo)
        if (height, width) != (size, size):
            norm = np.asarray(
                Image.fromarray(np.ascontiguousarray(norm)).resize((width, height), Image.BILINEAR),
                dtype=np.float32,
            )
        return np.clip(norm, 0.0, 1.0).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ inference
    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed batch.

        Args:
            batch: Nx3x1024x1024 float32 (already normalised).
        Returns:
            Nx1024x1024 float32, the graph's ``sigmoid(d1)`` (not min-max normalised).
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.batch_size or len(batch)
        outs = []
        for i in range(0, len(batch), max(step, 1)):
            (out,) = self.session.run([self.output_name], {self.input_name: batch[i : i + step]})
            outs.append(out.reshape(-1, INPUT_SIZE, INPUT_SIZE))
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.float32)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Salient-object maps.

        Args:
            images: each an HxWx3 uint8 RGB array (sizes may differ).
        Returns:
            one HxW float32 array in [0, 1] per input (1 = salient object),
            same H and W as that input.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise TypeError("predict() takes a list of HxWx3 images; wrap a single image in a list")
        images = list(images)
        if not images:
            return []
        batch = np.stack([self.preprocess(im) for im in images])
        raw = self.predict_raw(batch)
        return [self.postprocess(r, im.shape[0], im.shape[1]) for r, im in zip(raw, images)]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an HxWx3 RGB array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got dtype {image.dtype}")


def load_isnet(
    path: str | Path = DEFAULT_ISNET_PATH,
    providers: Sequence[str] | None = None,
    intra_op_num_threads: int | None = None,
    torch_runtime: tuple | None = None,
) -> IsNetSalientModel:
    """Open the IS-Net ONNX file at ``path``.

    Uses ``CUDAExecutionProvider`` when onnxruntime offers it, else CPU, unless
    ``providers`` is given. ``intra_op_num_threads`` defaults to ``OMP_NUM_THREADS`` where it is
    set, the budget torch reads too (a CPU-limited pod sets it), else to onnxruntime's own choice
    (the physical cores). ``torch_runtime`` = (device, precision) runs the graph on torch
    instead (isnet_torch.py); the fingerprint is the file's either way.

    Raises:
        FileNotFoundError: the file is missing (run ``make models``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"IS-Net model not found at {path.resolve()}; run `make models` (scripts/fetch_isnet.py) to download it"
        )
    if torch_runtime is not None:
        from worker.inspection.models.isnet_torch import torch_isnet_session

        return IsNetSalientModel(torch_isnet_session(path, *torch_runtime), path, sha256_file(path))
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_num_threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        intra_op_num_threads = int(os.environ["OMP_NUM_THREADS"])
    if intra_op_num_threads:
        opts.intra_op_num_threads = intra_op_num_threads
    providers = list(providers) if providers else _default_providers()
    session = ort.InferenceSession(
        onnxruntime_graph(onnx.load(str(path)), providers).SerializeToString(), sess_options=opts, providers=providers
    )
    return IsNetSalientModel(session, path, sha256_file(path))


def onnxruntime_graph(model: onnx.ModelProto, providers: Sequence) -> onnx.ModelProto:
    """The graph onnxruntime runs: only the salient map, and on the CPU provider in fp32 throughout.

    The export rounds activations through fp16 Casts; a CPU computes fp16 no faster, so there the
    casts only cost: 1,588-1,648 ms against 1,722-1,770 per 1024 px pass side by side, with a largest
    difference in the map of 2.9e-5. A GPU provider keeps the export's own graph.
    """
    from worker.inspection.models.isnet_torch import as_fp32_graph, only_the_salient_map

    first = providers[0]  # a name, or (name, options)
    on_cpu = (first if isinstance(first, str) else first[0]) == "CPUExecutionProvider"
    model = only_the_salient_map(model)
    return as_fp32_graph(model) if on_cpu else model

"""CLIP (open_clip) adapter: normalised image and text embeddings for tile scoring."""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F

from worker.inspection.models.precision import DTYPES, Precision, SwitchesPrecision, converted_copy
from worker.inspection.models.text_context import encode_text_trimmed


@dataclass(frozen=True)
class ImageNormalisation:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ClipModel(SwitchesPrecision):
    """Wraps an open_clip model with its tokenizer and input normalisation.

    The wrapped model stays a plain `nn.Module`; this class only adds the
    batching and normalisation the pipeline needs.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, normalisation: ImageNormalisation, device: torch.device):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.normalisation = normalisation
        self.device = device
        self.text_forward_calls = 0  # counted so tests can prove the cache spares the text tower
        self.precision = "fp32"  # set by the registry from models.precision

    def _use_precision(self, value: Precision) -> None:
        # The image tower runs on a copy converted to bf16/fp16/int8 rather than under autocast: on an
        # AMX CPU autocast made batches of tiles slower than fp32 (bench --precision-probe), the
        # converted copy faster. The fp32 weights stay, so fp32 can be switched back exactly.
        self._visual_half = converted_copy(self.model.visual, value)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """images: (N, 3, S, S) float in [0, 1] at `normalisation.size` -> (N, D) unit vectors."""
        mean = torch.tensor(self.normalisation.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.normalisation.std, device=self.device).view(1, 3, 1, 1)
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = (images[start : start + batch_size].to(self.device) - mean) / std
            if self._visual_half is None:
                features = self.model.encode_image(chunk)
            else:
                features = self._visual_half(chunk.to(DTYPES[self._precision]))
            outputs.append(F.normalize(features.float(), dim=-1))
        return torch.cat(outputs) if outputs else torch.empty(0, self.embed_dim)

    def patch_layers(self, layers: tuple[int, ...]) -> tuple[int, ...]:
        """Absolute block indices of `layers` (negative counts from the end, clamped to the depth)."""
        depth = len(self.model.visual.transformer.resblocks)
        return tuple(sorted({max(-depth, min(depth - 1, i)) % depth for i in layers}))

    @torch.inference_mode()
    def encode_images_with_patches(
        self, images: torch.Tensor, layers: tuple[int, ...], batch_size: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One vision-tower pass: (N, D) unit embeddings (as `encode_images`) and (N, L, n, C) unit
        patch tokens of the blocks `layers` (n = grid * grid patches, class token dropped), on the device."""
        mean = torch.tensor(self.normalisation.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.normalisation.std, device=self.device).view(1, 3, 1, 1)
        indices = list(self.patch_layers(layers))
        embeddings, patches = [], []
        for start in range(0, len(images), batch_size):
            chunk = (images[start : start + batch_size].to(self.device) - mean) / std
            if self._visual_half is None:
                out = self.model.visual.forward_intermediates(chunk, indices=indices, output_fmt="NLC")
            else:  # the same precision as encode_images, so a bank never changes the tile score's
                half = chunk.to(DTYPES[self._precision])
                out = self._visual_half.forward_intermediates(half, indices=indices, output_fmt="NLC")
            embeddings.append(F.normalize(out["image_features"].float(), dim=-1))
            patches.append(F.normalize(torch.stack(out["image_intermediates"], dim=1).float(), dim=-1))
        if not embeddings:
            return torch.empty(0, self.embed_dim), torch.empty(0, len(indices), 0, 0)
        return torch.cat(embeddings), torch.cat(patches)

    @property
    def patch_grid(self) -> int:
        """Patches per tile side (image size / patch size)."""
        return self.normalisation.size // int(self.model.visual.patch_size[0])

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """texts: P prompts -> (P, D) unit vectors.

        The text tower runs on the context trimmed to the longest prompt of the batch
        (19 of 77 tokens for WinCLIP's prompts); text_context.py shows why that is exact.
        """
        outputs = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)
            self.text_forward_calls += 1
            outputs.append(F.normalize(encode_text_trimmed(self.model, tokens).float(), dim=-1))
        return torch.cat(outputs).cpu()

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else 0


def build_open_clip(
    model_name: str, pretrained: str | None, device: torch.device, model_cfg: dict | None = None
) -> ClipModel:
    """Build an open_clip model by registry name (optionally a custom config) and wrap it.

    pretrained: None for random weights, an open_clip tag, or a local checkpoint path
    (open_clip loads checkpoints with `weights_only=True`).
    """
    if model_cfg is not None:
        model = open_clip.CLIP(**model_cfg)
        image_size = model_cfg["vision_cfg"]["image_size"]
        tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    else:
        model = open_clip.create_model(model_name, pretrained=pretrained, weights_only=True)
        image_size = model.visual.image_size
        image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
        tokenizer = open_clip.get_tokenizer(model_name)
    normalisation = ImageNormalisation(
        size=int(image_size), mean=tuple(open_clip.OPENAI_DATASET_MEAN), std=tuple(open_clip.OPENAI_DATASET_STD)
    )
    return ClipModel(model, tokenizer, normalisation, device)

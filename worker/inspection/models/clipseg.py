"""CLIPSeg (transformers) adapter: per-prompt pixel maps for a batch of tiles.

The expensive part of CLIPSeg is its CLIP vision tower. `segment` runs it once per
tile, and only up to the deepest layer the decoder reads (10 of 12 in CIDAS
CLIPSeg); the decoder then runs once per (tile, prompt), instead of the whole
model once per (tile, prompt), with its tile-side projections once per tile
(clipseg_decoder.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

from worker.inspection.models.clipseg_decoder import decode_pairs, running_decoder
from worker.inspection.models.precision import (
    DTYPES,
    HALF_PRECISIONS,
    Precision,
    SwitchesPrecision,
    autocast,
    converted_copy,
    shared_copy,
)

# On a CPU the decoder's 2048-wide MLP activations fall out of the cache in big batches: 9 (tile, prompt)
# pairs per call ran 1.8x faster per tile than 54 on the AMX CPU (docs/benchmarks.md). A GPU takes them all.
CPU_DECODER_PAIRS = 9

# ViTImageProcessor defaults used by the CIDAS CLIPSeg checkpoints.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OpenClipTokens:
    """Tokenises with open_clip's bundled CLIP BPE (same vocabulary as CLIPSeg's text tower).

    Used for randomly initialised profiles, where no tokenizer files exist on disk.
    """

    def __init__(self, context_length: int = 77):
        self.tokenizer = open_clip.SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(texts)
        eot_positions = ids.argmax(dim=-1)  # EOT has the largest id in the vocabulary
        mask = (torch.arange(ids.shape[1])[None, :] <= eot_positions[:, None]).long()
        return ids, mask


class HfTokens:
    """Tokenises with the tokenizer saved beside real CLIPSeg weights."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]


class ClipSegModel(SwitchesPrecision):
    def __init__(
        self,
        model: CLIPSegForImageSegmentation,
        tokens,
        device: torch.device,
        size: int = 352,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ):
        self.model = model.to(device).eval()
        self.tokens = tokens
        self.device = device
        self.size = size
        self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.text_forward_calls = 0
        self.vision_forward_images = 0  # images pushed through the vision tower (for the benchmark)
        self.precision: Precision = "fp32"  # set by the registry from models.precision

    def _use_precision(self, value: Precision) -> None:
        # `segment` runs the vision trunk and decoder converted to bf16/fp16: 17% faster per tile than
        # autocast on an AMX CPU (no weight casts per call; docs/benchmarks.md). The fp32 weights stay
        # for the text tower, the naive path and an exact switch back to fp32. In int8 only the trunk is
        # quantised: the small decoder keeps its fp32 weights and fused MLPs.
        trunk = vision_trunk(self.model.clip.vision_model, max(self.model.extract_layers) + 1)
        decoder = self.model.decoder
        if value != "fp32":
            trunk = converted_copy(trunk, value)
        if value in HALF_PRECISIONS:
            decoder = converted_copy(decoder, value)
        self._segment_modules = (trunk, running_decoder(decoder, self.device))

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.device) - self._mean) / self._std

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """texts: P prompts -> (P, projection_dim) conditional embeddings on the CPU."""
        ids, mask = self.tokens(texts)
        self.text_forward_calls += 1
        features = self.model.clip.get_text_features(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        features = getattr(features, "pooler_output", features)
        return features.float().cpu()

    @torch.inference_mode()
    def segment(self, images: torch.Tensor, prompt_embeddings: torch.Tensor, pairs_per_chunk: int = 64) -> torch.Tensor:
        """images: (N, 3, size, size) in [0, 1]; prompt_embeddings: (P, E) -> (N, P, size, size) probabilities."""
        n_images, n_prompts = len(images), len(prompt_embeddings)
        out = torch.empty(n_images, n_prompts, self.size, self.size)
        if n_images == 0 or n_prompts == 0:
            return out
        conditional = prompt_embeddings.to(self.device)
        images_per_chunk = max(1, pairs_per_chunk // n_prompts)
        layers = [i + 1 for i in self.model.extract_layers]  # hidden_states[0] is the embedding output
        self._segment_chunks(images, conditional, images_per_chunk, layers, out)
        return out

    def _segment_chunks(self, images, conditional, images_per_chunk: int, layers: list[int], out: torch.Tensor) -> None:
        n_images, n_prompts = len(images), len(conditional)
        trunk, decoder = self._segment_modules
        dtype = DTYPES[self._precision]
        conditional = conditional.to(dtype)
        for start in range(0, n_images, images_per_chunk):
            chunk = self._normalise(images[start : start + images_per_chunk]).to(dtype)
            vision = trunk(pixel_values=chunk, output_hidden_states=True, interpolate_pos_encoding=True)
            self.vision_forward_images += len(chunk)
            step = CPU_DECODER_PAIRS if self.device.type == "cpu" else len(chunk) * n_prompts
            logits = decode_pairs(decoder, [vision.hidden_states[i] for i in layers], conditional, step)
            out[start : start + len(chunk)] = (
                torch.sigmoid(logits.float()).view(len(chunk), n_prompts, *logits.shape[-2:]).cpu()
            )

    @torch.inference_mode()
    def segment_naive(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Reference path for the benchmark: full forward (vision + text) once per (tile, prompt)."""
        out = torch.empty(len(images), len(texts), self.size, self.size)
        ids, mask = self.tokens(texts)
        for i in range(len(images)):
            pixels = self._normalise(images[i : i + 1]).repeat(len(texts), 1, 1, 1)
            with autocast(self.precision, self.device):
                logits = self.model(
                    pixel_values=pixels, input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
            self.vision_forward_images += len(texts)
            self.text_forward_calls += 1
            out[i] = torch.sigmoid(logits.float()).view(len(texts), *logits.shape[-2:]).cpu()
        return out


def vision_trunk(vision_model: torch.nn.Module, depth: int) -> torch.nn.Module:
    """The vision tower cut after `depth` encoder layers; it shares the tower's weights.

    The decoder reads only the hidden states of `extract_layers`, so the layers after the deepest
    one change nothing in the maps. The module tree is copied, the tensors are not.
    """
    trunk = shared_copy(vision_model)
    trunk.encoder.layers = trunk.encoder.layers[:depth]
    return trunk


def build_clipseg_random(config: CLIPSegConfig, device: torch.device, seed: int) -> ClipSegModel:
    """A randomly initialised CLIPSeg of the given architecture (tests and benchmarks only)."""
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config)
    return ClipSegModel(model, OpenClipTokens(config.text_config.max_position_embeddings), device)


def load_clipseg_folder(folder: Path, device: torch.device) -> ClipSegModel:
    """Real CLIPSeg weights from a local folder (config.json, weights, tokenizer, preprocessor_config.json)."""
    from transformers import AutoTokenizer

    model = CLIPSegForImageSegmentation.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    size, mean, std = 352, IMAGENET_MEAN, IMAGENET_STD
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        config = json.loads(preprocessor.read_text())
        size_cfg = config.get("size", size)
        size = size_cfg.get("height", size) if isinstance(size_cfg, dict) else int(size_cfg)
        mean = tuple(config.get("image_mean", mean))
        std = tuple(config.get("image_std", std))
    return ClipSegModel(model, HfTokens(tokenizer), device, size=size, mean=mean, std=std)

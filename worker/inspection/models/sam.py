"""Segment Anything adapter: automatic instance-mask proposals for a frame."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from worker.inspection.models.precision import InPrecision, Precision, SwitchesPrecision
from worker.inspection.models.sam_decoder import SharedImageMaskDecoder
from worker.inspection.models.sam_input import encoder_side, set_input_side
from worker.inspection.models.sam_salient import SalientMaskGenerator, SalientPrompting
from worker.inspection.models.weights import load_state_dict

# On a CPU the mask decoder's per-point copies of the image embedding (points x 256 x 40 x 40 at 640 px)
# fall out of the cache in big batches: 8 points per call ran 1.6x (bf16) to 1.9x (fp32) faster per point
# than 64 on the AMX CPU (docs/benchmarks.md). A GPU keeps segment-anything's 64.
CPU_POINTS_PER_BATCH = 8


@dataclass(frozen=True)
class SamGeneratorOptions:
    """Knobs of SamAutomaticMaskGenerator (SAM's defaults are for real weights)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    min_mask_region_area: int = 0
    box_nms_thresh: float = 0.7


class SamMaskProposer(SwitchesPrecision):
    """SAM's automatic masks of a frame, with the encoder at `image_size` (models.sam_image_size).

    A side above the model's own runs at the model's own (only the tiny profile, 256 px, has
    one below the setting's 1024 default); see sam_input.py for what a smaller side changes.
    """

    def __init__(self, sam: Sam, options: SamGeneratorOptions, device: torch.device, image_size: int | None = None):
        # Before the generator: its predictor builds ResizeLongestSide from img_size.
        set_input_side(sam, min(image_size or encoder_side(sam), encoder_side(sam)))
        self.sam = sam.to(device).eval()
        self.device = device
        points_per_batch = options.points_per_batch
        if device.type == "cpu":
            points_per_batch = min(points_per_batch, CPU_POINTS_PER_BATCH)
        self.generator = SalientMaskGenerator(
            self.sam,
            points_per_side=options.points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=options.pred_iou_thresh,
            stability_score_thresh=options.stability_score_thresh,
            min_mask_region_area=options.min_mask_region_area,
            box_nms_thresh=options.box_nms_thresh,
        )
        self.precision: Precision = "fp32"  # set by the registry from models.precision

    def _use_precision(self, value: Precision) -> None:
        # In bf16/fp16 the generator's predictor runs copies of the image encoder and mask decoder converted to
        # it: 8% (encoder) and 1.3x (decoder) faster than autocast on an AMX CPU (docs/benchmarks.md). In int8
        # their Linear layers are quantised: encoder 2.4x, decoder 1.4x faster than fp32 on a VNNI CPU.
        # `self.sam` keeps the fp32 weights: the fingerprint and an exact switch back to fp32.
        self.generator.predictor.model = running_sam(self.sam, value)

    @property
    def grid_points(self) -> int:
        """Decoder prompts per image with the full grid."""
        return sum(len(grid) for grid in self.generator.full_grids)

    @property
    def last_points(self) -> int:
        """Decoder prompts of the last image proposed."""
        return self.generator.last_points

    @torch.inference_mode()
    def propose(self, image: np.ndarray, prompting: SalientPrompting | None = None) -> list[np.ndarray]:
        """image: (H, W, 3) uint8 RGB -> list of (H, W) boolean instance masks.

        With `prompting`, only grid points inside its dilated salient mask are prompted and
        masks that fail its coverage rule are dropped; without it, the full grid (the paper's way).
        """
        records = self.generator.generate_in(image, prompting)
        return [record["segmentation"] for record in records]


def running_sam(sam: Sam, precision: Precision) -> Sam:
    """The Sam the generator runs: its mask decoder shares the image across a batch of points, and in
    bf16/fp16/int8 its image encoder and mask decoder are converted copies; the small prompt encoder stays fp32.

    In fp32 every module is `sam`'s own (no copy of any weight).
    """
    encoder, decoder = sam.image_encoder, SharedImageMaskDecoder(sam.mask_decoder)
    if precision != "fp32":
        encoder, decoder = InPrecision(encoder, precision), InPrecision(decoder, precision)
        encoder.img_size = sam.image_encoder.img_size  # read by SamPredictor and Sam.preprocess
    running = Sam(
        image_encoder=encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=sam.pixel_mean.flatten().tolist(),
        pixel_std=sam.pixel_std.flatten().tolist(),
    )
    running.image_format = sam.image_format
    return running.to(sam.device).eval()


def load_sam(
    sam_type: str, checkpoint: Path, device: torch.device, options: SamGeneratorOptions, image_size: int | None = None
) -> SamMaskProposer:
    """Real SAM weights: build the registry architecture, load the checkpoint safely, then resize the input."""
    sam = sam_model_registry[sam_type](checkpoint=None)
    sam.load_state_dict(load_state_dict(checkpoint))
    return SamMaskProposer(sam, options, device, image_size)


def build_sam_random(
    sam_type: str, device: torch.device, options: SamGeneratorOptions, seed: int, image_size: int | None = None
) -> SamMaskProposer:
    torch.manual_seed(seed)
    return SamMaskProposer(sam_model_registry[sam_type](checkpoint=None), options, device, image_size)


def build_tiny_sam(
    device: torch.device, options: SamGeneratorOptions, seed: int, image_size: int | None = None
) -> SamMaskProposer:
    """A few-layer SAM of the real module types: 256 px input, 32-wide embeddings."""
    torch.manual_seed(seed)
    native, patch, dim = 256, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=native,
            patch_size=patch,
            embed_dim=dim,
            depth=2,
            num_heads=2,
            mlp_ratio=2,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(native // patch, native // patch),
            input_image_size=(native, native),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            num_multimask_outputs=3,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return SamMaskProposer(sam, options, device, image_size)

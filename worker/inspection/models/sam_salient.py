"""SAM prompted only where a kept mask can come from: the grid points inside the dilated salient mask.

A SAM mask is kept only when >= 80% of it lies inside IS-Net's salient mask
(pipeline/foreground.py), so points far outside that mask can only yield masks that
are thrown away. This generator is segment-anything's own SamAutomaticMaskGenerator
(one image embedding, then the mask decoder on batches of point prompts, its NMS and
its post-processing utilities); it only narrows the point grid per image and drops
masks that cannot pass the coverage rule before they are RLE-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_masks,
)


def points_inside(grid: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Rows of `grid` ((N, 2) x, y normalised to [0, 1]) that fall on True pixels of `region` ((H, W) bool)."""
    height, width = region.shape
    cols = np.clip((grid[:, 0] * width).astype(int), 0, width - 1)
    rows = np.clip((grid[:, 1] * height).astype(int), 0, height - 1)
    return grid[region[rows, cols]]


def dilate(mask: np.ndarray, margin_px: int) -> np.ndarray:
    """(H, W) bool grown by `margin_px` in every direction (an ellipse), so edge points are prompted too."""
    if margin_px <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1, 2 * margin_px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


@dataclass(frozen=True)
class SalientPrompting:
    """Where to prompt: the salient (H, W) bool mask, the dilation margin and the coverage rule."""

    salient: np.ndarray
    margin_px: int = 16
    min_coverage: float = 0.8


class SalientMaskGenerator(SamAutomaticMaskGenerator):
    """SamAutomaticMaskGenerator that can be told, per image, which region to prompt."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_grids = self.point_grids
        self._prompting: SalientPrompting | None = None
        self.last_points = 0  # decoder prompts of the last image, for the bench

    @torch.inference_mode()
    def generate_in(self, image: np.ndarray, prompting: SalientPrompting | None) -> list[dict]:
        """Masks of `image`; with `prompting`, only from grid points inside the dilated salient mask."""
        grids = self.full_grids
        if prompting is not None:
            region = dilate(prompting.salient, prompting.margin_px)
            grids = [points_inside(grid, region) for grid in self.full_grids]
        self.last_points = sum(len(grid) for grid in grids)
        if self.last_points == 0:
            return []  # nothing salient: no mask could be kept, skip the image encoder too
        self.point_grids, self._prompting = grids, prompting
        try:
            return self.generate(image)
        finally:
            self.point_grids, self._prompting = self.full_grids, None

    def _process_batch(self, points, im_size, crop_box, orig_size) -> MaskData:
        # segment-anything's _process_batch (v1.0), with two changes that keep every kept mask
        # bit-identical: the predicted-IoU filter runs on the low-resolution logits, before the
        # upsampling to the frame (the costliest step after the decoder), and the coverage rule
        # runs before the RLE encoding.
        orig_h, orig_w = orig_size
        low_res, iou_preds = self._decode(points, im_size)
        repeated = torch.as_tensor(points.repeat(low_res.shape[0] // len(points), axis=0))
        if self.pred_iou_thresh > 0.0:
            passed = iou_preds > self.pred_iou_thresh
            low_res, iou_preds, repeated = low_res[passed], iou_preds[passed], repeated[passed]
        predictor = self.predictor
        masks = predictor.model.postprocess_masks(low_res[:, None], predictor.input_size, predictor.original_size)
        data = MaskData(  # float32 whatever the decoder ran in: numpy has no bf16
            masks=masks[:, 0].float(), iou_preds=iou_preds.float(), points=repeated
        )
        del masks
        threshold = self.predictor.model.mask_threshold
        data["stability_score"] = calculate_stability_score(data["masks"], threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        if self._prompting is not None and len(data["masks"]):
            data.filter(self._can_pass(data["masks"]))
        data["rles"] = mask_to_rle_pytorch(data["masks"])
        del data["masks"]
        return data

    def _decode(self, points: np.ndarray, im_size) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2) crop points -> low-res mask logits (3N, h, w) and predicted IoUs (3N,), SAM's predict_torch
        without its upsampling (three masks per point, ordered point by point as predict_torch's flatten)."""
        predictor, model = self.predictor, self.predictor.model
        transformed = predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed, device=predictor.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        sparse, dense = model.prompt_encoder(points=(in_points[:, None, :], in_labels[:, None]), boxes=None, masks=None)
        low_res, iou_preds = model.mask_decoder(
            image_embeddings=predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        return low_res.flatten(0, 1), iou_preds.flatten(0, 1)

    def _can_pass(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, H, W) bool masks -> (N,) bool: at least min_coverage of the mask inside the salient mask."""
        salient = torch.as_tensor(self._prompting.salient, device=masks.device)
        area = masks.flatten(1).sum(1)
        inside = (masks & salient).flatten(1).sum(1)
        return (area > 0) & (inside >= self._prompting.min_coverage * area)

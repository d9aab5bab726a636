"""SAM's mask decoder for a batch of point prompts on one image, without a copy of the image per point."""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


class SharedImageMaskDecoder(torch.nn.Module):
    """segment-anything's `MaskDecoder`, with the image passed once for the whole batch of points.

    `MaskDecoder.predict_masks` repeats the image embedding, its positional encoding and the dense
    prompt embedding once per point (points x 256 x h x w) before its two-way transformer. Passed
    once, they broadcast inside the same modules: the first block's image-side additions and
    projections run once per image instead of once per point. The masks and IoUs are bit-identical
    (tests/unit/test_sam_decoder.py); on the AMX CPU a point costs 21% less in bf16, 20% in fp32
    (docs/benchmarks.md).

    The dense prompt must be the same for every point (no mask prompts, as in the automatic mask
    generator) and the batch must hold one image; otherwise the wrapped decoder runs as it is.
    """

    def __init__(self, decoder: MaskDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings, image_pe: (1, C, h, w); sparse: (B, n, C); dense: (B, C, h, w)
        -> masks (B, 3 or 1, 4h, 4w) logits and IoU predictions (B, 3 or 1), as MaskDecoder.forward."""
        dense = dense_prompt_embeddings
        if image_embeddings.shape[0] != 1 or not bool((dense == dense[:1]).all()):
            return self.decoder(image_embeddings, image_pe, sparse_prompt_embeddings, dense, multimask_output)
        masks, iou_pred = self._predict_masks(image_embeddings + dense[:1], image_pe, sparse_prompt_embeddings)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def _predict_masks(self, src: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor):
        # MaskDecoder.predict_masks (segment-anything v1.0) without its two repeat_interleave calls
        decoder = self.decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(len(sparse), -1, -1), sparse), dim=1)
        _, channels, height, width = src.shape
        hs, src = decoder.transformer(src, image_pe, tokens)  # src comes back (B, h * w, C): one per point
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(len(tokens), channels, height, width))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, decoder.iou_prediction_head(iou_token_out)

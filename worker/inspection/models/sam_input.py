"""SAM at an input side below its checkpoint's: fewer encoder tokens for frames smaller than 1024 px.

SAM resizes a frame's longest side to its image encoder's `img_size` (1024 for the released
checkpoints) and pads it square, so a 640x480 frame is *upsampled* 1.6x and the encoder runs
on 64x64 tokens where 40x40 carry all the frame's information. `set_input_side` adapts a
built `Sam` to a side S (a multiple of the patch size, at most the current side):

- the absolute position embedding (1, N, N, C) is resampled bicubically to (1, S/16, S/16, C);
- `image_encoder.img_size`, the prompt encoder's `image_embedding_size`, `input_image_size`
  and `mask_input_size` follow S; these are every place segment-anything reads the size
  (`Sam.preprocess` pads to img_size, `Sam.postprocess_masks` upsamples to it,
  `SamPredictor.transform` is `ResizeLongestSide(img_size)` built when the predictor is made,
  so build the predictor or the mask generator *after* this call; the generator's crop logic
  only goes through the predictor);
- the global-attention blocks' decomposed relative-position tables (2N-1, head_dim) are left as
  they are: segment-anything's `get_rel_pos` interpolates them linearly to 2*(S/16)-1 on every
  forward when the token grid differs. The windowed blocks' tables are per window (14x14 for
  vit_b) and do not depend on the image size at all.

The checkpoint was trained at 1024, so a smaller side trades mask quality for speed: objects
look smaller to the encoder than in training (docs/explanation/pipeline.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam


def encoder_side(sam: Sam) -> int:
    """The input side the model runs at now: its position-embedding grid times the patch size."""
    return sam.image_encoder.pos_embed.shape[1] * patch_size(sam)


def patch_size(sam: Sam) -> int:
    return int(sam.image_encoder.patch_embed.proj.kernel_size[0])


def resample_pos_embed(pos_embed: torch.Tensor, tokens: int) -> torch.Tensor:
    """(1, N, N, C) -> (1, tokens, tokens, C), bicubic; antialiased because it shrinks the grid."""
    grid = pos_embed.detach().float().permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(tokens, tokens), mode="bicubic", align_corners=False, antialias=True)
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def set_input_side(sam: Sam, side: int) -> Sam:
    """Run `sam` at input side `side` (in place; returns it). `side` equal to the current side is a no-op.

    Raises ValueError for a side that is not a multiple of the patch size or above the current
    side (upsampling past the checkpoint's resolution adds tokens and no information).
    """
    current, patch = encoder_side(sam), patch_size(sam)
    if side % patch or not patch <= side <= current:
        raise ValueError(
            f"SAM input side {side} is not possible for this model: use a multiple of its patch size {patch}"
            f" between {patch} and its own side {current}"
        )
    if side == current:
        return sam
    tokens = side // patch
    encoder, prompts = sam.image_encoder, sam.prompt_encoder
    resized = resample_pos_embed(encoder.pos_embed, tokens)
    encoder.pos_embed = torch.nn.Parameter(resized, requires_grad=encoder.pos_embed.requires_grad)
    encoder.img_size = side
    prompts.image_embedding_size = (tokens, tokens)
    prompts.input_image_size = (side, side)
    prompts.mask_input_size = (4 * tokens, 4 * tokens)
    return sam

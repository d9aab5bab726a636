"""SharedImageMaskDecoder: segment-anything's mask decoder without a copy of the image per point."""

import pytest
import torch

from worker.inspection.models.registry import RANDOM_SEED, TINY_SAM_OPTIONS
from worker.inspection.models.sam import build_tiny_sam
from worker.inspection.models.sam_decoder import SharedImageMaskDecoder


@pytest.fixture(scope="module")
def sam():
    return build_tiny_sam(torch.device("cpu"), TINY_SAM_OPTIONS, RANDOM_SEED).sam


def _prompts(sam, count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    side = sam.image_encoder.img_size
    points = torch.rand(count, 1, 2, generator=generator) * side
    sparse, dense = sam.prompt_encoder(points=(points, torch.ones(count, 1, dtype=torch.int)), boxes=None, masks=None)
    embedding_side = sam.prompt_encoder.image_embedding_size[0]
    image = torch.randn(1, sam.prompt_encoder.embed_dim, embedding_side, embedding_side, generator=generator)
    return image, sam.prompt_encoder.get_dense_pe(), sparse, dense


@pytest.mark.parametrize("multimask", [True, False])
def test_the_shared_image_gives_segment_anythings_own_masks_bit_for_bit(sam, multimask):
    image, pe, sparse, dense = _prompts(sam, 6)
    with torch.inference_mode():
        expected = sam.mask_decoder(image, pe, sparse, dense, multimask)
        got = SharedImageMaskDecoder(sam.mask_decoder)(image, pe, sparse, dense, multimask)
    assert got[0].shape == expected[0].shape == (6, 3 if multimask else 1, 4 * image.shape[2], 4 * image.shape[3])
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_per_point_dense_prompts_fall_back_to_the_wrapped_decoder(sam):
    image, pe, sparse, dense = _prompts(sam, 4, seed=1)
    dense = dense + torch.randn(dense.shape, generator=torch.Generator().manual_seed(2))  # as mask prompts would
    with torch.inference_mode():
        expected = sam.mask_decoder(image, pe, sparse, dense, True)
        got = SharedImageMaskDecoder(sam.mask_decoder)(image, pe, sparse, dense, True)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])

"""The few-shot step inside the Inspector (tiny profile, random weights, whole-frame foreground)."""

import numpy as np
import pytest
import torch

from common.settings import ModelSettings
from worker.inspection.fewshot.bank import build_bank
from worker.inspection.fewshot.context import FewShotContext
from worker.inspection.fewshot.pool import RollingPool
from worker.inspection.inspector import build_inspector
from worker.inspection.types import Frame

pytestmark = pytest.mark.models  # run again with models.precision=auto forced (make test-precisions)

SIDE = 352  # one tile covering the frame; tiny CLIP sees it as a 4 x 4 grid of 88-px patches
CELL = SIDE // 4


@pytest.fixture(scope="module")
def inspector():
    return build_inspector(ModelSettings(profile="tiny", foreground="none", device="cpu", few_shot_weight=1.0))


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(90, 160, size=(16, 16, 3)), np.ones((22, 22, 1))).astype(np.uint8)
    return base


def _frame(image, name="part", few_shot=None):
    return Frame(name, image, "washer", few_shot=few_shot)


def test_clip_pass_gives_the_same_embedding_and_unit_patch_tokens(inspector):
    clip = inspector.models.clip
    images = torch.rand(3, 3, clip.normalisation.size, clip.normalisation.size)
    embeddings, patches = clip.encode_images_with_patches(images, (-7, -4, -1))
    assert torch.equal(embeddings, clip.encode_images(images))  # one pass serves both
    assert patches.shape == (3, 2, clip.patch_grid**2, 32)  # 2 tiny blocks, 4 x 4 patches
    assert torch.allclose(patches.norm(dim=-1), torch.ones(3, 2, 16), atol=1e-5)


def test_without_bank_results_are_bit_identical(inspector):
    image = _texture(1)
    plain = inspector.inspect([_frame(image)])[0]
    empty = inspector.inspect([_frame(image, few_shot=None)])[0]
    assert plain.score == empty.score and np.array_equal(plain.anomaly_map, empty.anomaly_map)
    # a bank on another frame of the batch leaves this frame's result bit-identical as well (against
    # the same batch without it: fp32 results may differ in the last bit between batch sizes)
    bank = build_bank(inspector.patch_features([_frame(_texture(2))]), (0, 1), 1000)
    pair = inspector.inspect([_frame(_texture(2)), _frame(image)])[1]
    mixed = inspector.inspect([_frame(_texture(2), few_shot=FewShotContext(bank=bank)), _frame(image)])[1]
    assert mixed.score == pair.score and np.array_equal(mixed.anomaly_map, pair.anomaly_map)
    assert mixed.score == pytest.approx(plain.score, abs=1e-6)


def test_frame_identical_to_a_reference_has_a_few_shot_map_near_zero(inspector):
    reference = _texture(3)
    bank = build_bank(inspector.patch_features([_frame(reference)]), (0, 1), 1000)
    result = inspector.inspect([_frame(reference, few_shot=FewShotContext(bank=bank))])[0]
    assert result.anomaly_map.max() < 1e-4 and result.score < 1e-4
    other = inspector.inspect([_frame(_texture(4), few_shot=FewShotContext(bank=bank))])[0]
    assert other.score > 100 * max(result.score, 1e-6)


def test_foreign_patch_lights_up_there_and_nowhere_else(inspector):
    reference = _texture(5)
    bank = build_bank(inspector.patch_features([_frame(reference)]), (0, 1), 1000)
    tampered = reference.copy()
    row, col = 2, 1
    tampered[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = _texture(6)[:CELL, :CELL]
    result = inspector.inspect([_frame(tampered, few_shot=FewShotContext(bank=bank))])[0]
    m = result.anomaly_map
    centre = m[row * CELL + CELL // 2, col * CELL + CELL // 2]
    far = np.ones_like(m, dtype=bool)
    far[(row - 1) * CELL : (row + 2) * CELL, (col - 1) * CELL : (col + 2) * CELL] = False  # the patch and its ring
    assert np.unravel_index(m.argmax(), m.shape)[0] // CELL == row
    assert np.unravel_index(m.argmax(), m.shape)[1] // CELL == col
    assert centre > 5 * m[far].max()


def test_fusion_weight_mixes_zero_and_few_shot(inspector):
    image = _texture(7)
    zero = inspector.inspect([_frame(image)])[0]
    bank = build_bank(inspector.patch_features([_frame(_texture(8))]), (0, 1), 1000)
    few = inspector.inspect([_frame(image, few_shot=FewShotContext(bank=bank))])[0]
    half = inspector.settings.model_copy(update={"few_shot_weight": 0.5})
    inspector_half = type(inspector)(inspector.models, half, cache=inspector.cache)
    mixed = inspector_half.inspect([_frame(image, few_shot=FewShotContext(bank=bank))])[0]
    assert abs(mixed.score - (zero.score + few.score) / 2) < 1e-5
    assert np.allclose(mixed.anomaly_map, (zero.anomaly_map + few.anomaly_map) / 2, atol=1e-5)


def test_pool_scores_once_full_enough_and_learns_every_frame(inspector):
    pool = RollingPool(4)
    context = FewShotContext(pool=pool, pool_min_frames=2, pool_fraction=0.5)
    normal = _texture(9)
    zero = inspector.inspect([_frame(normal)])[0]
    first = inspector.inspect([_frame(normal, few_shot=context)])[0]
    assert first.score == zero.score and len(pool) == 1  # too few pool frames: zero-shot, but remembered
    inspector.inspect([_frame(normal, few_shot=context)])
    again = inspector.inspect([_frame(normal, few_shot=context)])[0]
    assert len(pool) == 3 and again.score < 1e-4  # the same part as the pool: nothing stands out
    odd = inspector.inspect([_frame(_texture(10), few_shot=context)])[0]
    assert odd.score > 0.01 and len(pool) == 4

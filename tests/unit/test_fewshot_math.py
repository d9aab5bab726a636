"""Few-shot math on plain arrays: coreset, nearest-patch distance, pool aggregate, fusion."""

import numpy as np
import torch
import torch.nn.functional as F

from worker.inspection.fewshot.bank import build_bank, greedy_coreset
from worker.inspection.fewshot.pool import RollingPool, pool_distance
from worker.inspection.fewshot.scoring import BANK_CHUNK, fuse, nearest_distance, tile_distance_maps


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_nearest_distance_is_zero_for_bank_members_and_matches_brute_force():
    bank = _unit(2, 50, 16)
    queries = torch.cat([bank[:, :5], _unit(2, 7, 16, seed=1)], dim=1)
    got = nearest_distance(queries, bank)
    assert torch.allclose(got[:5], torch.zeros(5), atol=1e-6)
    brute = np.mean(
        [[1 - max(float(q @ b) for b in bank[layer]) for q in queries[layer]] for layer in range(2)], axis=0
    )
    assert np.allclose(got.numpy(), brute, atol=1e-5)


def test_nearest_distance_chunks_large_banks_the_same():
    bank = _unit(1, BANK_CHUNK + 300, 8)
    queries = _unit(1, 20, 8, seed=3)
    whole = (1 - (queries[0] @ bank[0].T).amax(dim=1)).unsqueeze(0).mean(0)
    assert torch.allclose(nearest_distance(queries, bank), whole, atol=1e-6)


def test_greedy_coreset_keeps_a_rare_far_pattern():
    common = F.normalize(torch.randn(500, 8) * 0.05 + torch.tensor([1.0] + [0.0] * 7), dim=-1)
    rare = F.normalize(torch.tensor([[0.0, 1.0] + [0.0] * 6]), dim=-1)
    features = torch.cat([common, rare])
    chosen = greedy_coreset(features, 10, seed=0)
    assert len(set(chosen.tolist())) == 10 and 500 in chosen.tolist()


def test_build_bank_caps_patches_and_keeps_unit_rows():
    frames = [np.random.default_rng(i).normal(size=(2, 40, 8)).astype(np.float32) for i in range(3)]
    bank = build_bank(frames, layers=(0, 1), max_patches=30)
    assert bank.features.shape == (2, 30, 8) and bank.frames == 3 and bank.patches == 30
    assert np.allclose(np.linalg.norm(bank.features, axis=-1), 1.0, atol=1e-5)
    assert build_bank(frames, layers=(0, 1), max_patches=1000).patches == 120


def test_pool_aggregate_ignores_a_defect_seen_in_a_minority_of_frames():
    normal = _unit(1, 30, 16)
    defect = _unit(1, 1, 16, seed=9)
    pool = [normal.clone() for _ in range(8)]
    pool[0] = torch.cat([normal, defect], dim=1)  # one pool frame carries the same defect
    queries = torch.cat([normal[:, :3], defect], dim=1)
    robust = pool_distance(queries, pool, fraction=0.3)
    assert torch.allclose(robust[:3], torch.zeros(3), atol=1e-6)
    to_normal = float(nearest_distance(defect, normal)[0])
    # 3 smallest of 8 per-frame distances: 0 (the one frame with the defect) and twice `to_normal`
    assert to_normal > 0.1 and abs(float(robust[3]) - 2 * to_normal / 3) < 1e-5
    everything = nearest_distance(queries, torch.cat(pool, dim=1))
    assert float(everything[3]) < 1e-6


def test_pool_distance_matches_per_frame_loop():
    pool = [_unit(2, n, 8, seed=n) for n in (5, 9, 3, 7)]
    queries = _unit(2, 6, 8, seed=42)
    per_frame = torch.stack([nearest_distance(queries, frame) for frame in pool], dim=1)
    expected = per_frame.sort(dim=1).values[:, :2].mean(dim=1)
    assert torch.allclose(pool_distance(queries, pool, fraction=0.5), expected, atol=1e-6)


def test_rolling_pool_keeps_the_last_m_frames():
    pool = RollingPool(3)
    for i in range(5):
        pool.add(np.full((1, 2, 4), i, dtype=np.float32))
    assert len(pool) == 3 and [int(f[0, 0, 0]) for f in pool.frames()] == [2, 3, 4]
    assert pool.nbytes == 3 * 2 * 4 * 4


def test_fuse_weights_and_tile_maps():
    assert fuse(0.2, 0.8, 0.0) == 0.2 and fuse(0.2, 0.8, 1.0) == 0.8 and abs(fuse(0.2, 0.8, 0.5) - 0.5) < 1e-9
    maps = tile_distance_maps(np.array([0.1, 1.5, -0.2, 0.3] * 2), tiles=2, grid=2)
    assert maps.shape == (2, 2, 2) and maps.max() == 1.0 and maps.min() == 0.0

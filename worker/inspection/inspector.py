"""The Inspector: frames + object names in, typed inspections out.

It composes the model adapters (worker/inspection/models) with the pure stage functions
(worker/inspection/pipeline). Work is batched across all tiles of all frames of a call, and
prompt embeddings are computed once per (model, prompt) and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from common.schemas import Versions
from common.settings import ModelSettings
from worker.inspection.embedding_cache import EmbeddingCache, LruEmbeddingCache, prompt_key
from worker.inspection.fewshot.step import apply_few_shot, frame_queries
from worker.inspection.measure import StageClock
from worker.inspection.models.registry import ModelBundle, load_models
from worker.inspection.models.sam_salient import SalientPrompting
from worker.inspection.pipeline.aggregate import component_scores, image_score, paste_tiles
from worker.inspection.pipeline.foreground import Component, find_components, select_foreground
from worker.inspection.pipeline.scoring import harmonic_mean, tile_anomaly_scores
from worker.inspection.pipeline.tiling import Tile, crop_tile, plan_tiles, share_tiles
from worker.inspection.prompts import DEFAULT_PROMPTS, PromptSet
from worker.inspection.types import Frame, Inspection, InstanceScore


@dataclass
class _FramePlan:
    """Intermediate per-frame state between stages."""

    frame: Frame
    foreground: np.ndarray
    components: list[Component]
    tiles: list[Tile]


def _resize_batch(crops: list[np.ndarray], size: int) -> torch.Tensor:
    """list of (s, s, 3) uint8 crops -> (N, 3, size, size) float in [0, 1]."""
    if not crops:
        return torch.empty(0, 3, size, size)
    resized = np.stack(
        [
            cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)
            for crop in crops
        ]
    )
    return torch.from_numpy(resized).permute(0, 3, 1, 2).float().div_(255.0)


class Inspector:
    """Zero-shot anomaly inspection of frames (see DESIGN.md, "The Inspector").

    naive=True runs the reference path the benchmark compares against: prompt
    embeddings recomputed for every call and CLIPSeg's full model run once per
    (tile, prompt). Never use it in production.
    """

    def __init__(
        self,
        models: ModelBundle,
        settings: ModelSettings,
        prompts: PromptSet = DEFAULT_PROMPTS,
        cache: EmbeddingCache | None = None,
        naive: bool = False,
    ):
        self.models = models
        self.settings = settings
        self.prompts = prompts
        self.cache: EmbeddingCache = cache if cache is not None else LruEmbeddingCache()
        self.naive = naive
        self.sam_decoder_points = 0  # SAM point prompts decoded so far
        self.tiles_planned = 0  # tiles cut so far
        expect = getattr(self.cache, "expect", None)
        if expect is not None:  # the Redis cache refuses embeddings of any other width than these models'
            expect(self.embedding_widths())

    def feature_shape(self):
        """The layers and channel width of the patch features banks and pools hold (None: unknown)."""
        from worker.inspection.fewshot.store import FeatureShape

        try:
            clip = self.models.clip
            return FeatureShape(clip.patch_layers(self.settings.few_shot_layers), clip.model.visual.transformer.width)
        except AttributeError:  # a vision tower without these (not an open_clip ViT)
            return None

    def embedding_widths(self) -> dict[str, int]:
        """Width of each text tower's prompt embeddings, by cache kind (0: unknown, not checked)."""
        clipseg_config = getattr(getattr(self.models.clipseg, "model", None), "config", None)
        widths = {
            "clip-text": self.models.clip.embed_dim,
            "clipseg-text": int(getattr(clipseg_config, "projection_dim", 0) or 0),
        }
        return {kind: width for kind, width in widths.items() if width > 0}

    @property
    def versions(self) -> Versions:
        return Versions(
            model_fingerprint=self.models.fingerprint,
            profile=self.models.profile,
            prompt_set=self.prompts.version,
            threshold_version="unset",
            tile_temperature=self.tile_temperature,
        )

    @property
    def tile_temperature(self) -> float:
        """The setting, or the checkpoint's own logit scale when unset."""
        return self.settings.tile_temperature or self.models.clip.logit_scale

    @property
    def text_encoder_calls(self) -> int:
        """Forward passes of either text tower so far (the cache should keep this at zero when warm)."""
        return self.models.clip.text_forward_calls + self.models.clipseg.text_forward_calls

    # -- prompt embeddings ---------------------------------------------------------------
    def _embeddings(self, kind: str, texts: list[str], encode) -> np.ndarray:
        """(P, D) embeddings of `texts`: from the cache, else from the encoder (and then cached)."""
        if self.naive:
            return encode(texts).numpy()
        keys = [prompt_key(self.models.fingerprint, kind, text) for text in texts]
        found = self.cache.get_many(keys)
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            computed = encode([texts[i] for i in missing]).numpy().astype(np.float32)
            self.cache.put_many({keys[i]: row for i, row in zip(missing, computed)})
            for i, row in zip(missing, computed):
                found[i] = row
        return np.stack(found).astype(np.float32)

    def state_embeddings(
        self, object_name: str, extra_normal: tuple[str, ...] = (), extra_anomalous: tuple[str, ...] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """(normal, anomalous) prompt embeddings of an object, the control record's extra states included."""
        normal, anomalous = self.prompts.state_prompts(object_name, extra_normal, extra_anomalous)
        return (
            self._embeddings("clip-text", normal, self.models.clip.encode_texts),
            self._embeddings("clip-text", anomalous, self.models.clip.encode_texts),
        )

    def localising_embeddings(self) -> np.ndarray:
        return self._embeddings("clipseg-text", list(self.prompts.localising), self.models.clipseg.encode_texts)

    # -- stages ----------------------------------------------------------------------------
    def _sam_prompting(self, salient: np.ndarray | None) -> SalientPrompting | None:
        """Where SAM is prompted: inside the salient mask (models.sam_points=salient), else the full grid."""
        if self.settings.sam_points != "salient" or salient is None:
            return None
        return SalientPrompting(salient >= 0.5, self.settings.sam_point_margin_px)

    def _plan(self, frames: Sequence[Frame], clock: StageClock) -> list[_FramePlan]:
        images = [frame.image for frame in frames]
        salient_maps: list[np.ndarray | None] = [None] * len(frames)
        sam_masks: list[list[np.ndarray] | None] = [None] * len(frames)
        if self.models.isnet is not None:
            with clock.stage("foreground_isnet"):
                salient_maps = list(self.models.isnet.predict(images))
        if self.models.sam is not None:
            with clock.stage("foreground_sam"):
                sam_masks = []
                for image, salient in zip(images, salient_maps):
                    sam_masks.append(self.models.sam.propose(image, self._sam_prompting(salient)))
                    self.sam_decoder_points += self.models.sam.last_points  # for the bench
        plans = []
        with clock.stage("tiling"):
            for frame, salient, masks in zip(frames, salient_maps, sam_masks):
                shape = frame.image.shape[:2]
                foreground = select_foreground(shape, salient, masks)
                _, components = find_components(foreground, rule=self.settings.instances)
                tiles = [
                    tile
                    for index, component in enumerate(components)
                    for tile in plan_tiles(index, component.box, component.parts, shape, self.settings.tile_size)
                ]
                if self.settings.tiles == "shared":
                    boxes = [component.box for component in components]
                    tiles = share_tiles(tiles, boxes, shape, self.settings.tile_size)
                self.tiles_planned += len(tiles)  # for the bench
                plans.append(_FramePlan(frame, foreground.mask, components, tiles))
        return plans

    # -- few-shot (reference banks, rolling pool): worker/inspection/fewshot ---------------------
    def _encode_tiles(self, clip_inputs: torch.Tensor, frames: Sequence[Frame]):
        """(tile embeddings, patch tokens or None): patch tokens come from the same CLIP pass, and only
        when a frame of the batch has a bank or a pool, so the zero-shot path stays exactly as it was."""
        if not any(frame.few_shot is not None and frame.few_shot.active for frame in frames):
            return self.models.clip.encode_images(clip_inputs).cpu().numpy(), None
        embeddings, patches = self.models.clip.encode_images_with_patches(clip_inputs, self.settings.few_shot_layers)
        return embeddings.cpu().numpy(), patches

    def _few_shot(self, plan: _FramePlan, tile_patches: torch.Tensor, zero_map: np.ndarray, zero_score: float):
        return apply_few_shot(
            plan.frame.few_shot,
            plan.frame.image.shape[:2],
            plan.tiles,
            tile_patches,
            self.models.clip.patch_grid,
            zero_map,
            zero_score,
            self.settings.few_shot_weight,
        )

    def patch_features(self, frames: Sequence[Frame]) -> list[np.ndarray]:
        """Per frame, the (L, T * n, C) patch features of its tiles (what a reference bank is made of)."""
        plans = self._plan(frames, StageClock())
        crops = [crop_tile(plan.frame.image, tile) for plan in plans for tile in plan.tiles]
        _, patches = self.models.clip.encode_images_with_patches(
            _resize_batch(crops, self.models.clip.normalisation.size), self.settings.few_shot_layers
        )
        out, start = [], 0
        for plan in plans:
            count = len(plan.tiles)
            out.append(frame_queries(patches[start : start + count]).cpu().numpy())
            start += count
        return out

    @torch.inference_mode()
    def inspect(self, frames: Sequence[Frame]) -> list[Inspection]:
        """Inspect a batch of frames; returns one Inspection per frame, in order."""
        if not frames:
            return []
        clock = StageClock()
        for frame in frames:
            if frame.image.ndim != 3 or frame.image.shape[2] != 3 or frame.image.dtype != np.uint8:
                raise ValueError(
                    f"frame {frame.frame_id}: expected (H, W, 3) uint8 RGB, got {frame.image.shape} {frame.image.dtype}"
                )
        plans = self._plan(frames, clock)
        crops = [crop_tile(plan.frame.image, tile) for plan in plans for tile in plan.tiles]
        owners = [index for index, plan in enumerate(plans) for _ in plan.tiles]

        with clock.stage("prompts"):
            state = {key: self.state_embeddings(*key) for key in {frame.prompt_key for frame in frames}}
            localising = None if self.naive else self.localising_embeddings()

        with clock.stage("tile_score"):
            clip_inputs = _resize_batch(crops, self.models.clip.normalisation.size)
            tile_embeddings, tile_patches = self._encode_tiles(clip_inputs, frames)
            scores = np.empty(len(crops), dtype=np.float32)
            for key, (normal, anomalous) in state.items():
                rows = [i for i, owner in enumerate(owners) if plans[owner].frame.prompt_key == key]
                scores[rows] = tile_anomaly_scores(tile_embeddings[rows], normal, anomalous, self.tile_temperature)

        with clock.stage("pixel_map"):
            seg_inputs = _resize_batch(crops, self.models.clipseg.size)
            if self.naive:
                per_prompt = self.models.clipseg.segment_naive(seg_inputs, list(self.prompts.localising))
            else:
                per_prompt = self.models.clipseg.segment(seg_inputs, torch.from_numpy(localising))
            tile_maps = harmonic_mean(per_prompt.numpy(), axis=1)

        results = []
        with clock.stage("aggregate"):
            start = 0
            for plan in plans:
                count = len(plan.tiles)
                frame_scores, frame_maps = scores[start : start + count], tile_maps[start : start + count]
                start += count
                anomaly_map = paste_tiles(plan.frame.image.shape[:2], plan.tiles, frame_maps, frame_scores)
                tile_components = [tile.components for tile in plan.tiles]
                per_component = component_scores(frame_scores, tile_components, len(plan.components))
                instances = [
                    InstanceScore(
                        component.box,
                        component.area,
                        float(per_component[i]),
                        sum(i in covered for covered in tile_components),
                    )
                    for i, component in enumerate(plan.components)
                ]
                score = float(np.clip(image_score(per_component), 0.0, 1.0))
                if tile_patches is not None and plan.frame.few_shot is not None:
                    anomaly_map, score = self._few_shot(plan, tile_patches[start - count : start], anomaly_map, score)
                results.append((plan, anomaly_map, score, instances))

        share = {stage: ms / len(frames) for stage, ms in clock.ms.items()}
        return [
            Inspection(plan.frame.frame_id, score, anomaly_map, plan.foreground, instances, dict(share))
            for plan, anomaly_map, score, instances in results
        ]


def build_inspector(
    model_settings: ModelSettings, cache: EmbeddingCache | None = None, naive: bool = False
) -> Inspector:
    """Load the configured model profile and wrap it in an Inspector."""
    return Inspector(load_models(model_settings), model_settings, cache=cache, naive=naive)

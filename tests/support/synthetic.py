"""The still belt scenes with exact masks that the tests draw (producer.sources.scene)."""

from producer.sources.scene import DEFECT_KINDS, SceneObject, SyntheticScene, make_synthetic_scene, place_parts

__all__ = ["DEFECT_KINDS", "SceneObject", "SyntheticScene", "make_synthetic_scene", "place_parts"]

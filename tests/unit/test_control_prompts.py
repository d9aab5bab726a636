"""A control record's extra prompt states reach the tiny Inspector's ensemble, per frame."""

from __future__ import annotations

import numpy as np
import pytest

from common.settings import ModelSettings
from worker.inspection.inspector import build_inspector
from worker.inspection.types import Frame

pytestmark = pytest.mark.models  # run again with models.precision=auto forced (make test-precisions)


@pytest.fixture(scope="module")
def inspector():
    return build_inspector(ModelSettings(profile="tiny", foreground="none"))


def test_extra_states_change_only_their_frames_and_are_cached_per_prompt(inspector):
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    plain = Frame("plain", image, "nut")
    extra = Frame("extra", image, "nut", ("shiny {}",), ("rusty {}", "{} with a chipped thread"))
    alone = inspector.inspect([plain])[0].score
    mixed = inspector.inspect([plain, extra])
    assert mixed[0].score == pytest.approx(alone, abs=1e-5)  # the plain frame keeps its ensemble in a mixed batch
    assert mixed[1].score != pytest.approx(alone, abs=1e-6)  # the extra states are in the other frame's ensemble
    normal, anomalous = inspector.state_embeddings("nut", extra.extra_normal_states, extra.extra_anomalous_states)
    base_normal, base_anomalous = inspector.state_embeddings("nut")
    templates = len(inspector.prompts.templates)
    assert normal.shape[0] == base_normal.shape[0] + templates
    assert anomalous.shape[0] == base_anomalous.shape[0] + 2 * templates
    calls = inspector.text_encoder_calls
    inspector.inspect([extra])
    assert inspector.text_encoder_calls == calls  # every prompt text is cached, the extra ones included

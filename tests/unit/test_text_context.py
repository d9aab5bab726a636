"""The CLIP text tower on the context trimmed to the longest prompt equals the 77-token result."""

import torch

from worker.inspection.models.registry import _tiny_clip
from worker.inspection.models.text_context import encode_text_trimmed, trimmed_length
from worker.inspection.prompts import DEFAULT_PROMPTS


def test_trimmed_text_tower_is_exact_for_every_prompt_of_an_object():
    clip = _tiny_clip(torch.device("cpu"))
    normal, anomalous = DEFAULT_PROMPTS.state_prompts("metal nut")
    tokens = clip.tokenizer(normal + anomalous)
    assert tokens.shape[1] == 77 and trimmed_length(tokens) < 25
    with torch.inference_mode():
        full = clip.model.encode_text(tokens)
        trimmed = encode_text_trimmed(clip.model, tokens)
    assert torch.allclose(full, trimmed, atol=1e-5)


def test_a_batch_is_trimmed_to_its_longest_prompt_only():
    clip = _tiny_clip(torch.device("cpu"))
    tokens = clip.tokenizer(["a nut.", "a photo of a flawless metal nut with a scratch on its thread."])
    assert trimmed_length(tokens) == int(tokens[1].argmax()) + 1
    with torch.inference_mode():
        assert torch.allclose(clip.model.encode_text(tokens), encode_text_trimmed(clip.model, tokens), atol=1e-5)
        assert torch.allclose(clip.encode_texts(["a nut."]), clip.encode_texts(["a nut.", "x " * 30])[:1], atol=1e-5)

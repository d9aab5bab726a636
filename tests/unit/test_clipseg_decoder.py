"""CLIPSeg's decoder on (tile, prompt) pairs: the same logits as transformers' decoder on repeated activations."""

import copy

import pytest
import torch

from tests.support.hardware import needs_cpu_bf16
from worker.inspection.models.clipseg import build_clipseg_random
from worker.inspection.models.clipseg_decoder import FusedReLUMLP, decode_pairs, running_decoder
from worker.inspection.models.onednn import FUSED_POINTWISE
from worker.inspection.models.registry import tiny_clipseg_config


@pytest.fixture(scope="module")
def decoder():
    return build_clipseg_random(tiny_clipseg_config(), torch.device("cpu"), seed=3).model.decoder


def _hf_logits(decoder, hidden_states, conditional):
    """transformers' way: every tile's states repeated once per prompt, the whole decoder per pair."""
    n_tiles, n_prompts = len(hidden_states[0]), len(conditional)
    repeated = [h.repeat_interleave(n_prompts, dim=0) for h in hidden_states]
    return decoder(repeated, conditional.repeat(n_tiles, 1)).logits


def _inputs(decoder, n_tiles=3, n_prompts=4, tokens=17):
    torch.manual_seed(0)
    width = decoder.reduces[0].in_features
    hidden_states = [torch.randn(n_tiles, tokens, width) for _ in decoder.reduces]
    return hidden_states, torch.randn(n_prompts, decoder.film_mul.in_features)


@pytest.mark.parametrize("pairs_per_call", [1, 5, 12])  # 5: calls that cut through a tile's prompts
def test_decode_pairs_matches_the_decoder_on_repeated_states(decoder, pairs_per_call):
    hidden_states, conditional = _inputs(decoder)
    with torch.inference_mode():
        expected = _hf_logits(decoder, hidden_states, conditional)
        logits = decode_pairs(decoder, hidden_states, conditional, pairs_per_call)
    assert logits.shape == expected.shape == (12, 64, 64)  # 3 tiles x 4 prompts, 4x4 tokens back to 64 px
    tolerance = 1e-5 * expected.abs().max().item()  # fp32 rounding of matmuls blocked by batch size
    torch.testing.assert_close(logits, expected, rtol=0, atol=tolerance)
    # tile-major: pair 5 is tile 1 with prompt 1, and it differs from tile 0 with prompt 1
    with torch.inference_mode():
        one = decode_pairs(decoder, [h[1:2] for h in hidden_states], conditional[1:2], 1)
    torch.testing.assert_close(logits[5:6], one, rtol=0, atol=tolerance)
    assert not torch.allclose(logits[1], logits[5])


@pytest.mark.skipif(not FUSED_POINTWISE, reason="this torch build has no oneDNN pointwise kernels")
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_cpu_bf16)])
def test_running_decoder_fuses_the_relu_mlps_and_keeps_the_logits(decoder, dtype):
    decoder = copy.deepcopy(decoder).to(dtype)  # the module's fixture stays fp32
    running = running_decoder(decoder, torch.device("cpu"))
    assert all(isinstance(layer.mlp, FusedReLUMLP) for layer in running.layers)
    assert not any(isinstance(layer.mlp, FusedReLUMLP) for layer in decoder.layers)  # the original is untouched
    assert running.layers[0].mlp.fc1.linear.weight is decoder.layers[0].mlp.fc1.weight  # weights shared
    hidden_states, conditional = _inputs(decoder)
    hidden_states, conditional = [h.to(dtype) for h in hidden_states], conditional.to(dtype)
    with torch.inference_mode():
        fused = decode_pairs(running, hidden_states, conditional, 5)
        plain = decode_pairs(decoder, hidden_states, conditional, 5)
    # bit-identical on most machines; the fused GEMM may round differently in the last bit
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused, plain, rtol=tolerance, atol=tolerance)


def test_running_decoder_off_the_cpu_is_the_decoder_itself(decoder):
    assert running_decoder(decoder, torch.device("meta")) is decoder

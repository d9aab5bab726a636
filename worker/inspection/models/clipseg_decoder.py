"""CLIPSeg's decoder run on many (tile, prompt) pairs: what depends only on the tile runs once per tile.

transformers' `CLIPSegDecoder.forward` takes the vision hidden states once per pair, so a caller with
P prompts per tile repeats every 768-wide activation P times and projects each copy to the decoder's
width (`reduces`). The projections do not depend on the prompt: `decode_pairs` runs them once per tile
and repeats their 64-wide outputs instead; the rest is `CLIPSegDecoder.forward` line for line, on
slices of the pairs. On a CPU the MLPs' Linear -> ReLU run as one oneDNN call (`running_decoder`).
"""

from __future__ import annotations

import torch
from transformers.models.clipseg.modeling_clipseg import CLIPSegDecoder, CLIPSegMLP

from worker.inspection.models.onednn import FUSED_POINTWISE, LinearReLU
from worker.inspection.models.precision import shared_copy


def decode_pairs(
    decoder: CLIPSegDecoder, hidden_states: list[torch.Tensor], conditional: torch.Tensor, pairs_per_call: int
) -> torch.Tensor:
    """hidden_states: the extract layers' (N, T, C) states of N tiles, shallowest first; conditional: (P, E)
    -> logits (N * P, H, W) of every (tile, prompt) pair, tile-major, `pairs_per_call` pairs per decoder pass."""
    n_tiles, n_prompts = len(hidden_states[0]), len(conditional)
    reduced = [reduce(h) for reduce, h in zip(decoder.reduces, hidden_states[::-1])]  # deepest first, as HF
    tile_of_pair = torch.arange(n_tiles, device=conditional.device).repeat_interleave(n_prompts)
    pairs = conditional.repeat(n_tiles, 1)
    return torch.cat(
        [
            _decode(decoder, [r[tile_of_pair[s : s + pairs_per_call]] for r in reduced], pairs[s : s + pairs_per_call])
            for s in range(0, len(pairs), pairs_per_call)
        ]
    )


def _decode(decoder: CLIPSegDecoder, reduced: list[torch.Tensor], conditional: torch.Tensor) -> torch.Tensor:
    """CLIPSegDecoder.forward after its `reduces`: reduced (B, T, D) per layer, conditional (B, E) -> (B, H, W)."""
    output = None
    for i, (activation, layer) in enumerate(zip(reduced, decoder.layers)):
        output = activation if output is None else activation + output
        if i == decoder.conditional_layer:  # FiLM: the prompt scales and shifts every token
            output = decoder.film_mul(conditional)[:, None] * output + decoder.film_add(conditional)[:, None]
        output = layer(output, attention_mask=None)
    output = output[:, 1:, :].transpose(1, 2)  # drop the CLS token: (B, D, T - 1)
    side = int((output.shape[2]) ** 0.5)
    return decoder.transposed_convolution(output.view(len(conditional), output.shape[1], side, side)).squeeze(1)


class FusedReLUMLP(torch.nn.Module):
    """CLIPSegMLP with a ReLU activation, its fc1 -> ReLU in one oneDNN call (same weights, the same result to fp32 rounding)."""

    def __init__(self, mlp: CLIPSegMLP):
        super().__init__()
        self.fc1, self.fc2 = LinearReLU(mlp.fc1), mlp.fc2

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(hidden_states))


def running_decoder(decoder: CLIPSegDecoder, device: torch.device) -> CLIPSegDecoder:
    """The decoder `segment` runs: on a CPU with oneDNN, a copy of the module tree whose ReLU MLPs are
    FusedReLUMLP (it shares `decoder`'s tensors); elsewhere `decoder` itself.

    In 9-pair calls on a 2-core CPU the fused MLP took 25 ms against 40 ms for fc1, ReLU, fc2.
    """
    if device.type != "cpu" or not FUSED_POINTWISE:
        return decoder
    running = shared_copy(decoder)
    for layer in running.layers:
        if isinstance(layer.mlp.activation_fn, torch.nn.ReLU):
            layer.mlp = FusedReLUMLP(layer.mlp)
    return running

"""open_clip's text tower on a context trimmed to the longest prompt (exact, and 4x less work).

Why it is exact: the tower is causal (each position attends only to itself and earlier
ones) and pools at the EOT token (argmax of the token ids, EOT having the largest id).
Positions after the longest prompt's EOT are padding that no kept position can see,
so cutting them off, with the causal mask and positional embedding sliced to match,
changes nothing but the cost. Other text towers (non-causal, other pooling) run whole.
"""

from __future__ import annotations

import torch


def trimmed_length(tokens: torch.Tensor) -> int:
    """Context needed by a (B, 77) token batch: up to and including the last EOT (argmax) of any row."""
    return int(tokens.argmax(dim=-1).max().item()) + 1


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """model.encode_text(tokens), computed on the trimmed context where that is exact."""
    attn_mask = getattr(model, "attn_mask", None)
    if getattr(model, "text_pool_type", None) != "argmax" or attn_mask is None or not hasattr(model, "token_embedding"):
        return model.encode_text(tokens)
    length = trimmed_length(tokens)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=attn_mask[:length, :length]))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection

"""Teacher-forced log-probabilities of many continuations after one shared prefix, in torch.

The prefix's key/value cache is computed once; every batch of continuations then runs as a
short suffix against that cache, expanded to the batch. ``reuse_prefix=False`` runs each
prefix + continuation as a full forward pass instead (the naive method), batched the same way,
so the two can be compared for agreement and speed.

Depends only on torch and transformers (the GPU benchmark runs it on a bare machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache


def score_continuations(
    model: Any,
    prefix_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    *,
    reuse_prefix: bool = True,
    batch_size: int = 8,
) -> list[float]:
    """Summed natural-log probability of each continuation's ids after ``prefix_ids``.

    Log-softmax runs in float32 over the model's float32 logits; each continuation's sum is
    accumulated in float64.
    """
    if not prefix_ids:
        raise ValueError(
            "prefix_ids: an empty prefix gives the first token nothing to condition on"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    for index, ids in enumerate(continuations):
        if not ids:
            raise ValueError(f"continuations[{index}]: empty continuation has no tokens to score")
    device = _model_device(model)
    prefix = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    # Sorting by length keeps the padding in each batch small; results go back in input order.
    order = sorted(range(len(continuations)), key=lambda i: len(continuations[i]))
    scores = [0.0] * len(continuations)
    with torch.inference_mode():
        prefix_state = _run_prefix(model, prefix) if reuse_prefix else None
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            padded, lengths = _pad_right([continuations[i] for i in batch], device)
            if prefix_state is None:
                sums = _score_full_passes(model, prefix, padded, lengths)
            else:
                sums = _score_suffixes(model, prefix_state, padded, lengths)
            for index, value in zip(batch, sums, strict=True):
                scores[index] = value
    return scores


class _PrefixState:
    """The prefix's cache tensors per layer and its log-distribution over the first token."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], first: torch.Tensor):
        self.layers = layers
        self.first_token_log_probs = first


def _run_prefix(model: Any, prefix: torch.Tensor) -> _PrefixState:
    cache = DynamicCache(config=model.config)
    # Only the last position's logits are needed: it predicts the continuation's first token.
    output = model(input_ids=prefix, past_key_values=cache, use_cache=True, logits_to_keep=1)
    cached_layers = output.past_key_values.layers
    if any(getattr(layer, "is_sliding", False) for layer in cached_layers):
        # A sliding layer keeps only its window: rebuilt from that, positions would be wrong.
        raise ValueError("reuse_prefix: sliding-window attention is not supported; use full passes")
    layers = [(layer.keys, layer.values) for layer in cached_layers]
    first = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
    return _PrefixState(layers, first)


def _score_suffixes(
    model: Any, state: _PrefixState, padded: torch.Tensor, lengths: list[int]
) -> list[float]:
    batch = padded.shape[0]
    # expand() is a view: the cache copies once, when the forward pass appends the suffix.
    cache = DynamicCache(
        ddp_cache_data=[
            (keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1))
            for keys, values in state.layers
        ],
        config=model.config,
    )
    # Right padding under a causal mask: real tokens never see the pads, so no mask is needed.
    output = model(input_ids=padded, past_key_values=cache, use_cache=True)
    first = state.first_token_log_probs[padded[:, 0]].unsqueeze(1)  # [B, 1]
    rest = _token_log_probs(output.logits[:, :-1], padded[:, 1:])  # [B, L-1]
    return _masked_sums(torch.cat([first, rest], dim=1), lengths)


def _score_full_passes(
    model: Any, prefix: torch.Tensor, padded: torch.Tensor, lengths: list[int]
) -> list[float]:
    batch, width = padded.shape
    inputs = torch.cat([prefix.expand(batch, -1), padded], dim=1)
    # The last width + 1 positions: prefix's last token onwards, predicting every continuation id.
    output = model(input_ids=inputs, use_cache=False, logits_to_keep=width + 1)
    return _masked_sums(_token_log_probs(output.logits[:, :width], padded), lengths)


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _masked_sums(token_log_probs: torch.Tensor, lengths: list[int]) -> list[float]:
    values = token_log_probs.double().cpu()
    return [float(values[row, :length].sum()) for row, length in enumerate(lengths)]


def _pad_right(
    sequences: list[Sequence[int]], device: torch.device
) -> tuple[torch.Tensor, list[int]]:
    lengths = [len(ids) for ids in sequences]
    # Any valid id pads: positions after a row's end are never read back.
    padded = torch.zeros((len(sequences), max(lengths)), dtype=torch.long)
    for row, ids in enumerate(sequences):
        padded[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
    return padded.to(device), lengths


GQA_SDPA = "sdpa_gqa_masked"


def use_grouped_query_sdpa(model: Any) -> bool:
    """Let ``model``'s SDPA attention keep grouped key/value heads even under a mask.

    transformers repeats the key/value heads to the query heads' count whenever a mask is
    passed, and suffix passes always carry one (queries at positions P.., keys 0..P+L). On CPU
    that copy of the expanded cache is over a third of a suffix pass; torch's SDPA computes
    the same result from the grouped heads (``enable_gqa``), bit for bit. CPU only: on CUDA a
    masked grouped call falls back to the slow math kernel. Returns whether it was switched
    on (SDPA models with grouped heads on CPU); otherwise the model is left unchanged.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = model.config
    heads = getattr(config, "num_attention_heads", 0)
    kv_heads = getattr(config, "num_key_value_heads", heads) or heads
    on_cpu = _model_device(model).type == "cpu"
    if not on_cpu or getattr(config, "_attn_implementation", None) != "sdpa" or kv_heads >= heads:
        return False

    def attention(
        module: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        is_causal: bool | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if attention_mask is None or kwargs.get("position_bias") is not None:
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
            )
        output = torch.nn.functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=dropout,
            scale=scaling,
            enable_gqa=True,
        )
        return output.transpose(1, 2).contiguous(), None

    AttentionInterface.register(GQA_SDPA, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GQA_SDPA, sdpa_mask)
    model.set_attn_implementation(GQA_SDPA)
    return True


def _model_device(model: Any) -> torch.device:
    return next(iter(model.parameters())).device  # type: ignore[no-any-return]

"""A small pre-norm character-level GPT whose linear layers are named for LoRA targeting.

Attention uses separate ``q``, ``k``, ``v``, ``o`` projections and the MLP ``up`` and ``down``, so
"all linear", attention-only and MLP-only LoRA are just lists of names. The embedding, the
positional embedding, the layer norms and the output ``head`` are never LoRA targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_MODULES = ("q", "k", "v", "o")
MLP_MODULES = ("up", "down")
ALL_LINEAR_MODULES = ATTENTION_MODULES + MLP_MODULES
MODULE_SCOPES: dict[str, tuple[str, ...]] = {
    "all": ALL_LINEAR_MODULES,
    "attn": ATTENTION_MODULES,
    "mlp": MLP_MODULES,
}


class Block(nn.Module):
    """Causal self-attention then a 4x GELU MLP, each behind a LayerNorm and a residual."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attention_norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, 4 * d_model)
        self.down = nn.Linear(4 * d_model, d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        normed = self.attention_norm(hidden)
        query, key, value = (
            projection(normed).view(batch, length, self.n_heads, -1).transpose(1, 2)
            for projection in (self.q, self.k, self.v)
        )
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True)
        hidden = hidden + self.o(attended.transpose(1, 2).reshape(batch, length, width))
        output: torch.Tensor = hidden + self.down(F.gelu(self.up(self.mlp_norm(hidden))))
        return output


class CharGPT(nn.Module):
    """Token and learned position embeddings, ``n_layers`` blocks, a final norm and a head."""

    def __init__(
        self, vocabulary_size: int, d_model: int, n_layers: int, n_heads: int, context: int
    ) -> None:
        super().__init__()
        self.context = context
        self.embedding = nn.Embedding(vocabulary_size, d_model)
        self.position = nn.Parameter(torch.zeros(context, d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocabulary_size)
        self.apply(_init_weights)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            hidden = block(hidden)
        logits: torch.Tensor = self.head(self.final_norm(hidden))
        return logits


def _init_weights(module: nn.Module) -> None:
    # GPT-2's init: N(0, 0.02) weights and zero biases keep the untrained loss near log(vocab).
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def next_character_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting ``windows[:, 1:]`` from ``windows[:, :-1]``."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), windows[:, 1:].reshape(-1))

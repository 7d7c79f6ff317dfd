"""What token usage costs: USD per million tokens by model, from prices.toml or an operator file."""

from __future__ import annotations

import logging
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engines.usage import Usage

logger = logging.getLogger(__name__)


class ModelPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="defaults to input")
    output: float = Field(ge=0)

    def cost(self, usage: Usage) -> float:
        cached_rate = self.input if self.cached_input is None else self.cached_input
        uncached = usage.prompt_tokens - usage.cached_prompt_tokens
        return (
            uncached * self.input
            + usage.cached_prompt_tokens * cached_rate
            + usage.completion_tokens * self.output
        ) / 1_000_000


class PriceTable(BaseModel):
    """Prices by model name. Local models cost nothing; an unknown remote model is priced at 0
    and reported through ``has_price`` so callers can warn instead of silently under-billing."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice] = Field(default_factory=dict)

    @classmethod
    def default(cls) -> PriceTable:
        text = resources.files("engines").joinpath("prices.toml").read_text()
        return cls.model_validate(tomllib.loads(text))

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The default table, overridden model by model by the TOML file at ``path``."""
        table = cls.default()
        if path is None:
            return table
        try:
            override = cls.model_validate(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"price_table: cannot read {path}: {exc}") from exc
        return cls(models={**table.models, **override.models})

    def price_for(self, model: str) -> ModelPrice | None:
        if model in self.models:
            return self.models[model]
        # "provider/model" and dated snapshots ("gpt-4o-2024-08-06") fall back to the base name.
        base = model.rsplit("/", 1)[-1]
        candidates = [name for name in self.models if base == name or base.startswith(name + "-")]
        return self.models[max(candidates, key=len)] if candidates else None

    def has_price(self, model: str) -> bool:
        return self.price_for(model) is not None

    def cost(self, model: str, usage: Usage) -> float:
        price = self.price_for(model)
        return 0.0 if price is None else price.cost(usage)

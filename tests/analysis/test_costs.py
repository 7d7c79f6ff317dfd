"""Usage arithmetic and the price table."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.prices import ModelPrice, PriceTable
from engines.usage import Usage


def test_usage_adds_and_sums() -> None:
    a = Usage(10, 5, 2)
    b = Usage(1, 1, 0)
    assert a + b == Usage(11, 6, 2)
    assert Usage.sum([a, b, Usage()]) == Usage(11, 6, 2)
    assert (a + b).total_tokens == 17


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"completion_tokens": -2}, "completion_tokens"),
        ({"prompt_tokens": 1, "cached_prompt_tokens": 2}, "cached_prompt_tokens"),
    ],
)
def test_usage_rejects_impossible_counts(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Usage(**kwargs)


def test_price_arithmetic_counts_cached_tokens_at_their_rate() -> None:
    price = ModelPrice(input=2.0, cached_input=0.5, output=8.0)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, cached_prompt_tokens=400_000)
    # 600k uncached * $2/M + 400k cached * $0.5/M + 500k out * $8/M
    assert price.cost(usage) == pytest.approx(1.2 + 0.2 + 4.0)


def test_cached_rate_defaults_to_input_rate() -> None:
    price = ModelPrice(input=1.0, output=1.0)
    assert price.cost(Usage(1_000_000, 0, 1_000_000)) == pytest.approx(1.0)


def test_default_table_prices_common_models_and_not_local_ones() -> None:
    table = PriceTable.default()
    assert table.cost("gpt-4o-mini", Usage(1_000_000, 1_000_000)) == pytest.approx(0.75)
    # Dated snapshots and provider prefixes fall back to the base model's price.
    assert table.price_for("gpt-4o-2024-08-06") == table.price_for("gpt-4o")
    assert table.price_for("openai/gpt-4o-mini") == table.price_for("gpt-4o-mini")
    assert table.price_for("gpt-4o-mini-2024-07-18") == table.price_for("gpt-4o-mini")
    assert not table.has_price("smollm2-135m-instruct")
    assert table.cost("smollm2-135m-instruct", Usage(10**6, 10**6)) == 0.0


def test_override_file_replaces_and_adds_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o"]\ninput = 1.0\noutput = 2.0\n[models."my-model"]\ninput = 3\noutput = 4\n'
    )
    table = PriceTable.load(path)
    assert table.cost("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(1.0)
    assert table.has_price("my-model")
    assert table.has_price("gpt-4o-mini")


def test_bad_override_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("this is = = not toml")
    with pytest.raises(ValueError, match="price_table"):
        PriceTable.load(path)
    path.write_text('[models."x"]\ninput = -1\noutput = 1\n')
    with pytest.raises(ValueError, match="input"):
        PriceTable.load(path)

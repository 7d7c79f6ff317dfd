"""A task's worst-case remote cost, reserved against the key's budget before the task runs.

The bound: the most remote calls the protocol states it can make with the task's options
(``Protocol.max_remote_calls``), each with a
prompt as large as the remote context window and a reply of ``remote_max_tokens``. A task's
``max_cost_usd`` (or the gateway's ``task_max_cost_usd``) lowers it; the metering engine then
holds the task to whichever is reserved.
"""

from __future__ import annotations

from engines.base import Engine
from engines.prices import PriceTable
from engines.usage import Usage
from protocols import protocol_class
from protocols.task import Options


def worst_case_usd(
    protocol: str, options: Options, remote: Engine, prices: PriceTable, *, stand_in: bool
) -> float:
    if stand_in:
        return 0.0
    price = prices.price_for(remote.model)
    if price is None:
        return 0.0
    per_call = price.cost(Usage(prompt_tokens=remote.context_window)) + price.cost(
        Usage(completion_tokens=options.remote_max_tokens)
    )
    return protocol_class(protocol).max_remote_calls(options) * per_call


def reservation_usd(
    worst_usd: float, max_cost_usd: float | None, default_cap_usd: float | None
) -> tuple[float, float | None]:
    """(what to reserve, the task's cap): the worst case, lowered by the task's cap."""
    cap = max_cost_usd if max_cost_usd is not None else default_cap_usd
    if cap is None:
        return worst_usd, worst_usd if worst_usd > 0 else None
    return min(worst_usd, cap), min(worst_usd, cap)

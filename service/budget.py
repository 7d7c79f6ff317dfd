"""A task's worst-case remote cost, reserved against the key's budget before the task runs.

The bound: the most remote prompt tokens the protocol states one run can send
(``Protocol.max_remote_prompt_tokens``: its worst-case calls, each with a prompt as large as the
remote context window, and for minion/minions at most ``max_remote_fraction`` x the task's
baseline), plus a reply of ``remote_max_tokens`` for each of its worst-case calls
(``Protocol.max_remote_calls``). A task's ``max_cost_usd`` (or the gateway's
``task_max_cost_usd``) lowers it; the metering engine then holds the task to whichever is
reserved.
"""

from __future__ import annotations

import asyncio

from engines.base import Engine, GenerationRequest
from engines.prices import PriceTable
from engines.usage import Usage
from protocols import Task, protocol_class
from protocols.base import remote_only_prompt
from protocols.task import Options
from service.metering import prompt_token_bound


def worst_case_usd(
    protocol: str,
    options: Options,
    remote: Engine,
    prices: PriceTable,
    *,
    stand_in: bool,
    baseline_tokens: int | None = None,
) -> float:
    if stand_in:
        return 0.0
    price = prices.price_for(remote.model)
    if price is None:
        return 0.0
    cls = protocol_class(protocol)
    prompt = cls.max_remote_prompt_tokens(options, baseline_tokens, remote.context_window)
    replies = cls.max_remote_calls(options) * options.remote_max_tokens
    return price.cost(Usage(prompt_tokens=prompt)) + price.cost(Usage(completion_tokens=replies))


async def admission_baseline(
    task: Task,
    protocol: str,
    options: Options,
    remote: Engine,
    prices: PriceTable,
    *,
    stand_in: bool,
) -> int | None:
    """The task's baseline for its reservation, when it can lower it (a priced remote, not the
    local stand-in, and a protocol that calls it): ``remote_only``'s prompt, bounded the way the
    metering engine bounds each call (``prompt_token_bound``: no more than one token a
    character), so that what the run's remote budget admits (a fraction of the baseline in the
    remote's count) the task's cost cap admits too, whatever the provider's tokenizer. Off the
    event loop: it reads every document."""
    if stand_in or not prices.has_price(remote.model):
        return None
    if protocol_class(protocol).max_remote_calls(options) == 0:
        return None
    request = GenerationRequest.from_prompt(remote_only_prompt(task), max_tokens=1)
    return await asyncio.to_thread(prompt_token_bound, remote, request)


def reservation_usd(
    worst_usd: float, max_cost_usd: float | None, default_cap_usd: float | None
) -> tuple[float, float | None]:
    """(what to reserve, the task's cap): the worst case, lowered by the task's cap."""
    cap = max_cost_usd if max_cost_usd is not None else default_cap_usd
    if cap is None:
        return worst_usd, worst_usd if worst_usd > 0 else None
    return min(worst_usd, cap), min(worst_usd, cap)

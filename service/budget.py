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

from engines.base import Engine
from engines.prices import PriceTable
from engines.usage import Usage
from protocols import Task, protocol_class
from protocols.base import remote_only_prompt
from protocols.task import Options
from service.metering import TEMPLATE_TOKENS


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
    local stand-in, and a protocol that calls it): an upper bound of the prompt tokens of
    ``remote_only``'s one call as the metering engine bounds that call (``prompt_token_bound``),
    so that what the run's remote budget admits the task's cost cap admits too.

    Its UTF-8 bytes, not a count: no tokenizer makes more tokens of a text than it has bytes (a
    byte-level BPE token is at least one byte), the documents were already counted once at
    submission, and counting up to ``max_document_tokens`` again would cost seconds of CPU per
    submit. For ASCII text it is the metering engine's own bound (one token a character)."""
    if stand_in or not prices.has_price(remote.model):
        return None
    if protocol_class(protocol).max_remote_calls(options) == 0:
        return None
    prompt = await asyncio.to_thread(remote_only_prompt, task)
    return min(len(prompt.encode("utf-8")) + TEMPLATE_TOKENS, remote.context_window)


def reservation_usd(
    worst_usd: float, max_cost_usd: float | None, default_cap_usd: float | None
) -> tuple[float, float | None]:
    """(what to reserve, the task's cap): the worst case, lowered by the task's cap."""
    cap = max_cost_usd if max_cost_usd is not None else default_cap_usd
    if cap is None:
        return worst_usd, worst_usd if worst_usd > 0 else None
    return min(worst_usd, cap), min(worst_usd, cap)

"""The metering engine: it counts usage and cost, bills aborted calls at their prompt bound, and
refuses a remote call whose worst case no longer fits the task's cap."""

from __future__ import annotations

import asyncio

import pytest
from gateway_helpers import GatedEngine
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.prices import PriceTable
from protocols import PROTOCOLS
from protocols.task import Options
from service.budget import reservation_usd, worst_case_usd
from service.metering import CostCapReached, MeteredEngine, prompt_token_bound

PRICES = PriceTable.default()  # gpt-4o: $2.50 / M input, $10 / M output


def request(text: str, max_tokens: int = 100) -> GenerationRequest:
    return GenerationRequest.from_prompt(text, max_tokens=max_tokens)


async def test_usage_and_cost_are_summed_over_calls() -> None:
    remote = MeteredEngine(ScriptedEngine(default="one two", model="gpt-4o"), PRICES, priced=True)
    await remote.generate([request("a b c"), request("d e")])
    await remote.generate([request("f")])
    assert (remote.usage.prompt_tokens, remote.usage.completion_tokens) == (6, 6)
    assert remote.requests == 3
    assert remote.cost_usd == pytest.approx(6 * 2.5e-6 + 6 * 10e-6)


async def test_a_call_that_could_pass_the_cap_is_refused_before_it_runs() -> None:
    inner = ScriptedEngine(default="ok", model="gpt-4o")
    text = "x " * 100
    bound = prompt_token_bound(inner, request(text))
    assert bound == len(text) + 64  # one token a character at most, plus the chat template
    worst = bound * 2.5e-6 + 100 * 10e-6
    metered = MeteredEngine(inner, PRICES, priced=True, cap_usd=worst * 1.1)
    await metered.generate([request(text)])  # fits: runs
    spent = metered.cost_usd
    assert spent < worst
    with pytest.raises(CostCapReached, match="cost cap"):
        await metered.generate([request(text)])  # spent + worst > cap
    assert len(inner.calls) == 1 and metered.cost_usd == spent


async def test_an_aborted_call_is_billed_at_its_prompt_bound() -> None:
    inner = GatedEngine(model="gpt-4o")
    metered = MeteredEngine(inner, PRICES, priced=True)
    call = asyncio.create_task(metered.generate([request("SLOW please")]))
    await inner.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert metered.usage.prompt_tokens == prompt_token_bound(inner, request("SLOW please"))
    assert metered.cost_usd > 0 and inner.cancelled == 1


def test_worst_case_is_the_protocols_bound_times_a_full_call() -> None:
    options = Options(max_rounds=2, json_retries=1)
    remote = ScriptedEngine(model="gpt-4o", context_window=1000)
    one_call = 1000 * 2.5e-6 + options.remote_max_tokens * 10e-6
    reply = options.remote_max_tokens * 10e-6
    calls = PROTOCOLS["minions"].max_remote_calls(options)
    assert worst_case_usd("remote_only", options, remote, PRICES, stand_in=False) == (
        pytest.approx(one_call)
    )
    assert worst_case_usd("minions", options, remote, PRICES, stand_in=False) == (
        pytest.approx(one_call * calls)
    )

    # With the task's baseline counted, remote_only sends exactly it, and minions at most
    # max_remote_fraction (0.5) of it over all calls: replies are what is left to reserve.
    def with_baseline(protocol: str, tokens: int) -> float:
        return worst_case_usd(
            protocol, options, remote, PRICES, stand_in=False, baseline_tokens=tokens
        )

    assert with_baseline("remote_only", 700) == pytest.approx(700 * 2.5e-6 + reply)
    assert with_baseline("minions", 700) == pytest.approx(350 * 2.5e-6 + calls * reply)
    # Never above the calls' own bound, however long the documents.
    assert with_baseline("minions", 10**9) == pytest.approx(one_call * calls)
    assert worst_case_usd("local_only", options, remote, PRICES, stand_in=False) == 0
    assert worst_case_usd("minions", options, remote, PRICES, stand_in=True) == 0
    assert reservation_usd(1.0, 0.25, None) == (0.25, 0.25)
    assert reservation_usd(0.1, None, 0.25) == (0.1, 0.1)
    assert reservation_usd(0.0, None, None) == (0.0, None)

"""When not even one round of a protocol fits its remote budget (a short document: the round's
fixed prompts cost more than the documents themselves), it answers without rounds: with
``remote_only`` when sending the documents fits the budget (then it is also the cheaper way),
otherwise with what it has, the local model alone (``local_only``). Either way it says so."""

from __future__ import annotations

from protocols.base import Protocol, RunState
from protocols.local_only import LocalOnly
from protocols.remote_only import RemoteOnly


async def answer_without_rounds(protocol: Protocol, state: RunState, round_tokens: int) -> str:
    """The answer when one round would need ``round_tokens`` remote prompt tokens and the
    budget has fewer left."""
    guard, baseline = state.guard, state.baseline
    documents = baseline.remote_prompt_tokens
    needed = (
        f"one {protocol.name} round needs about {round_tokens} remote prompt tokens and the "
        f"remote budget has {guard.left:.0f} left ({state.options.max_remote_fraction} x "
        f"remote_only's {documents})"
    )
    peers = (protocol.local, protocol.remote, protocol.prices)
    if not baseline.exceeds_context and guard.affords(documents):
        guard.fall_back(1, "remote_only", f"{needed}; sending the documents takes {documents}")
        state.warn(f"not even one round fits: {needed}; remote_only answered (cheaper)")
        return await RemoteOnly(*peers, remote_stand_in=protocol.remote_stand_in)._run(state)
    guard.fall_back(1, "local_only", f"{needed}; remote_only would take {documents}")
    state.warn(f"not even one round fits: {needed}; the local model answered alone (local_only)")
    return await LocalOnly(*peers, remote_stand_in=protocol.remote_stand_in)._run(state)

"""MinionS: the remote plans small jobs over chunks, the local model runs them in parallel, the
remote aggregates. The remote never sees the documents, and never writes code we run: its plan is
data validated by ``protocols.plans``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import cache

from engines.base import ChatMessage
from protocols import prompts
from protocols.base import Protocol, RunState, render_metadata
from protocols.chunking import Chunk
from protocols.fallback import answer_without_rounds
from protocols.findings import merge_findings, rank_findings
from protocols.jobs import (
    build_jobs,
    crossings,
    findings_lines,
    fit_lines,
    judge,
    select_chunks,
)
from protocols.plan_dedupe import merge_duplicate_tasks
from protocols.plans import (
    AggregateDecision,
    FinalAggregateDecision,
    JobPlan,
    job_plan_schema,
    job_tokens_for,
)
from protocols.result import LocalOutput, RemoteMessage, RoundRecord
from protocols.retrieval import ChunkRetriever
from protocols.structured import ask_json, salvage_answer
from protocols.task import Options

# Tokens kept free in a job prompt for the task and advice text (the plan caps each at 1000
# characters; the job is dropped as too long if they still do not fit).
TASK_TOKENS_RESERVE = 300
# Findings below this many tokens make no round worth starting: a handful of short findings.
MIN_FINDINGS_TOKENS = 64
# Room kept in the next round's prompts for the notes (scratchpad, feedback) this round adds.
NOTES_TOKENS = 160
NOT_ANSWERED = "No answer: the remote budget ran out before the findings could be aggregated."


class MinionS(Protocol):
    """Each round: a plan (one remote call), jobs (local), an aggregation (one remote call).

    The remote budget (``Options.max_remote_fraction`` x the baseline) is shared by the rounds:
    each may spend what is left divided by the rounds left, and the findings of its aggregation
    are fitted to that; a round starts only if the budget pays for its plan, its aggregation's
    prompt and a few findings, and an aggregation is the last when the budget could not pay for
    another round after it.
    """

    name = "minions"
    remote_budget = True
    sends_compressions = True

    @classmethod
    def max_remote_calls(cls, options: Options) -> int:
        # A plan and an aggregation a round, each retried when invalid.
        return options.max_rounds * 2 * (1 + options.json_retries)

    async def _run(self, state: RunState) -> str:
        options, guard = state.options, state.guard
        frame = prompts.render(
            "minions_job", source="document, chunk 0, page 1", chunk="", task="", advice=""
        )
        reserved = self.local.count_tokens(frame) + TASK_TOKENS_RESERVE + options.job_max_tokens
        chunks = await self.local_chunks(state, reserved)
        retriever = cache(lambda: ChunkRetriever(chunks))
        scratchpad = ""
        feedback: str | None = None
        for number in range(1, options.max_rounds + 1):
            decompose = self._decompose_messages(state, chunks, scratchpad, feedback, number)
            aggregate_frame = self.remote.count_prompt_tokens(
                self._aggregate_messages(state, scratchpad, "", number, last=True)
            )
            fixed = self.remote.count_prompt_tokens(decompose) + aggregate_frame
            if not guard.affords(fixed + MIN_FINDINGS_TOKENS):
                if number == 1:
                    return await answer_without_rounds(self, state, fixed + MIN_FINDINGS_TOKENS)
                return self._answer_from_notes(state, number, scratchpad, [])
            # The rounds left share what is left; what one does not use, the next may.
            share = guard.left / (options.max_rounds - number + 1)
            allowance = max(fixed + MIN_FINDINGS_TOKENS, share)
            started = guard.spent
            record = state.new_round(number)
            await state.events.emit(
                "round_started", {"round": number, "last": number == options.max_rounds}
            )
            plan = await self._plan(
                state, record, chunks, decompose, aggregate_frame + MIN_FINDINGS_TOKENS
            )
            room = int(allowance - (guard.spent - started) - aggregate_frame)
            plan, outputs = await self._execute(state, record, plan, chunks, retriever, room)
            findings = self._findings(state, record, plan, outputs, chunks, scratchpad, room)
            state.compressions.append(findings)
            messages = self._aggregate_messages(state, scratchpad, findings, number, last=False)
            cost = self.remote.count_prompt_tokens(messages)
            if not guard.affords(cost):  # only when the plan's retries took more than estimated
                return self._answer_from_notes(state, number, scratchpad, outputs)
            last = guard.last_round(
                number,
                options.max_rounds,
                cost + fixed + NOTES_TOKENS + MIN_FINDINGS_TOKENS,
                "aggregation",
            )
            reply = await ask_json(
                state.recorder,
                "remote",
                "aggregate",
                self._aggregate_messages(state, scratchpad, findings, number, last),
                FinalAggregateDecision if last else AggregateDecision,
                round=number,
                max_tokens=options.remote_max_tokens,
                retries=options.json_retries,
                reserve=0 if last else fixed + NOTES_TOKENS + MIN_FINDINGS_TOKENS,
            )
            record.remote_messages += [
                RemoteMessage(purpose="aggregate", text=t) for t in reply.raw
            ]
            decision = reply.value
            if decision is None:
                state.warn(
                    f"round {number}: the remote's aggregation was invalid after "
                    f"{reply.attempts} attempts ({reply.errors[-1]})"
                )
                if last:
                    return salvage_answer(reply.raw[-1])
                # The round's number keeps the next plan request from repeating this one's.
                feedback = f"Round {number}'s findings could not be aggregated; try again."
                continue
            record.decision = decision.decision
            record.scratchpad = scratchpad = decision.scratchpad
            record.feedback = feedback = decision.feedback
            if decision.decision == "final_answer":
                return decision.answer or ""
            if last:  # unreachable: the last round's schema only takes a final answer
                return self._answer_from_notes(state, number, scratchpad, outputs)
        raise AssertionError("unreachable: the last round only accepts a final answer")

    @staticmethod
    def _answer_from_notes(
        state: RunState, number: int, scratchpad: str, outputs: list[LocalOutput]
    ) -> str:
        """The answer when the budget cannot pay for the aggregation a round needs: the remote's
        notes so far, else the first finding."""
        detail = "the remote budget cannot pay for the next aggregation"
        state.guard.fall_back(number, "answer_from_notes", detail)
        state.warn(f"round {number}: {detail}; answered from the remote's notes so far")
        if scratchpad.strip():
            return scratchpad
        found = next((o.answer for o in outputs if o.answer), None)
        return found or NOT_ANSWERED

    def _decompose_messages(
        self,
        state: RunState,
        chunks: list[Chunk],
        scratchpad: str,
        feedback: str | None,
        number: int,
    ) -> list[ChatMessage]:
        history = ""
        if number > 1:
            history = f"\nWhat earlier rounds found: {scratchpad or '(nothing yet)'}\n"
            history += f"What is still missing: {feedback or '(not stated)'}\n"
        prompt = prompts.render(
            "minions_decompose",
            question=state.task.question,
            metadata=render_metadata(state.task.metadata, state.task.documents),
            stats=self._stats_line(state, chunks),
            history=history,
            max_tasks=state.options.max_tasks_per_round,
        )
        return [ChatMessage(role="user", content=prompt)]

    async def _plan(
        self,
        state: RunState,
        record: RoundRecord,
        chunks: list[Chunk],
        messages: list[ChatMessage],
        reserve: int,
    ) -> JobPlan:
        options = state.options
        reply = await ask_json(
            state.recorder,
            "remote",
            "decompose",
            messages,
            JobPlan,
            round=record.round,
            max_tokens=options.remote_max_tokens,
            retries=options.json_retries,
            context={"chunk_count": len(chunks), "max_tasks": options.max_tasks_per_round},
            schema=job_plan_schema(
                options.max_tasks_per_round, len(chunks), options.remote_max_tokens
            ),
            reserve=reserve,
        )
        record.remote_messages += [RemoteMessage(purpose="decompose", text=t) for t in reply.raw]
        if reply.value is None:
            state.warn(
                f"round {record.round}: fallback plan used (the question over all chunks): the "
                f"remote's plan was invalid after {reply.attempts} attempts ({reply.errors[-1]})"
            )
            plan, record.plan_source = JobPlan.default(state.task.question), "fallback"
        else:
            plan, record.plan_source = reply.value, "remote"
        record.plan = plan.model_dump(mode="json")
        await state.events.emit(
            "plan", {"round": record.round, "plan": record.plan, "source": record.plan_source}
        )
        return plan

    async def _execute(
        self,
        state: RunState,
        record: RoundRecord,
        plan: JobPlan,
        chunks: list[Chunk],
        retriever: Callable[[], ChunkRetriever],
        room: int,
    ) -> tuple[JobPlan, list[LocalOutput]]:
        """The round's jobs run; returns the plan as run (duplicate tasks merged: the outputs'
        task indices refer to it) and the kept outputs."""
        selected, warnings = select_chunks(plan, chunks, retriever)
        plan, selected, merged = merge_duplicate_tasks(plan, selected)
        if merged:
            state.guard.trim(record.round, "duplicate_plan_tasks", merged, "merged before any job")
            record.plan = plan.model_dump(mode="json")
        # Job outputs are short by construction: sized so several fit the round's findings room.
        job_tokens = job_tokens_for(room, state.options.job_max_tokens)
        batch = build_jobs(
            plan, chunks, selected, state.options, self.local, retriever, reply_tokens=job_tokens
        )
        for warning in warnings + batch.warnings:
            state.warn(f"round {record.round}: {warning}")
        results = await self.local_batches(state, "job", batch.requests, round=record.round)
        outputs: list[LocalOutput] = []
        dropped: Counter[str] = Counter(batch.counts.dropped)
        for job, result in zip(batch.jobs, results, strict=True):
            output, reason = judge(job, result)
            if output is None:
                dropped[reason or "unknown"] += 1
            else:
                outputs.append(output)
        counts = batch.counts.model_copy(
            update={"run": len(batch.jobs), "kept": len(outputs), "dropped": dict(dropped)}
        )
        record.jobs = counts
        record.local_outputs = outputs
        lost = {reason: n for reason, n in dropped.items() if reason != "no_answer"}
        if lost:
            state.warn(f"round {record.round}: jobs dropped: {lost} (of {counts.run} run)")
        state.guard.trim(record.round, "no_answer_outputs", dropped.get("no_answer", 0))
        return plan, outputs

    def _findings(
        self,
        state: RunState,
        record: RoundRecord,
        plan: JobPlan,
        outputs: list[LocalOutput],
        chunks: list[Chunk],
        scratchpad: str,
        room: int,
    ) -> str:
        """The findings text for the aggregation: no "no answer" outputs, near-duplicates merged,
        the most relevant first, as many as fit ``room`` tokens (and the remote's context)."""
        found, no_answer = merge_findings(outputs, lambda chunk_id: chunks[chunk_id].text)
        guard = state.guard
        guard.trim(record.round, "no_answer_outputs", no_answer)
        guard.trim(record.round, "near_duplicate_findings", len(outputs) - no_answer - len(found))
        ranked = rank_findings(state.task.question, [t.task for t in plan.tasks], found)
        lines = findings_lines(plan, ranked, chunks)
        frame = self._aggregate_messages(state, scratchpad, "", record.round, last=True)
        context_room = (
            self.remote.context_window
            - state.options.remote_max_tokens
            - self.remote.count_prompt_tokens(frame)
        )
        header = len(plan.tasks)  # the task lines always go; the findings are what is fitted
        text, left_out = fit_lines(
            lines, max(min(room, context_room), 0), self.remote.count_tokens, keep=header
        )
        if left_out:
            guard.trim(record.round, "findings_over_budget", left_out, "the least relevant")
            state.warn(
                f"round {record.round}: {left_out} findings left out to fit the remote budget "
                "and context"
            )
        record.crossed = crossings(plan, outputs, text, state.task.question)
        return text

    def _aggregate_messages(
        self, state: RunState, scratchpad: str, findings: str, number: int, last: bool
    ) -> list[ChatMessage]:
        # The round's number: the remote learns how far along it is, and two rounds with the
        # same findings never make the same request.
        note = f"Round {number} of at most {state.options.max_rounds}. " + (
            "This is the last round: give your final answer now, from what is known."
            if last
            else "If the findings answer the question, give the final answer; otherwise request "
            "another round and say what to look for."
        )
        prompt = prompts.render(
            "minions_aggregate",
            question=state.task.question,
            metadata=render_metadata(state.task.metadata, state.task.documents),
            scratchpad=scratchpad or "(none yet)",
            findings=findings,
            round_note=note,
        )
        return [ChatMessage(role="user", content=prompt)]

    @staticmethod
    def _stats_line(state: RunState, chunks: list[Chunk]) -> str:
        stats = state.stats
        size = stats.chunk_tokens if stats else 0
        parts = [
            f"{len(chunks)} chunks of up to {size} tokens (ids 0 to {len(chunks) - 1}), "
            f"{state.task.page_count} pages, {len(state.task.documents)} documents"
        ]
        ranges: dict[int, list[Chunk]] = {}
        for chunk in chunks:
            ranges.setdefault(chunk.document_index, []).append(chunk)
        for members in list(ranges.values())[:20]:
            first, final = members[0], members[-1]
            parts.append(
                f'"{first.document_name}": chunks {first.id}-{final.id} '
                f"(pages {first.first_page}-{final.last_page})"
            )
        if len(ranges) > 20:
            parts.append(f"and {len(ranges) - 20} more documents")
        return "; ".join(parts)

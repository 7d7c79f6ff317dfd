"""MinionS: the remote plans small jobs over chunks, the local model runs them in parallel, the
remote aggregates. The remote never sees the documents, and never writes code we run: its plan is
data validated by ``protocols.plans``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import cache

from engines.base import ChatMessage
from protocols import prompts
from protocols.base import CHAT_TEMPLATE_MARGIN, Protocol, RunState, render_metadata
from protocols.chunking import Chunk
from protocols.jobs import build_jobs, findings_lines, fit_lines, judge, select_chunks
from protocols.plans import AggregateDecision, FinalAggregateDecision, JobPlan, job_plan_schema
from protocols.result import LocalOutput, RemoteMessage, RoundRecord
from protocols.retrieval import ChunkRetriever
from protocols.structured import ask_json, salvage_answer

# Tokens kept free in a job prompt for the task and advice text (the plan caps each at 1000
# characters; the job is dropped as too long if they still do not fit).
TASK_TOKENS_RESERVE = 300


class MinionS(Protocol):
    name = "minions"

    async def _run(self, state: RunState) -> str:
        options = state.options
        frame = prompts.render(
            "minions_job", source="document, chunk 0, page 1", chunk="", task="", advice=""
        )
        reserved = self.local.count_tokens(frame) + TASK_TOKENS_RESERVE + options.job_max_tokens
        chunks = await self.local_chunks(state, reserved)
        retriever = cache(lambda: ChunkRetriever(chunks))
        scratchpad = ""
        feedback: str | None = None
        for number in range(1, options.max_rounds + 1):
            record = state.new_round(number)
            last = number == options.max_rounds
            await state.events.emit("round_started", {"round": number, "last": last})
            plan = await self._plan(state, record, chunks, scratchpad, feedback)
            outputs = await self._execute(state, record, plan, chunks, retriever)
            findings = self._findings(state, plan, outputs, chunks, scratchpad, last)
            state.compressions.append(findings)
            reply = await ask_json(
                state.recorder,
                "remote",
                "aggregate",
                self._aggregate_messages(state, scratchpad, findings, last),
                FinalAggregateDecision if last else AggregateDecision,
                round=number,
                max_tokens=options.remote_max_tokens,
                retries=options.json_retries,
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
                feedback = "The previous round's findings could not be aggregated; try again."
                continue
            record.decision = decision.decision
            record.scratchpad = scratchpad = decision.scratchpad
            record.feedback = feedback = decision.feedback
            if decision.decision == "final_answer":
                return decision.answer or ""
        raise AssertionError("unreachable: the last round only accepts a final answer")

    async def _plan(
        self,
        state: RunState,
        record: RoundRecord,
        chunks: list[Chunk],
        scratchpad: str,
        feedback: str | None,
    ) -> JobPlan:
        options = state.options
        history = ""
        if record.round > 1:
            history = f"\nWhat earlier rounds found: {scratchpad or '(nothing yet)'}\n"
            history += f"What is still missing: {feedback or '(not stated)'}\n"
        prompt = prompts.render(
            "minions_decompose",
            question=state.task.question,
            metadata=render_metadata(state.task.metadata, state.task.documents),
            stats=self._stats_line(state, chunks),
            history=history,
            max_tasks=options.max_tasks_per_round,
        )
        reply = await ask_json(
            state.recorder,
            "remote",
            "decompose",
            [ChatMessage(role="user", content=prompt)],
            JobPlan,
            round=record.round,
            max_tokens=options.remote_max_tokens,
            retries=options.json_retries,
            context={"chunk_count": len(chunks), "max_tasks": options.max_tasks_per_round},
            schema=job_plan_schema(
                options.max_tasks_per_round, len(chunks), options.remote_max_tokens
            ),
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
    ) -> list[LocalOutput]:
        selected, warnings = select_chunks(plan, chunks, retriever)
        batch = build_jobs(plan, chunks, selected, state.options, self.local)
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
        return outputs

    def _findings(
        self,
        state: RunState,
        plan: JobPlan,
        outputs: list[LocalOutput],
        chunks: list[Chunk],
        scratchpad: str,
        last: bool,
    ) -> str:
        lines = findings_lines(plan, outputs, chunks)
        frame = "\n".join(m.content for m in self._aggregate_messages(state, scratchpad, "", last))
        budget = (
            self.remote.context_window
            - state.options.remote_max_tokens
            - CHAT_TEMPLATE_MARGIN
            - self.remote.count_tokens(frame)
        )
        text, left_out = fit_lines(lines, max(budget, 0), self.remote.count_tokens)
        if left_out:
            state.warn(f"{left_out} findings left out to fit the remote context window")
        return text

    def _aggregate_messages(
        self, state: RunState, scratchpad: str, findings: str, last: bool
    ) -> list[ChatMessage]:
        note = (
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

"""Local-only baseline: the local model alone. Documents that fit its context are read in one
call; longer ones are read chunk by chunk (map), and the notes combined locally (reduce)."""

from __future__ import annotations

from engines.base import GenerationRequest
from protocols import prompts
from protocols.base import (
    CHAT_TEMPLATE_MARGIN,
    Protocol,
    ProtocolFailed,
    RunState,
    chunk_source,
    neutralize,
    render_documents,
    render_metadata,
)
from protocols.plans import is_empty_answer
from protocols.result import LocalOutput, RoundRecord
from protocols.task import Options

NOTHING_FOUND = "The documents do not appear to contain the answer."
_MAX_REDUCE_LEVELS = 8


class LocalOnly(Protocol):
    name = "local_only"
    answer_limit_option = "local_max_tokens"

    @classmethod
    def max_remote_calls(cls, options: Options) -> int:
        return 0

    async def _run(self, state: RunState) -> str:
        task, options = state.task, state.options
        record = state.new_round(1)
        await state.events.emit("round_started", {"round": 1, "last": True})
        whole = prompts.render(
            "local_only_answer",
            documents=render_documents(task.documents),
            question=task.question,
            metadata=render_metadata(task.metadata, task.documents),
        )
        if self.fits(self.local, whole, options.local_max_tokens):
            result = await state.recorder.generate_one(
                "local", "answer", self._request(state, whole), round=1
            )
            record.local_outputs.append(LocalOutput(answer=result.text.strip()))
            record.decision = "final_answer"
            return result.text
        notes = await self._map(state, record)
        record.decision = "final_answer"
        if not notes:
            state.warn("no chunk had anything relevant to the question")
            return NOTHING_FOUND
        return await self._reduce(state, notes)

    async def _map(self, state: RunState, record: RoundRecord) -> list[str]:
        frame = prompts.render(
            "local_only_chunk",
            source="document, chunk 0, page 1",
            chunk="",
            question=state.task.question,
        )
        chunks = await self.local_chunks(
            state, self.local.count_tokens(frame) + state.options.local_max_tokens
        )
        requests = [
            self._request(
                state,
                prompts.render(
                    "local_only_chunk",
                    source=chunk_source(chunk),
                    chunk=neutralize(chunk.text),
                    question=state.task.question,
                ),
            )
            for chunk in chunks
        ]
        results = await self.local_batches(state, "map", requests, round=1)
        notes = []
        for chunk, result in zip(chunks, results, strict=True):
            text = "" if isinstance(result, Exception) else result.text.strip()
            if text and not is_empty_answer(text):
                record.local_outputs.append(LocalOutput(chunk_id=chunk.id, answer=text))
                notes.append(f"[{chunk_source(chunk)}] {text}")
        return notes

    async def _reduce(self, state: RunState, notes: list[str]) -> str:
        """Combine notes into one answer, in as many levels as the context requires."""
        frame = prompts.render("local_only_combine", notes="", question=state.task.question)
        budget = (
            self.local.context_window
            - state.options.local_max_tokens
            - CHAT_TEMPLATE_MARGIN
            - self.local.count_tokens(frame)
        )
        # Each group must hold at least two notes, or reducing would never converge.
        notes = [self._clip(note, budget // 2) for note in notes]
        for _ in range(_MAX_REDUCE_LEVELS):
            groups = self._groups(notes, budget)
            prompts_ = [
                prompts.render(
                    "local_only_combine", notes="\n".join(g), question=state.task.question
                )
                for g in groups
            ]
            results = await self.local_batches(
                state, "combine", [self._request(state, p) for p in prompts_], round=1
            )
            notes = [
                self._clip(r.text.strip(), budget // 2)
                for r in results
                if not isinstance(r, Exception)
            ]
            if len(notes) <= 1:
                break
        if not notes:
            raise ProtocolFailed("the local engine failed to combine the notes")
        return notes[0]

    def _groups(self, notes: list[str], budget: int) -> list[list[str]]:
        groups: list[list[str]] = [[]]
        used = 0
        for note in notes:
            tokens = self.local.count_tokens(note) + 1
            if groups[-1] and used + tokens > budget:
                groups.append([])
                used = 0
            groups[-1].append(note)
            used += tokens
        return groups

    def _clip(self, text: str, max_tokens: int) -> str:
        tokens = self.local.count_tokens(text)
        while tokens > max_tokens and text:
            text = text[: int(len(text) * max_tokens / tokens * 0.95)]
            tokens = self.local.count_tokens(text)
        return text

    @staticmethod
    def _request(state: RunState, prompt: str) -> GenerationRequest:
        options = state.options
        return GenerationRequest.from_prompt(
            prompt,
            max_tokens=options.local_max_tokens,
            temperature=options.temperature,
            seed=options.seed,
        )

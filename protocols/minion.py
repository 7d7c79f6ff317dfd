"""Minion: a chat between the remote (which never sees the documents) and the local model (which
reads them). Each round the local model answers the remote's message, then the remote decides in
one JSON call to answer or to ask again; the last round only accepts an answer."""

from __future__ import annotations

from engines.base import ChatMessage, GenerationRequest
from protocols import prompts
from protocols.base import (
    CHAT_TEMPLATE_MARGIN,
    Protocol,
    RunState,
    chunk_source,
    neutralize,
    render_documents,
    render_metadata,
)
from protocols.chunking import Chunk
from protocols.plans import ChatDecision, FinalChatDecision, is_empty_answer
from protocols.result import LocalOutput, RemoteMessage, RoundRecord
from protocols.structured import ask_json, salvage_answer

# Room kept in every local prompt for the remote's message; longer messages are clipped to it.
MESSAGE_TOKENS = 512
NOTHING_FOUND = "NONE: nothing in the documents answers this."


class Minion(Protocol):
    name = "minion"

    async def _run(self, state: RunState) -> str:
        options = state.options
        task = state.task
        local_system = prompts.render(
            "minion_local_system", documents=render_documents(task.documents)
        )
        chunks: list[Chunk] | None = None
        if not self.fits(self.local, local_system, options.local_max_tokens + MESSAGE_TOKENS):
            frame = prompts.render(
                "minion_local_chunk", source="document, chunk 0", chunk="", message=""
            )
            reserved = self.local.count_tokens(frame) + MESSAGE_TOKENS + options.local_max_tokens
            chunks = await self.local_chunks(state, reserved)
        conversation = [
            ChatMessage(role="system", content=prompts.render("minion_remote_system")),
            ChatMessage(
                role="user",
                content=prompts.render(
                    "minion_remote_start",
                    question=task.question,
                    metadata=render_metadata(task.metadata, task.documents),
                    stats=self._stats_line(state, chunks),
                ),
            ),
        ]
        opening = await state.recorder.generate_one(
            "remote",
            "chat",
            GenerationRequest(messages=tuple(conversation), max_tokens=options.remote_max_tokens),
            round=1,
        )
        message = opening.text.strip()
        if not message:
            state.warn("the remote's opening message was empty; the question was sent instead")
            message = task.question
        conversation.append(ChatMessage(role="assistant", content=message))
        message_purpose = "chat"
        for number in range(1, options.max_rounds + 1):
            record = state.new_round(number)
            last = number == options.max_rounds
            await state.events.emit("round_started", {"round": number, "last": last})
            record.remote_messages.append(RemoteMessage(purpose=message_purpose, text=message))
            reply = await self._local_reply(state, record, local_system, chunks, message)
            state.compressions.append(reply)
            note = (
                "This is the last round: give the final answer now, from what you know."
                if last
                else "Answer if you can; otherwise ask the colleague one more specific question."
            )
            conversation.append(
                ChatMessage(
                    role="user",
                    content=prompts.render("minion_remote_decide", reply=reply, round_note=note),
                )
            )
            decided = await ask_json(
                state.recorder,
                "remote",
                "decide",
                conversation,
                FinalChatDecision if last else ChatDecision,
                round=number,
                max_tokens=options.remote_max_tokens,
                retries=options.json_retries,
            )
            record.remote_messages += [RemoteMessage(purpose="decide", text=t) for t in decided.raw]
            if decided.value is None:
                state.warn(
                    f"round {number}: the remote's decision was invalid after {decided.attempts} "
                    f"attempts ({decided.errors[-1]}); its last reply is used as the answer"
                )
                record.decision = "invalid"
                return salvage_answer(decided.raw[-1])
            record.decision = decided.value.decision
            conversation.append(ChatMessage(role="assistant", content=decided.raw[-1]))
            if decided.value.decision == "final_answer":
                return decided.value.answer or ""
            message, message_purpose = decided.value.message or task.question, "decide"
        raise AssertionError("unreachable: the last round only accepts a final answer")

    async def _local_reply(
        self,
        state: RunState,
        record: RoundRecord,
        local_system: str,
        chunks: list[Chunk] | None,
        message: str,
    ) -> str:
        options = state.options
        message = self._clip_message(state, message)
        if chunks is None:
            request = GenerationRequest(
                messages=(
                    ChatMessage(role="system", content=local_system),
                    ChatMessage(role="user", content=message),
                ),
                max_tokens=options.local_max_tokens,
                temperature=options.temperature,
                seed=options.seed,
            )
            result = await state.recorder.generate_one("local", "chat", request, round=record.round)
            if result.finish_reason == "length":
                state.warn(f"round {record.round}: the local reply was cut off")
            record.local_outputs.append(LocalOutput(answer=result.text.strip()))
            return result.text.strip() or NOTHING_FOUND
        requests = [
            GenerationRequest.from_prompt(
                prompts.render(
                    "minion_local_chunk",
                    source=chunk_source(chunk),
                    chunk=neutralize(chunk.text),
                    message=message,
                ),
                max_tokens=options.local_max_tokens,
                temperature=options.temperature,
                seed=options.seed,
            )
            for chunk in chunks
        ]
        results = await self.local_batches(state, "chat", requests, round=record.round)
        parts = []
        for chunk, chunk_result in zip(chunks, results, strict=True):
            text = "" if chunk_result is None else chunk_result.text.strip()
            if not text or is_empty_answer(text):
                continue
            record.local_outputs.append(LocalOutput(chunk_id=chunk.id, answer=text))
            parts.append(f"[{chunk_source(chunk)}] {text}")
        notes = "\n".join(parts)
        if not notes:
            return NOTHING_FOUND
        if self.local.count_tokens(notes) <= options.local_max_tokens:
            return notes
        # The chunk answers together are longer than one local reply may be: the local model
        # merges them, so the remote still reads one reply of at most local_max_tokens.
        return await self._combine(state, record, notes, message)

    async def _combine(self, state: RunState, record: RoundRecord, notes: str, message: str) -> str:
        options = state.options
        frame = prompts.render("minion_local_combine", notes="", message=message)
        room = self.local.context_window - options.local_max_tokens - CHAT_TEMPLATE_MARGIN
        room -= self.local.count_tokens(frame)
        tokens = self.local.count_tokens(notes)
        if tokens > room:
            state.warn(
                f"round {record.round}: chunk answers of {tokens} tokens were clipped "
                f"to {room} to be combined"
            )
            while tokens > room > 0:
                notes = notes[: int(len(notes) * room / tokens * 0.95)]
                tokens = self.local.count_tokens(notes)
        request = GenerationRequest.from_prompt(
            prompts.render("minion_local_combine", notes=notes, message=message),
            max_tokens=options.local_max_tokens,
            temperature=options.temperature,
            seed=options.seed,
        )
        result = await state.recorder.generate_one("local", "combine", request, round=record.round)
        combined = result.text.strip()
        if not combined or is_empty_answer(combined):
            return NOTHING_FOUND
        # Its context is the whole documents (no chunk id), like an unchunked reply.
        record.local_outputs.append(LocalOutput(answer=combined))
        return combined

    def _clip_message(self, state: RunState, message: str) -> str:
        tokens = self.local.count_tokens(message)
        if tokens <= MESSAGE_TOKENS:
            return message
        state.warn(f"a remote message of {tokens} tokens was clipped to {MESSAGE_TOKENS}")
        while tokens > MESSAGE_TOKENS:
            message = message[: int(len(message) * MESSAGE_TOKENS / tokens * 0.95)]
            tokens = self.local.count_tokens(message)
        return message

    @staticmethod
    def _stats_line(state: RunState, chunks: list[Chunk] | None) -> str:
        names = ", ".join(f'"{d.name}" ({len(d.pages)} pages)' for d in state.task.documents[:20])
        more = (
            f" and {len(state.task.documents) - 20} more" if len(state.task.documents) > 20 else ""
        )
        return f"The colleague holds {len(state.task.documents)} documents: {names}{more}."

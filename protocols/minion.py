"""Minion: a chat between the remote (which never sees the documents) and the local model (which
reads them). Each round the local model answers the remote's message, then the remote decides in
one JSON call to answer or to ask again; the last round only accepts an answer."""

from __future__ import annotations

import json

from engines.base import ChatMessage, Engine, GenerationRequest, Role
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
    summarize_errors,
)
from protocols.chunking import Chunk
from protocols.fallback import answer_without_rounds
from protocols.plans import ChatDecision, FinalChatDecision, is_empty_answer
from protocols.result import Crossing, LocalOutput, RemoteMessage, RoundRecord
from protocols.structured import ask_json, salvage_answer
from protocols.task import Options

# Room kept in every local prompt for the remote's message; longer messages are clipped to it.
MESSAGE_TOKENS = 512
NOTHING_FOUND = "NONE: nothing in the documents answers this."


# The remote's opening message is a question for the colleague: short, and re-sent every round.
OPENING_TOKENS = 256
# A request_more decision stays in the conversation (re-sent every later round) with its message
# clipped to this many remote tokens.
DECISION_MESSAGE_TOKENS = 128
# The shortest local reply worth a round.
MIN_REPLY_TOKENS = 32


class Minion(Protocol):
    """The remote opens with a question; each round the local model replies and the remote
    decides (one JSON call over the whole conversation so far).

    The remote budget sizes the rounds: the local reply (what each decision re-reads) is bounded
    so that ``max_rounds`` rounds fit; a round's decision is the last when the budget could not
    pay for another; when not even one round fits, it answers without rounds.
    """

    name = "minion"
    remote_budget = True
    sends_compressions = True

    @classmethod
    def max_remote_calls(cls, options: Options) -> int:
        # The opening message (when the remote opens), then one JSON decision a round, each
        # retried when invalid.
        opening = 1 if options.remote_opens else 0
        return opening + options.max_rounds * (1 + options.json_retries)

    async def _run(self, state: RunState) -> str:
        options, guard = state.options, state.guard
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
        context = {
            "question": task.question,
            "metadata": render_metadata(task.metadata, task.documents),
            "stats": self._stats_line(state, chunks),
        }
        conversation = [ChatMessage(role="system", content=prompts.render("minion_remote_system"))]
        # Without an opening call the first decision's user turn also carries the question: one
        # user turn, since some chat templates refuse two in a row.
        preamble = ""
        opening_tokens = opening_cost = 0
        if options.remote_opens:
            conversation.append(
                ChatMessage(role="user", content=prompts.render("minion_remote_start", **context))
            )
            opening_tokens = min(options.remote_max_tokens, OPENING_TOKENS)
            opening_cost = self.remote.count_prompt_tokens(conversation)
            opened = [*conversation, self._placeholder("assistant")]
        else:
            preamble = prompts.render("minion_remote_asked", **context) + "\n\n"
            opened = conversation
        # A decision's prompt: the conversation, the opening, the decide frame, the reply.
        first_decide = (
            self.remote.count_prompt_tokens([*opened, self._decide_message("", True, preamble)])
            + opening_tokens
        )
        step = self._round_step(opened)
        reply_tokens = self._reply_tokens(state, opening_cost, first_decide, step)
        if not guard.affords(opening_cost + first_decide + reply_tokens):
            return await answer_without_rounds(
                self, state, opening_cost + first_decide + reply_tokens
            )
        message_purpose = ""
        message = task.question
        if options.remote_opens:
            opening = await state.recorder.generate_one(
                "remote",
                "chat",
                GenerationRequest(messages=tuple(conversation), max_tokens=opening_tokens),
                round=1,
            )
            message = opening.text.strip()
            if not message:
                state.warn("the remote's opening message was empty; the question was sent instead")
                message = task.question
            conversation.append(ChatMessage(role="assistant", content=message))
            message_purpose = "chat"
        reply = ""
        for number in range(1, options.max_rounds + 1):
            bound = (
                self.remote.count_prompt_tokens(
                    [*conversation, self._decide_message("", True, preamble)]
                )
                + reply_tokens
            )
            if not guard.affords(bound):  # only when retries took the room of this round
                return self._answer_with_reply(state, number, reply)
            record = state.new_round(number)
            last = guard.last_round(
                number, options.max_rounds, bound + bound + step + reply_tokens, "decision"
            )
            await state.events.emit("round_started", {"round": number, "last": last})
            if message_purpose:  # not the user's question, which the remote did not write
                record.remote_messages.append(RemoteMessage(purpose=message_purpose, text=message))
            reply = await self._local_reply(
                state, record, local_system, chunks, message, reply_tokens
            )
            reply = self._clip(self.remote, reply, reply_tokens, state, "the local reply")
            state.compressions.append(reply)
            record.crossed = [
                Crossing(chunk_id=output.chunk_id, text=output.answer, query=message)
                for output in record.local_outputs
                if output.answer and output.answer.strip() and output.answer in reply
            ]
            conversation.append(self._decide_message(reply, last, preamble))
            preamble = ""
            decided = await ask_json(
                state.recorder,
                "remote",
                "decide",
                conversation,
                FinalChatDecision if last else ChatDecision,
                round=number,
                max_tokens=options.remote_max_tokens,
                retries=options.json_retries,
                reserve=0 if last else bound + step + reply_tokens,
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
            if decided.value.decision == "final_answer":
                return decided.value.answer or ""
            message = self._clip(
                self.remote,
                decided.value.message or task.question,
                DECISION_MESSAGE_TOKENS,
                state,
                "a remote message",
            )
            # What the remote said, as the rest of the conversation will show it: compact, and
            # bounded, since every later decision re-reads it.
            conversation.append(
                ChatMessage(
                    role="assistant",
                    content=json.dumps({"decision": "request_more", "message": message}),
                )
            )
            message_purpose = "decide"
        raise AssertionError("unreachable: the last round only accepts a final answer")

    def _round_step(self, conversation: list[ChatMessage]) -> int:
        """What one more round adds to a decision's prompt, less the local reply: the earlier
        decision (clipped) and the decide frame."""
        added = [self._placeholder("assistant"), self._decide_message("", True)]
        return (
            self.remote.count_prompt_tokens([*conversation, *added])
            - self.remote.count_prompt_tokens(conversation)
            + DECISION_MESSAGE_TOKENS
            + 16  # the decision's JSON around its message
        )

    @staticmethod
    def _reply_tokens(state: RunState, opening_cost: int, first_decide: int, step: int) -> int:
        """The local reply's bound: sized so that ``max_rounds`` rounds fit the budget (round n
        re-reads n replies), between ``MIN_REPLY_TOKENS`` and ``local_max_tokens``."""
        rounds = state.options.max_rounds
        left = state.guard.left
        if left == float("inf"):
            return state.options.local_max_tokens
        # opening + sum over n of (first_decide + (n-1) * step + n * reply) <= left
        spare = left - opening_cost - rounds * first_decide - rounds * (rounds - 1) // 2 * step
        share = int(spare // (rounds * (rounds + 1) // 2))
        return max(MIN_REPLY_TOKENS, min(state.options.local_max_tokens, share))

    @staticmethod
    def _placeholder(role: Role) -> ChatMessage:
        return ChatMessage(role=role, content="")

    @staticmethod
    def _decide_message(reply: str, last: bool, preamble: str = "") -> ChatMessage:
        note = (
            "This is the last round: give the final answer now, from what you know."
            if last
            else "Answer if you can; otherwise ask the colleague one more specific question."
        )
        return ChatMessage(
            role="user",
            content=preamble + prompts.render("minion_remote_decide", reply=reply, round_note=note),
        )

    @staticmethod
    def _answer_with_reply(state: RunState, number: int, reply: str) -> str:
        detail = "the remote budget cannot pay for the next decision"
        state.guard.fall_back(number, "answer_with_local_reply", detail)
        state.warn(f"round {number}: {detail}; the colleague's last reply is the answer")
        return reply or NOTHING_FOUND

    @staticmethod
    def _clip(engine: Engine, text: str, limit: int, state: RunState, what: str) -> str:
        tokens = engine.count_tokens(text)
        if tokens <= limit:
            return text
        state.warn(f"{what} of {tokens} tokens was clipped to {limit}")
        while tokens > limit:
            text = text[: int(len(text) * limit / tokens * 0.95)]
            tokens = engine.count_tokens(text)
        return text

    async def _local_reply(
        self,
        state: RunState,
        record: RoundRecord,
        local_system: str,
        chunks: list[Chunk] | None,
        message: str,
        reply_tokens: int,
    ) -> str:
        options = state.options
        message = self._clip(self.local, message, MESSAGE_TOKENS, state, "a remote message")
        if chunks is None:
            request = GenerationRequest(
                messages=(
                    ChatMessage(role="system", content=local_system),
                    ChatMessage(role="user", content=message),
                ),
                max_tokens=reply_tokens,
                temperature=options.temperature,
                seed=options.seed,
            )
            (outcome,) = await self.local_batches(state, "chat", [request], round=record.round)
            if isinstance(outcome, Exception):
                raise ProtocolFailed(f"round {record.round}: the local model failed: {outcome}")
            result = outcome
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
                max_tokens=reply_tokens,
                temperature=options.temperature,
                seed=options.seed,
            )
            for chunk in chunks
        ]
        results = await self.local_batches(state, "chat", requests, round=record.round)
        failures = [outcome for outcome in results if isinstance(outcome, Exception)]
        if failures and len(failures) == len(results):
            raise ProtocolFailed(
                f"round {record.round}: the local model failed on every chunk: "
                f"{summarize_errors(failures)}"
            )
        parts = []
        for chunk, chunk_result in zip(chunks, results, strict=True):
            text = "" if isinstance(chunk_result, Exception) else chunk_result.text.strip()
            if not text or is_empty_answer(text):
                continue
            record.local_outputs.append(LocalOutput(chunk_id=chunk.id, answer=text))
            parts.append(f"[{chunk_source(chunk)}] {text}")
        notes = "\n".join(parts)
        if not notes:
            return NOTHING_FOUND
        if self.local.count_tokens(notes) <= reply_tokens:
            return notes
        # The chunk answers together are longer than one local reply may be: the local model
        # merges them, so the remote still reads one reply of at most local_max_tokens.
        return await self._combine(state, record, notes, message, reply_tokens)

    async def _combine(
        self, state: RunState, record: RoundRecord, notes: str, message: str, reply_tokens: int
    ) -> str:
        options = state.options
        frame = prompts.render("minion_local_combine", notes="", message=message)
        room = self.local.context_window - reply_tokens - CHAT_TEMPLATE_MARGIN
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
            max_tokens=reply_tokens,
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

    @staticmethod
    def _stats_line(state: RunState, chunks: list[Chunk] | None) -> str:
        names = ", ".join(f'"{d.name}" ({len(d.pages)} pages)' for d in state.task.documents[:20])
        more = (
            f" and {len(state.task.documents) - 20} more" if len(state.task.documents) > 20 else ""
        )
        return f"The colleague holds {len(state.task.documents)} documents: {names}{more}."

"""Remote-only baseline: the remote model reads every document. The accuracy ceiling and the
denominator of every saving."""

from __future__ import annotations

from engines.base import GenerationRequest
from protocols.base import ContextOverflowError, Protocol, RunState, remote_only_prompt
from protocols.result import RemoteMessage
from protocols.task import Options, Task


class RemoteOnly(Protocol):
    name = "remote_only"
    sends_documents = True
    answer_limit_option = "remote_max_tokens"

    @classmethod
    def max_remote_calls(cls, options: Options) -> int:
        return 1

    @classmethod
    def max_remote_prompt_tokens(
        cls, options: Options, baseline_tokens: int | None, context_window: int
    ) -> int:
        # Its one prompt is the baseline's, by definition.
        if baseline_tokens is None:
            return context_window
        return min(baseline_tokens, context_window)

    @staticmethod
    def prompt(task: Task) -> str:
        return remote_only_prompt(task)

    async def _run(self, state: RunState) -> str:
        prompt = self.prompt(state.task)
        max_tokens = state.options.remote_max_tokens
        if state.baseline.exceeds_context:  # counted once, before the run: the same prompt
            raise ContextOverflowError(
                f"documents: too long for the remote model's context window "
                f"({self.remote.context_window} tokens with {max_tokens} reserved for the "
                "answer); use minion or minions, which never send the documents to the remote"
            )
        record = state.new_round(1)
        await state.events.emit("round_started", {"round": 1})
        result = await state.recorder.generate_one(
            "remote",
            "answer",
            GenerationRequest.from_prompt(prompt, max_tokens=max_tokens),
            round=1,
        )
        if result.finish_reason == "length":
            state.warn(f"the remote answer was cut off at {max_tokens} tokens")
        record.remote_messages.append(RemoteMessage(purpose="answer", text=result.text))
        record.decision = "final_answer"
        return result.text

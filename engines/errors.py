"""Errors an engine raises. The gateway maps each class to one HTTP status in one table."""

from __future__ import annotations


class EngineError(RuntimeError):
    """An engine could not answer. The message is safe to show to a user."""

    # Seconds the failed request had waited in the engine's client-side queue before it was sent
    # (set by engines with such a queue): a run's queue wait counts its failed requests too.
    queued_s: float = 0.0


class EngineConfigError(ValueError):
    """An engine was configured wrongly (unknown model, bad URL). ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class EngineCapabilityError(EngineError):
    """The engine cannot do what was asked (for example ``score`` over a plain chat API)."""


class EngineTimeoutError(EngineError):
    """The engine did not answer in time."""


class RemoteAPIError(EngineError):
    """An OpenAI-compatible server answered with an error that retrying will not fix."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

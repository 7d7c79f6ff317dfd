"""Mutual information I(X; Z) of compressions over explicit contexts, scored by the gateway's
local engine (``analysis.engine_scorer.EngineScorer``). See docs/mutual_information.md."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from analysis.engine_scorer import EngineScorer
from analysis.mutual_information import (
    DEFAULT_NEGATIVE_QUERY,
    Compression,
    MIEstimate,
    NegativeQuery,
    estimate_mutual_information,
)
from engines.base import Engine
from engines.errors import EngineCapabilityError
from service.errors import InvalidRequest, PayloadTooLarge

MAX_CONTEXTS = 64
MAX_COMPRESSIONS = 256
MAX_CONTEXT_CHARS = 200_000  # one context
MAX_TOTAL_CONTEXT_CHARS = 2_000_000  # all contexts together
MAX_TEXT_CHARS = 16_000  # one query or compression
MAX_CELLS = 4096  # compressions x contexts, each one scored continuation

Text = Annotated[str, Field(min_length=1)]


class MIRequest(BaseModel):
    """N contexts, one query per context (or one for all), and compressions that each name the
    context they were written from. The contexts are the estimate's whole reference set."""

    model_config = ConfigDict(extra="forbid")

    contexts: list[Text] = Field(min_length=2, max_length=MAX_CONTEXTS)
    queries: Text | list[Text] = Field(description="one query for all contexts, or one each")
    compressions: list[Compression] = Field(min_length=1, max_length=MAX_COMPRESSIONS)
    negative_query: NegativeQuery = DEFAULT_NEGATIVE_QUERY


def check_sizes(body: MIRequest) -> None:
    """413 for texts or work over the limits (counts are checked by the model: 422)."""
    for index, context in enumerate(body.contexts):
        if len(context) > MAX_CONTEXT_CHARS:
            raise PayloadTooLarge(
                f"contexts[{index}]: over {MAX_CONTEXT_CHARS} characters", param="contexts"
            )
    if sum(len(context) for context in body.contexts) > MAX_TOTAL_CONTEXT_CHARS:
        raise PayloadTooLarge(
            f"contexts: over {MAX_TOTAL_CONTEXT_CHARS} characters together", param="contexts"
        )
    queries = [body.queries] if isinstance(body.queries, str) else body.queries
    if any(len(query) > MAX_TEXT_CHARS for query in queries):
        raise PayloadTooLarge(f"queries: over {MAX_TEXT_CHARS} characters", param="queries")
    if any(len(c.text) > MAX_TEXT_CHARS for c in body.compressions):
        raise PayloadTooLarge(
            f"compressions: a text is over {MAX_TEXT_CHARS} characters", param="compressions"
        )
    cells = len(body.compressions) * len(body.contexts)
    if cells > MAX_CELLS:
        raise PayloadTooLarge(
            f"compressions: {cells} compression x context scores asked for; at most {MAX_CELLS}",
            param="compressions",
        )


def _param_of(message: str) -> str | None:
    """``contexts[1]: ...`` -> ``contexts``: the field an estimator ValueError names."""
    match = re.match(r"^([a-z_]+)", message)
    return match.group(1) if match else None


async def estimate(engine: Engine, body: MIRequest) -> MIEstimate:
    check_sizes(body)
    if not engine.supports_score:
        raise EngineCapabilityError(f"the local engine ({engine.kind}) cannot score text")
    scorer = EngineScorer(engine)
    try:
        return await estimate_mutual_information(
            scorer,
            body.contexts,
            body.compressions,
            queries=body.queries,
            negative_query=body.negative_query,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=_param_of(str(exc))) from exc

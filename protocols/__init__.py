"""Local-remote protocols as transport-free library code.

Each protocol is a class constructed with ``(local: Engine, remote: Engine, prices: PriceTable,
**config)`` (config: any ``protocols.task.Options`` field) with one method,
``await protocol.run(task, events=None) -> Result``:

* ``remote_only``: the remote reads everything (the baseline for accuracy and cost);
* ``local_only``: the local model alone, chunk by chunk when the documents are long;
* ``minion``: a chat; the remote asks, the local model answers from the documents;
* ``minions``: the remote plans jobs over chunks, the local model runs them as one batch.

Limits: 16 MiB of text per document, 32 MiB per task, 64 documents (see ``protocols.task``);
at most ``max_jobs_per_round`` local jobs per MinionS round.
"""

from __future__ import annotations

from typing import Any

from engines.base import Engine
from engines.prices import PriceTable
from protocols.base import ContextOverflowError, Protocol, task_baseline
from protocols.local_only import LocalOnly
from protocols.minion import Minion
from protocols.minions import MinionS
from protocols.remote_only import RemoteOnly
from protocols.result import ProtocolName, Result
from protocols.task import Document, Options, Task

PROTOCOLS: dict[str, type[Protocol]] = {
    "minion": Minion,
    "minions": MinionS,
    "local_only": LocalOnly,
    "remote_only": RemoteOnly,
}


def protocol_class(name: str) -> type[Protocol]:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"protocol: unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None


def build_protocol(
    name: str, local: Engine, remote: Engine, prices: PriceTable, **config: Any
) -> Protocol:
    return protocol_class(name)(local, remote, prices, **config)


__all__ = [
    "PROTOCOLS",
    "ContextOverflowError",
    "Document",
    "LocalOnly",
    "Minion",
    "MinionS",
    "Options",
    "Protocol",
    "ProtocolName",
    "RemoteOnly",
    "Result",
    "Task",
    "build_protocol",
    "protocol_class",
    "task_baseline",
]

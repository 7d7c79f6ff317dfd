"""Privacy mode in the service: which mode a task runs in, and the detector, checked at start.

A task's own ``options.privacy`` wins; else its key's default (set by an admin); else
``MGW_PRIVACY_DEFAULT``. The resolved mode is written into the task's options, so its record
says which mode it ran in.
"""

from __future__ import annotations

import logging

import anyio.to_thread

from protocols.privacy.config import PrivacyConfig
from service.settings import Settings
from service.store import ApiKey

logger = logging.getLogger(__name__)


def default_privacy(key: ApiKey, settings: Settings) -> str:
    return key.privacy or settings.privacy_default


def with_privacy(options: dict[str, object], key: ApiKey, settings: Settings) -> dict[str, object]:
    """``options`` (a task's protocol options) with ``privacy`` set when the task left it out."""
    options.setdefault("privacy", default_privacy(key, settings))
    return options


async def prepare_detector(settings: Settings) -> PrivacyConfig:
    """The privacy configuration. When the gateway pseudonymizes by default or has a privacy
    config, the detector is built now (seconds: a spaCy pipeline), so a missing pipeline is a
    startup error and the first task does not wait for it."""
    config = settings.privacy()
    if settings.privacy_default == "pseudonymize" or settings.privacy_config is not None:
        from protocols.privacy.detector import shared_detector

        detector = await anyio.to_thread.run_sync(shared_detector, config)
        logger.info("privacy mode ready: %s", detector.describe())
    return config

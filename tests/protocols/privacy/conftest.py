"""Detectors for the privacy tests: built once per session (a spaCy pipeline loads in seconds)."""

from __future__ import annotations

import pytest

from protocols.privacy.config import PrivacyConfig
from protocols.privacy.detector import Detector, shared_detector


@pytest.fixture(scope="session")
def pattern_detector() -> Detector:
    """Patterns only: fast, and what runs where no spaCy pipeline is installed."""
    return shared_detector(PrivacyConfig(ner_model="none"))


@pytest.fixture(scope="session")
def ner_detector() -> Detector:
    """With the spaCy English pipeline the test extra installs (names, places, organizations)."""
    detector = shared_detector(PrivacyConfig())
    assert detector.ner_model is not None, detector.warning
    return detector

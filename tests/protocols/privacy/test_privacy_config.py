"""A wrong privacy configuration is a clear error naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.privacy.config import PrivacyConfig, PrivacyConfigError
from protocols.privacy.detector import Detector


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "privacy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_custom_recognizer_adds_an_entity_type_with_its_label(tmp_path: Path) -> None:
    config = PrivacyConfig.load(
        write(
            tmp_path,
            'entities = ["MEDICAL_RECORD_NUMBER", "EMAIL_ADDRESS"]\n'
            "[[recognizers]]\n"
            'entity = "MEDICAL_RECORD_NUMBER"\nlabel = "MRN"\nnormalize = "digits"\n'
            "patterns = ['\\bMRN[:#]?\\s*(?P<value>\\d{6,10})\\b']\n",
        )
    )
    types = config.entity_types()
    assert list(types) == ["MEDICAL_RECORD_NUMBER", "EMAIL_ADDRESS"]
    assert types["MEDICAL_RECORD_NUMBER"].label == "MRN"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('entities = ["PHONE"]', r"entities\[0\]: unknown entity type 'PHONE'; known types: "),
        (
            "[[recognizers]]\nentity = \"MRN\"\npatterns = ['MRN(\\d+']",
            r"recognizers.0.patterns: pattern 0 is not a valid regular expression: "
            r"missing \), unterminated subpattern",
        ),
        (
            "[[recognizers]]\nentity = \"MRN\"\npatterns = ['\\d*']",
            r"recognizers.0.patterns: pattern 0 matches the empty string",
        ),
        (
            "[[recognizers]]\nentity = \"mrn\"\npatterns = ['x']",
            r"recognizers.0.entity: 'mrn' is not an entity name",
        ),
        (
            "[[recognizers]]\nentity = \"PERSON\"\npatterns = ['x']",
            r"entity 'PERSON' is defined twice",
        ),
        ('phone_regions = ["XX"]', r"phone_regions\[0\]: unknown region 'XX'"),
        ("score_threshold = 2", r"score_threshold: Input should be less than or equal to 1"),
        ("nonsense = 1", r"nonsense: Extra inputs are not permitted"),
        ("entities = [", r"not valid TOML"),
    ],
)
def test_bad_config_is_an_error_naming_the_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PrivacyConfigError, match=rf"^privacy config {path}: .*{message}"):
        PrivacyConfig.load(path)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PrivacyConfigError, match="cannot be read: No such file"):
        PrivacyConfig.load(tmp_path / "absent.toml")


def test_a_named_pipeline_that_is_not_installed_is_an_error_with_the_install_hint() -> None:
    with pytest.raises(PrivacyConfigError, match="ner_model: the spaCy pipeline 'en_nothing_here'"):
        Detector(PrivacyConfig(ner_model="en_nothing_here"))

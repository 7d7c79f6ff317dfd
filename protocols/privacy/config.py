"""The detector's configuration: which entity types to look for, custom recognizers (medical
record numbers, internal ids), words never to replace, and the spaCy pipeline to use.

Read from a TOML file (``MGW_PRIVACY_CONFIG``); every mistake is a ``PrivacyConfigError`` that
names the file and the field, raised when the gateway starts, not when a task first runs::

    entities = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "MEDICAL_RECORD_NUMBER"]
    allow = ["ACME"]               # never replaced
    ner_model = "en_core_web_sm"   # "none": patterns only

    [[recognizers]]
    entity = "MEDICAL_RECORD_NUMBER"
    label = "MRN"                  # placeholders read <MRN_1>
    patterns = ['\\bMRN[:#]?\\s*(?P<value>\\d{6,10})\\b']
    normalize = "digits"           # "text" (case-folded, the default), "digits" or "alnum"
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.privacy.entities import BUILTIN, EntityType, alnum_upper, digits_only, folded

_ENTITY_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
_NORMALIZERS = {"text": folded, "digits": digits_only, "alnum": alnum_upper}


class PrivacyConfigError(ValueError):
    """The privacy configuration is wrong; the message names the file and the field."""


class CustomRecognizer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(description="entity type name, e.g. MEDICAL_RECORD_NUMBER")
    label: str | None = Field(default=None, description="placeholder label; the entity name")
    patterns: tuple[str, ...] = Field(
        min_length=1,
        max_length=32,
        description="regular expressions; a group named 'value' marks the part to replace",
    )
    normalize: Literal["text", "digits", "alnum"] = "text"

    @field_validator("entity", "label")
    @classmethod
    def _upper_snake(cls, name: str | None) -> str | None:
        if name is not None and not _ENTITY_NAME.match(name):
            raise ValueError(
                f"{name!r} is not an entity name: use 2-40 of A-Z, 0-9 and _, starting with a "
                "letter"
            )
        return name

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(patterns):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {index} is not a valid regular expression: {exc}"
                ) from None
            if compiled.match(""):
                raise ValueError(f"pattern {index} matches the empty string")
        return patterns

    def entity_type(self) -> EntityType:
        return EntityType(
            self.entity, self.label or self.entity, "pattern", _NORMALIZERS[self.normalize]
        )


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entities: tuple[str, ...] | None = Field(
        default=None, description="entity types to detect; all built-in and custom ones if unset"
    )
    recognizers: tuple[CustomRecognizer, ...] = ()
    allow: tuple[str, ...] = Field(default=(), description="words never replaced")
    phone_regions: tuple[str, ...] = Field(
        default=("US", "GB"),
        min_length=1,
        description="regions whose phone-number formats are matched (each costs time per text)",
    )
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    ner_model: str | None = Field(
        default=None,
        description="spaCy pipeline package for PERSON/LOCATION/ORGANIZATION; 'none' for "
        "patterns only; unset: the first installed of the known English pipelines",
    )

    @field_validator("phone_regions")
    @classmethod
    def _regions_known(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        import phonenumbers

        for index, region in enumerate(regions):
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"phone_regions[{index}]: unknown region {region!r}")
        return regions

    @model_validator(mode="after")
    def _entities_known(self) -> PrivacyConfig:
        custom = [recognizer.entity for recognizer in self.recognizers]
        clash = sorted(set(custom) & set(BUILTIN)) or sorted(
            {name for name in custom if custom.count(name) > 1}
        )
        if clash:
            raise ValueError(
                f"recognizers: entity {clash[0]!r} is defined twice (built-in or repeated)"
            )
        known = set(BUILTIN) | set(custom)
        for index, name in enumerate(self.entities or ()):
            if name not in known:
                raise ValueError(
                    f"entities[{index}]: unknown entity type {name!r}; known types: "
                    f"{', '.join(sorted(known))}"
                )
        labels = [entity.label for entity in self.entity_types().values()]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"recognizers: placeholder label {repeated[0]!r} is used twice")
        return self

    def entity_types(self) -> dict[str, EntityType]:
        """Every entity type this configuration detects, by name."""
        every = dict(BUILTIN) | {
            recognizer.entity: recognizer.entity_type() for recognizer in self.recognizers
        }
        if self.entities is None:
            return every
        return {name: every[name] for name in self.entities}

    @classmethod
    def load(cls, path: Path | str | None) -> PrivacyConfig:
        """The configuration in ``path`` (TOML), or the defaults when ``path`` is None."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PrivacyConfigError(
                f"privacy config {path}: cannot be read: {exc.strerror}"
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PrivacyConfigError(f"privacy config {path}: not valid TOML: {exc}") from None
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: object, *, source: str = "<inline>") -> PrivacyConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            prefix = f"{where}: " if where and not message.startswith(where) else ""
            raise PrivacyConfigError(f"privacy config {source}: {prefix}{message}") from None

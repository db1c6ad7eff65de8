"""Harbor 0.25.0 reference JSON Schemas: where they are, and validating against them.

The schemas live outside the repository, in ``<repo>/../shared/reference/harbor-0.25.0``
(CI clones the repository with ``shared/`` beside it); ``EVALRUN_HARBOR_REFERENCE`` overrides
the location. Tests that need them call :func:`require_reference`: without the schemas they
are skipped on a developer machine but FAIL when ``CI`` is set, so a CI job can never pass by
silently validating nothing.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pytest_evalrun.store.pier import HARBOR_VERSION  # the Harbor whose layout we write

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_NAMES = ("JobConfig", "JobResult", "TrialConfig", "TrialResult", "Trajectory")


def reference_candidates() -> list[Path]:
    candidates = []
    override = os.environ.get("EVALRUN_HARBOR_REFERENCE", "").strip()
    if override:
        candidates.append(Path(override))
    candidates.append(REPO_ROOT.parent / "shared" / "reference" / f"harbor-{HARBOR_VERSION}")
    return candidates


def find_reference() -> Path | None:
    """The directory holding every schema this module validates against, or None."""
    for path in reference_candidates():
        if all((path / f"{name}.schema.json").is_file() for name in SCHEMA_NAMES):
            return path
    return None


def require_reference() -> Path:
    """The reference directory; skip without it locally, fail without it under ``CI``."""
    path = find_reference()
    if path is None:
        where = ", ".join(str(p) for p in reference_candidates())
        message = f"Harbor {HARBOR_VERSION} reference schemas not found (looked in: {where})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so this is an error, not a skip", pytrace=False)
        pytest.skip(message)
    return path


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _is_datetime(value: object) -> bool:
    """RFC 3339 with an offset, and a real date (what we write; pydantic accepts it)."""
    if not isinstance(value, str):
        return True
    return bool(_RFC3339.match(value)) and _is_iso_datetime(value)


def _is_iso_datetime(value: object) -> bool:
    """What pydantic accepts: ISO 8601, with or without an offset (Harbor writes naive ones)."""
    if not isinstance(value, str):
        return True
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _closed(schema: Any) -> Any:
    """The schema with every object that lists ``properties`` closed to other properties.

    Harbor's pydantic models ignore unknown fields, so the published schemas accept them; a
    field we misspell would pass unnoticed. Closing the objects catches that.
    """
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema


@cache
def _validator(
    reference: Path, name: str, closed: bool, strict_datetime: bool
) -> jsonschema.Draft202012Validator:
    schema = json.loads((reference / f"{name}.schema.json").read_text(encoding="utf-8"))
    if closed:
        schema = _closed(copy.deepcopy(schema))
    registry: Registry[Any] = Registry().with_resource(
        "urn:harbor", Resource.from_contents(schema, default_specification=DRAFT202012)
    )
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("uuid")(_is_uuid)
    checker.checks("date-time")(_is_datetime if strict_datetime else _is_iso_datetime)
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=checker)


def schema_errors(
    name: str, instance: Any, *, closed: bool = True, strict_datetime: bool = True
) -> list[str]:
    """Every error of ``instance`` against Harbor's ``<name>.schema.json`` (Draft 2020-12).

    ``closed``: objects accept no property the schema does not list; ``strict_datetime``:
    datetimes are RFC 3339 with an offset (what we write), else any ISO 8601 (what Harbor
    writes and pydantic accepts).
    """
    validator = _validator(require_reference(), name, closed, strict_datetime)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{name} {list(e.absolute_path)}: {e.message}" for e in errors]


def validate(
    name: str,
    instance: Any,
    *,
    closed: bool = True,
    strict_datetime: bool = True,
    where: object = "",
) -> None:
    errors = schema_errors(name, instance, closed=closed, strict_datetime=strict_datetime)
    assert not errors, f"{where}: " + "\n".join(errors[:10])

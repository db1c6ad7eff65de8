from __future__ import annotations

import hashlib
import random
import re

import pytest

from pytest_evalrun.experiment.names import slugify, validate_name


@pytest.mark.parametrize("name", ["fix-build", "Fix build: step 1", "café ☕", "a.b", "x" * 500])
def test_valid_names(name: str) -> None:
    assert validate_name(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (".", "'.'"),
        ("..", "'..'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("a\nb", "control"),
        ("tab\there", "control"),
        ("nul\0", "control"),
        (3, "string"),
        (None, "string"),
    ],
)
def test_invalid_names(name: object, problem: str) -> None:
    message = validate_name(name)
    assert message is not None
    assert problem in message


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("fix-build", "fix-build"),
        ("Fix build: step 1", "Fix-build-step-1"),
        ("café au lait", "café-au-lait"),
        ("a [b] c", "a-b-c"),
        ("  --..spaced..--  ", "spaced"),
        ("v1.2_final", "v1.2_final"),
        ("CON", "CON_"),
        ("nul.txt", "nul_.txt"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slug_of_punctuation_only_name_is_a_hash() -> None:
    sha = hashlib.sha1(b"!!!").hexdigest()[:8]
    assert slugify("!!!") == f"x-{sha}"
    assert slugify("...") != slugify("!!!")


def test_long_slug_is_capped_with_a_hash() -> None:
    name = "a" * 150
    slug = slugify(name)
    assert len(slug) == 100
    assert slug == "a" * 91 + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    assert slugify("a" * 100) == "a" * 100
    assert slugify("a" * 149 + "b") != slug


def test_slug_is_safe_for_paths_node_ids_and_k() -> None:
    rng = random.Random(1234)
    alphabet = "aZ9_-. /\\:[]()*?\"'<>|\t\n\0é☕\U0001d518" + "".join(
        chr(c) for c in range(0x80, 0x100)
    )
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        slug = slugify(name)
        assert 1 <= len(slug) <= 100
        assert not set(slug) & set("[]: /\\\t\n\0"), (name, slug)
        assert re.fullmatch(r"[\w.\-]+", slug), (name, slug)
        assert slug[0] not in "-." and slug not in (".", "..")

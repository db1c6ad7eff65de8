from __future__ import annotations

import pytest

from pytest_evalrun.secrets import Redactor, is_secret_name


@pytest.mark.parametrize(
    "name",
    ["API_TOKEN", "openai_api_key", "Secret", "DB_PASSWORD", "GOOGLE_CREDENTIALS", "AUTH_HEADER"],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["MODEL", "SKILLS", "HOME", "PATH", "prompt"])
def test_non_secret_names(name: str) -> None:
    assert not is_secret_name(name)


def test_empty_redactor_returns_input_unchanged() -> None:
    redactor = Redactor([])
    assert not redactor
    text = "x" * 100
    assert redactor.redact(text) is text
    data = {"a": ["b"]}
    assert redactor.redact_obj(data) is data
    assert redactor.redact_bytes(b"abc") == b"abc"
    assert not Redactor(["", ""])  # empty values are ignored


def test_redact_longest_first() -> None:
    redactor = Redactor(["abc", "abcdef", "abc"])
    assert redactor
    assert len(redactor) == 2
    assert redactor.redact("x abcdef y abc z") == "x *** y *** z"
    assert "abc" not in repr(redactor)


def test_short_secrets_are_still_redacted() -> None:
    assert Redactor(["7"]).redact("a7b") == "a***b"


def test_regex_metacharacters_are_literal() -> None:
    redactor = Redactor(["a.b*c", "(x|y)"])
    assert redactor.redact("a.b*c aXbc (x|y) x") == "*** aXbc *** x"


def test_redact_bytes_and_unicode() -> None:
    redactor = Redactor(["pässwörd"])
    assert redactor.redact_bytes("the pässwörd!".encode()) == b"the ***!"
    assert redactor.redact("the pässwörd!") == "the ***!"


def test_redact_obj_recurses() -> None:
    redactor = Redactor(["s3cr3t"])
    obj = {
        "env": {"TOKEN": "s3cr3t", "n": 3, "s3cr3t-key": None},
        "argv": ["run", "--token=s3cr3t"],
        "pair": ("s3cr3t", 1.5),
        "raw": b"s3cr3t",
        "ok": True,
    }
    assert redactor.redact_obj(obj) == {
        "env": {"TOKEN": "***", "n": 3, "***-key": None},
        "argv": ["run", "--token=***"],
        "pair": ("***", 1.5),
        "raw": b"***",
        "ok": True,
    }
    assert obj["env"]["TOKEN"] == "s3cr3t"  # the original is left alone


def test_big_text() -> None:
    # The time it takes: bench/bench_units.py.
    text = "lorem ipsum dolor sit amet " * 200_000  # ~5 MB
    redactor = Redactor([f"secret-value-{i}" for i in range(50)])
    assert redactor.redact(text) is text  # nothing to mask: the same object, no copy
    data = text.encode()
    assert redactor.redact_bytes(data) == data
    out = redactor.redact(text + "secret-value-7 secret-value-42")
    assert out == text + "*** ***"

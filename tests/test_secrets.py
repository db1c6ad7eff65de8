from __future__ import annotations

from pathlib import Path

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
    assert redactor.redact(text) is text
    assert redactor.redact_bytes(text.encode()) is not None
    with_secret = text + "secret-value-7 secret-value-42"
    out = redactor.redact(with_secret)
    assert out.endswith("*** ***")


# -- escaped forms, structure, files (issue 11) -------------------------------------------


def test_json_escaped_forms_are_masked() -> None:
    import json

    secret = 'Sup3r"sec\\ret'
    redactor = Redactor([secret])
    full = "".join(f"\\u{ord(c):04x}" for c in secret)
    upper = "".join(f"\\u{ord(c):04X}" for c in secret)
    mixed = "Sup3r\\u0022sec\\\\r\\u0065t"
    for text in (json.dumps(secret), json.dumps(secret, ensure_ascii=False), full, upper,
                 mixed, json.dumps({"k": secret})):
        masked = redactor.redact(text)
        assert "Sup3r" not in masked and "\\u0053" not in masked.lower(), text
        assert redactor.redact_bytes(text.encode()) == masked.encode()
    assert Redactor(["päss🔑word"]).redact(json.dumps("x päss🔑word y")) == '"x *** y"'


def test_short_secret_never_breaks_structure() -> None:
    import json

    redactor = Redactor(["a", "s3cr3t"])
    assert redactor.too_short == 1
    meta = {"status": "passed", "trial_dir": "/r/a", "message": "a s3cr3t", "data": {"a": 1}}
    masked = redactor.redact_obj(meta)
    assert masked["status"] == "passed" and masked["trial_dir"] == "/r/a"
    assert masked["message"] == "*** ***"
    assert masked["data"] == {"a": 1}  # a key: only safe-length secrets
    json.loads(json.dumps(masked))
    assert Redactor(["s3cr3t"]).redact_obj({"s3cr3t": "status"}) == {"***": "status"}


def test_weak_secret_names() -> None:
    from pytest_evalrun.secrets import weak_secret_names

    assert weak_secret_names({"A_TOKEN": "x", "B_KEY": "long enough"}) == ["A_TOKEN"]


def test_redact_tree_masks_contents_names_links_and_keeps_json_valid(tmp_path: Path) -> None:
    import json

    from pytest_evalrun.secrets import redact_tree

    secret = "hunter22"
    outside = tmp_path / "outside.txt"
    outside.write_text(f"outside {secret}\n")
    root = tmp_path / "art"
    (root / "sub").mkdir(parents=True)
    (root / "log.txt").write_text(f"pw={secret}\n")
    (root / f"dump-{secret}.txt").write_text("x\n")
    (root / "data.json").write_text(json.dumps({"status": "ok", "pw": secret, "a": "b"}))
    (root / "ev.jsonl").write_text(json.dumps({"t": "\u0068unter22"}, ensure_ascii=True) + "\n")
    (root / "bin.dat").write_bytes(b"\x00\xff" + secret.encode() + b"\x00")
    (root / "sub" / "link").symlink_to(outside)
    (root / "hard").hardlink_to(outside)
    redactor = Redactor([secret, "a"])
    assert redact_tree(root, redactor) > 0
    for path in root.rglob("*"):
        assert secret not in path.name
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path
    assert (root / "dump-***.txt").exists()
    assert json.loads((root / "data.json").read_text()) == {"status": "ok", "pw": "***", "a": "b"}
    assert json.loads((root / "ev.jsonl").read_text()) == {"t": "***"}
    assert outside.read_text() == f"outside {secret}\n"  # neither link nor hard link written
    assert (root / "sub" / "link").is_symlink()


def test_redact_file_never_follows_a_link(tmp_path: Path) -> None:
    from pytest_evalrun.secrets import redact_file

    outside = tmp_path / "outside"
    outside.write_text("hunter22")
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert not redact_file(link, Redactor(["hunter22"]))
    assert outside.read_text() == "hunter22"

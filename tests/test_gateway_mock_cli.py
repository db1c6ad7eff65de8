"""``evalrun mock-llm SCRIPT``, run as a user runs it: it serves the script's turns over the
model APIs until stopped, and a bad script is a one-line error naming the file and the turn."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

EVALRUN = shutil.which("evalrun", path=str(Path(sys.executable).parent)) or "evalrun"

SCRIPT = """\
turns:
  - tool: Write
    input: {file_path: "{cwd}/hello.txt", content: "hi"}
    usage: {input: 1200, output: 30, cache_read: 100}
  - say: "Created hello.txt."
    usage: {input: 1300, output: 12}
exhausted_status: 400
"""


def chat(url: str) -> dict[str, object]:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "go"}],
                       "tools": [{"type": "function", "function": {"name": "Write"}}]})
    request = urllib.request.Request(f"{url}/v1/chat/completions", body.encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        doc: dict[str, object] = json.loads(response.read())
    return doc


def test_mock_llm_serves_a_script_until_stopped(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([EVALRUN, "mock-llm", str(script), "--log", str(tmp_path / "log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["turns"] == 2
        assert first["env"]["ANTHROPIC_BASE_URL"] == first["url"]
        one = chat(first["url"])
        two = chat(first["url"])
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    call = one["choices"][0]["message"]["tool_calls"][0]  # type: ignore[index]
    assert call["function"]["name"] == "Write"
    assert json.loads(call["function"]["arguments"])["content"] == "hi"
    assert one["usage"]["prompt_tokens"] == 1200  # type: ignore[index]
    assert two["choices"][0]["message"]["content"] == "Created hello.txt."  # type: ignore[index]
    assert json.loads(out.strip().splitlines()[-1]) == {"served": 2, "requests": 2}
    assert len((tmp_path / "log").read_text().splitlines()) == 2


def test_a_bad_script_names_the_file_and_the_turn(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("turns:\n  - say: hi\n  - error: 200\n")
    done = subprocess.run([EVALRUN, "mock-llm", str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert f"{script}: turn 2: 'error' must be an HTTP status 400-599" in done.stderr
    assert "Traceback" not in done.stderr

"""A Harbor task's network allowlist (``[environment] network_mode = "allowlist"``,
``allowed_hosts``) enforced in its container (issue 22): a Harbor-format task of our own whose
solution fetches a page from an allowed host and one from a host the list does not name,
through the trial's egress proxy (bash's ``/dev/tcp``: the base image has no curl); its
``tests/test.sh`` gives reward 1 when the first answered and the second was refused. Run with
the oracle agent in podman, in a real pytest session with two workers: the allowed host
served one request, the other none, and the trial's network.log says why it was refused. A
variant whose own ``network: {allow:}`` names the other host reaches both (its hosts are added
to the task's, as Harbor's run-level ``extra_allowed_hosts``), so that trial fails.

Needs podman and the base image (``tests/tools/install_podman.sh``): skipped, saying so, where
they are missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_pytest
from test_podman import BASE_IMAGE, podman, trials  # noqa: F401
from test_podman_network import Server

ALLOWED = "127.0.0.2"
OTHER = "127.0.0.3"

SOLVE = r"""#!/bin/bash
# fetch URL through the trial's proxy: "NAME <first line of the answer>" in probes.txt
port=${HTTP_PROXY##*:}; port=${port%%/*}
probe() {
  out=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 7
    printf "GET %s HTTP/1.0\r\nHost: x\r\n\r\n" "$1" >&3
    head -c 400 <&3' "$port" "$2" 2>&1)
  echo "$1 $(printf '%s' "$out" | head -n 1 | tr -d '\r') $(printf '%s' "$out" | tail -n 1)" \
    >> probes.txt
}
echo "proxy ${HTTP_PROXY:-none}" > probes.txt
probe allowed "$ALLOWED_URL"
probe other "$OTHER_URL"
"""

TEST_SH = r"""#!/bin/bash
mkdir -p /logs/verifier
if grep -q '^allowed HTTP/1.0 200 OK allowed-ok' probes.txt \
   && grep -q '^other HTTP/1.[01] 403' probes.txt; then
  echo 1 > /logs/verifier/reward.txt
else
  cat probes.txt
  echo 0 > /logs/verifier/reward.txt
fi
"""


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    allowed, other = Server(ALLOWED, "allowed-ok"), Server(OTHER, "should-not-be-seen")
    try:
        yield allowed, other
    finally:
        allowed.close()
        other.close()


def harbor_task(root: Path, allowed: Server, other: Server) -> Path:
    task = root / "tasks" / "fetch-allowed"
    for sub in ("environment", "tests", "solution"):
        (task / sub).mkdir(parents=True)
    (task / "instruction.md").write_text("Fetch the allowed page.\n")
    (task / "task.toml").write_text(
        'version = "1.0"\n\n'
        "[environment]\n"
        f'docker_image = "{BASE_IMAGE}"\n'
        'network_mode = "allowlist"\n'
        f'allowed_hosts = ["{ALLOWED}", "*.example.invalid"]\n\n'
        "[agent]\ntimeout_sec = 120\n\n"
        "[verifier]\ntimeout_sec = 60\n\n"
        "[solution.env]\n"
        f'ALLOWED_URL = "http://{ALLOWED}:{allowed.port}/"\n'
        f'OTHER_URL = "http://{OTHER}:{other.port}/"\n'
    )
    (task / "solution" / "solve.sh").write_text(SOLVE)
    (task / "tests" / "test.sh").write_text(TEST_SH)
    for script in (task / "solution" / "solve.sh", task / "tests" / "test.sh"):
        script.chmod(0o755)
    return task


def test_a_harbor_allowlist_lets_the_trial_reach_its_hosts_and_no_other(
    tmp_path: Path, podman: str, servers: tuple[Server, Server]  # noqa: F811
) -> None:
    allowed, other = servers
    harbor_task(tmp_path, allowed, other)
    spec = {
        "experiment": "harbor-allowlist",
        "variants": {
            "oracle": {"agent": {"preset": "oracle"}},
            # the variant's own list adds a host to the task's: both are reached
            "extra": {"agent": {"preset": "oracle"}, "network": {"allow": [OTHER]}},
        },
        "tasks": {"harbor": "tasks"},
    }
    (tmp_path / "h.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, "-n", "2", "--eval-environment=podman")
    found = {v: meta for (v, _, _), meta in trials(tmp_path).items()}
    assert set(found) == {"oracle", "extra"}, done.stdout[-3000:]
    oracle, extra = found["oracle"], found["extra"]
    assert (oracle["status"], oracle["reward"]) == ("passed", 1.0), done.stdout[-3000:]
    assert (extra["status"], extra["reward"]) == ("failed", 0.0), done.stdout[-3000:]
    assert allowed.hits == 2 and other.hits == 1
    # what the trial had, and why each request was refused
    assert oracle["isolation"]["egress"]["allow"] == [ALLOWED, "*.example.invalid"]
    assert extra["isolation"]["egress"]["allow"] == [ALLOWED, "*.example.invalid", OTHER]
    log = [json.loads(line) for line in
           (oracle["_dir"] / "network.log").read_text().splitlines()]
    by_host = {entry["host"]: entry for entry in log}
    assert by_host[ALLOWED]["allowed"] is True
    assert by_host[OTHER]["allowed"] is False
    assert "allow list" in by_host[OTHER]["reason"] and OTHER in by_host[OTHER]["reason"]
    extra_log = [json.loads(line) for line in
                 (extra["_dir"] / "network.log").read_text().splitlines()]
    assert {e["host"]: e["allowed"] for e in extra_log} == {ALLOWED: True, OTHER: True}

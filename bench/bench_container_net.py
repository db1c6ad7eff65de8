"""The per-trial cost of a container trial's network (issue 22): the egress proxy and its
forward into the container's network namespace, against ``network: false`` (no forward).

Run: python bench/bench_container_net.py [--trials 15] [--rounds 2]
Needs podman and the base image (tests/tools/install_podman.sh).

- in-process: on one running container, ``ContainerNet.attach`` (find the container's pid,
  open its network namespace, start the egress proxy, bind its port inside) then ``close``,
  repeated; and one connection through the forward (connect + a 403 from the proxy) timed
  from inside with ``podman exec`` against the same exec without a connection;
- whole sessions: N serial trials (agent and verify ``true``) with the default network and
  with ``network: false``, alternated for ``--rounds`` rounds; seconds per trial.

Writes bench/out/container_net.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pytest_evalrun.trial.containerruntime import detect_runtime
from pytest_evalrun.trial.containers import Container, ContainerSpec
from pytest_evalrun.trial.environments.base import TrialPlace
from pytest_evalrun.trial.environments.containernet import ContainerNet

BENCH = Path(__file__).resolve().parent
IMAGE = os.environ.get("EVALRUN_BASE_IMAGE", "localhost/evalrun-debian:bookworm")
PROBE = ("exec 3<>/dev/tcp/127.0.0.1/3128; "
         "printf 'GET http://127.0.0.1:1/ HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; "
         "cat <&3 >/dev/null")


def in_process(repeat: int) -> dict[str, float]:
    runtime = detect_runtime("podman")
    assert runtime is not None, "podman does not answer"
    with tempfile.TemporaryDirectory() as tmp:
        pidfile = Path(tmp) / "pid"
        spec = ContainerSpec(image=IMAGE, name=f"bench-net-{os.getpid()}", pidfile=str(pidfile))
        place = TrialPlace(trial_dir=Path(tmp), artifacts=Path(tmp), prompt_file=Path(tmp) / "p",
                           experiment_dir=Path(tmp))
        with Container.start(runtime, spec) as container:
            attach = []
            for _ in range(repeat):
                net = ContainerNet(place, True)
                started = time.perf_counter()
                net.attach(container, pidfile)
                net.close()
                attach.append(time.perf_counter() - started)
            net = ContainerNet(place, True)
            net.attach(container, pidfile)
            try:
                with_conn, without = [], []
                for _ in range(repeat):
                    for script, out in ((PROBE, with_conn), ("true", without)):
                        started = time.perf_counter()
                        subprocess.run(container.exec_argv(["bash", "-c", script]), check=True,
                                       capture_output=True)
                        out.append(time.perf_counter() - started)
            finally:
                net.close()
    return {"attach_close_ms_median": statistics.median(attach) * 1000,
            "exec_with_one_proxied_request_ms_median": statistics.median(with_conn) * 1000,
            "exec_without_ms_median": statistics.median(without) * 1000}


def session(root: Path, trials: int, network: bool) -> float:
    spec = {"experiment": "bench-ctrnet", "environment": {"image": IMAGE}, "trials": trials,
            "variants": {"v": {"agent": "true", **({} if network else {"network": False})}},
            "tasks": [{"name": "t", "prompt": "p", "verify": "true"}]}
    (root / "b.eval.yaml").write_text(yaml.safe_dump(spec))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-p", "no:xdist", "--eval-environment=podman"], cwd=root,
                   capture_output=True, check=False, timeout=3600)
    return (time.perf_counter() - started) / trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    out: dict[str, object] = {"in_process": in_process(args.repeat)}
    print(json.dumps(out, indent=1), flush=True)
    per: dict[str, list[float]] = {"network": [], "offline": []}
    for _ in range(args.rounds):
        for name in ("network", "offline"):
            with tempfile.TemporaryDirectory() as tmp:
                per[name].append(session(Path(tmp), args.trials, name == "network"))
    out["sessions_s_per_trial"] = per
    out["difference_s_per_trial_median"] = (statistics.median(per["network"])
                                            - statistics.median(per["offline"]))
    out["load"] = os.getloadavg()
    (BENCH / "out").mkdir(exist_ok=True)
    (BENCH / "out" / "container_net.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

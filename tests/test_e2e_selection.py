"""Selection as pytest users expect it: -k, -m, node ids, --lf, -x, --co; bad files."""

from __future__ import annotations

import pytest
from conftest import VERIFY, Suite


def _tasks() -> list[dict[str, object]]:
    return [
        {
            "name": "alpha",
            "prompt": "WRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
            "tags": ["smoke"],
        },
        {
            "name": "beta",
            "prompt": "WRITE answer.txt no",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
            "tags": ["slow_ones"],
        },
        {
            "name": "Gamma task",
            "prompt": "WRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
        },
    ]


@pytest.fixture
def three(suite: Suite) -> Suite:
    suite.experiment(trials=2, variants={"v1": {}, "v2": {}}, tasks=_tasks())
    return suite


def test_collect_only_lists_structured_ids(three: Suite) -> None:
    result = three.pytester.runpytest("--co", "-q")
    result.stdout.fnmatch_lines(
        [
            "exp.eval.yaml::v1::alpha::trial-001",
            "exp.eval.yaml::v1::alpha::trial-002",
            "exp.eval.yaml::v1::beta::trial-001",
            "exp.eval.yaml::v1::Gamma-task::trial-001",
            "*12 tests collected*",
        ]
    )
    assert "[" not in result.stdout.str().split("tests collected")[0]
    assert not (three.root / "results").exists()  # --co runs nothing, writes nothing


def test_k_selects_by_variant_task_trial_and_original_name(three: Suite) -> None:
    r = three.pytester.runpytest("--co", "-q", "-k", "v2 and beta")
    r.stdout.fnmatch_lines(
        [
            "exp.eval.yaml::v2::beta::trial-001",
            "exp.eval.yaml::v2::beta::trial-002",
            "2/12 tests collected*",
        ]
    )
    r = three.pytester.runpytest("--co", "-q", "-k", "alpha and trial-002")
    r.stdout.fnmatch_lines(["*2/12 tests collected*"])
    r = three.pytester.runpytest("--co", "-q", "-k", "Gamma")
    r.stdout.fnmatch_lines(["*4/12 tests collected*"])


def test_m_selects_by_tags_with_strict_markers(three: Suite) -> None:
    r = three.pytester.runpytest("--co", "-q", "-m", "smoke", "--strict-markers")
    r.stdout.fnmatch_lines(["exp.eval.yaml::v1::alpha::trial-001", "*4/12 tests collected*"])
    assert r.ret == 0
    r = three.pytester.runpytest("-m", "smoke", "--strict-markers", "-W", "error")
    r.assert_outcomes(passed=4)


def test_node_id_runs_exactly_one_trial(three: Suite) -> None:
    r = three.pytester.runpytest("exp.eval.yaml::v2::beta::trial-002", "-v")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*exp.eval.yaml::v2::beta::trial-002 FAILED*"])
    r = three.pytester.runpytest("exp.eval.yaml::v1::alpha")
    r.assert_outcomes(passed=2)


def test_last_failed_reruns_exactly_the_failed_trials(three: Suite) -> None:
    three.pytester.runpytest().assert_outcomes(passed=8, failed=4)
    r = three.pytester.runpytest("--lf", "-v")
    r.assert_outcomes(failed=4)
    r.stdout.fnmatch_lines(["*exp.eval.yaml::v1::beta::trial-001 FAILED*"])
    assert "alpha" not in "".join(
        line for line in r.outlines if "FAILED" in line or "PASSED" in line
    )


def test_last_failed_with_resume_reruns_only_the_errors(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/running.md: resume keeps judged outcomes, so --lf --eval-resume runs only errors.
    counter = suite.shared / "starts.txt"  # shared/: writable in the sandbox
    monkeypatch.setenv("AGENT_COUNTER", str(counter))
    # the experiment's verify program, missing at first: an error (not judged)
    fixable = [str(suite.root / "fixed")]
    suite.experiment(
        tasks=[
            {"name": n, "prompt": p, "fixture": "fixtures/basic", "verify": v}
            for n, p, v in (
                ("good", "WRITE answer.txt ok", VERIFY),
                ("bad", "WRITE answer.txt nope", VERIFY),
                ("err", "WRITE answer.txt ok", fixable),
            )
        ]
    )
    suite.pytester.runpytest().assert_outcomes(passed=1, failed=1, errors=1)
    assert suite.meta("base", "err")["error_kind"] == "verify_missing"
    counter.unlink()
    (suite.root / "fixed").write_text("#!/bin/sh\n" + VERIFY + "\n")
    (suite.root / "fixed").chmod(0o755)

    r = suite.pytester.runpytest("--lf", "--eval-resume", "-v")
    r.assert_outcomes(passed=1, failed=1, deselected=1)
    assert counter.read_text().splitlines() == ["base/err/1"]  # only the error ran again
    r.stdout.fnmatch_lines(["*exp.eval.yaml::base::bad::trial-001 FAILED (resumed)*"])
    assert suite.meta("base", "bad")["status"] == "failed"
    assert suite.meta("base", "err")["status"] == "passed"
    assert len(suite.run_dirs()) == 1  # inside the same run

    # without --eval-resume, --lf tries the failure again, in a new run
    r = suite.pytester.runpytest("--lf", "-v")
    r.assert_outcomes(failed=1, deselected=2)
    assert counter.read_text().splitlines() == ["base/err/1", "base/bad/1"]
    assert len(suite.run_dirs()) == 2


def test_exitfirst_stops_and_marks_run_interrupted(three: Suite) -> None:
    r = three.pytester.runpytest("-x", "-p", "no:randomly")
    r.assert_outcomes(passed=2, failed=1)
    import json

    run = json.loads((three.run_dirs()[0] / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert run["counts"]["not_run"] == 9


BAD_FILES = {
    "syntax": ("experiment: x\nvariants: [a\n", "syntax.eval.yaml:3: invalid YAML"),
    "misspelt": (
        "variants:\n  a:\n    agent: {command: [x]}\ntasks:\n  - name: t\n"
        "    promt: hi\n    verify: x\n",
        "did you mean 'prompt'",
    ),
    "python_tag": ("experiment: !!python/object/apply:os.system ['touch PWNED']\n", ":1"),
}


@pytest.mark.parametrize("dist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_bad_file_fails_the_session_but_others_run(suite: Suite, dist: list[str]) -> None:
    suite.experiment()
    for name, (text, _) in BAD_FILES.items():
        suite.write(f"{name}.eval.yaml", text)
    r = suite.pytester.runpytest_subprocess(*dist, "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1, errors=len(BAD_FILES))
    assert r.ret == 1
    out = r.stdout.str()
    for name, (_, needle) in BAD_FILES.items():
        assert f"{name}.eval.yaml" in out
        assert needle in out, (name, needle)
    assert "Traceback" not in out
    assert not (suite.root / "PWNED").exists()


def test_explicit_yaml_path_is_collected_even_without_the_pattern(suite: Suite) -> None:
    path = suite.experiment()
    other = path.with_name("plain.yaml")
    path.rename(other)
    r = suite.pytester.runpytest("--co", "-q")
    assert r.ret == 5  # not an experiment file by name...
    r = suite.pytester.runpytest("--co", "-q", "plain.yaml")
    r.stdout.fnmatch_lines(["plain.yaml::base::good::trial-001", "*2 tests collected*"])


def test_ini_patterns(suite: Suite) -> None:
    path = suite.experiment()
    path.rename(path.with_name("exp.agent.yml"))
    suite.pytester.makeini("[pytest]\nevalrun_files = *.agent.yml\n")
    r = suite.pytester.runpytest("--co", "-q")
    r.stdout.fnmatch_lines(["exp.agent.yml::base::good::trial-001", "*2 tests collected*"])


def test_sessions_without_trials_write_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_x():\n    pass\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not (pytester.path / "results").exists()
    assert not (pytester.path / "jobs").exists()

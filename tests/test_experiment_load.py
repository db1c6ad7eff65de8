"""Unit tests of experiment/load.py, interpolate.py and errors.py (no pytester)."""

from __future__ import annotations

import pickle
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from pytest_evalrun.experiment.errors import ExperimentError, ExperimentErrors
from pytest_evalrun.experiment.interpolate import InterpolationError, Substitution, interpolate
from pytest_evalrun.experiment.load import load_experiment, load_experiment_text
from pytest_evalrun.experiment.model import Experiment, Step

CONTRACT_EXAMPLE = """\
experiment: fix-build            # slug; default: file name without .eval.yaml
description: Does the skills plugin help the agent fix build breaks?
trials: 3                        # trials per variant x task (default 1)
timeout: 600                     # seconds for the agent step of one trial (default 900)
min_pass_rate: 0.6               # optional gate for every variant x task (see section 5)

defaults:                        # merged into every variant (variant keys win)
  agent:
    command: ["my-agent", "--prompt-file", "{prompt_file}"]   # list = argv, string = shell
  env:
    API_TOKEN: ${API_TOKEN}      # ${VAR} / ${VAR:-default} read from the environment

variants:
  baseline: {}
  with-skills:
    model: gpt-4.1               # free text, recorded, and given to the agent
    setup: ./install-skills.sh   # runs in the workspace before the agent
    env: {SKILLS: "on"}

tasks:
  - name: missing-reference      # unique within the file
    prompt: |                    # or prompt_file: prompts/missing-reference.md
      The build fails with CS0246. Fix it.
    fixture: fixtures/missing-reference   # directory copied into a fresh workspace
    verify: ./check.sh           # command run in the workspace afterwards; exit 0 = pass
    tags: [build]                # become pytest markers (-m build)
    timeout: 300                 # per-task override
    trials: 5                    # per-task override
    pass_threshold: 0.5          # reward a trial needs to pass (default 1.0)
"""

MINIMAL = """\
variants:
  a: {agent: [my-agent]}
tasks:
  - name: t
    prompt: do it
    verify: ./check.sh
"""


def write(tmp_path: Path, text: str, name: str = "x.eval.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None, name: str = "x.eval.yaml"
) -> Experiment:
    return load_experiment(write(tmp_path, text, name), environ=environ or {})


def errors(tmp_path: Path, text: str, environ: dict[str, str] | None = None, **kw: object) -> str:
    """The error text of loading ``text`` (which must fail)."""
    path = write(tmp_path, text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, environ=environ or {}, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "internal error" not in message
    for line in message.splitlines():
        assert line.startswith(f"{path}:"), line  # every error names the file
    return message


# ----------------------------------------------------------------------------- interpolation


def test_interpolate_plain_text_is_untouched() -> None:
    assert interpolate("run {prompt} $HOME $ {x}", {}) == ("run {prompt} $HOME $ {x}", [])


def test_interpolate_values_and_defaults() -> None:
    env = {"A": "1", "EMPTY": ""}
    text, used = interpolate("${A}-${B:-two}-${EMPTY:-three}-${EMPTY}-${A:-x}", env)
    assert text == "1-two-three--1"
    assert used == [
        Substitution("A", "1", True),
        Substitution("B", "two", False),
        Substitution("EMPTY", "three", False),
        Substitution("EMPTY", "", True),
        Substitution("A", "1", True),
    ]


def test_interpolate_escape_and_no_recursion() -> None:
    assert interpolate("$${A} ${A}", {"A": "${B}"}) == (
        "${A} ${B}",
        [Substitution("A", "${B}", True)],
    )


def test_interpolate_default_may_be_empty_or_contain_colons() -> None:
    assert interpolate("${X:-}|${Y:-a:b-c}", {})[0] == "|a:b-c"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${MISSING}", "'MISSING' is not set"),
        ("${1BAD}", "invalid variable reference"),
        ("${}", "invalid variable reference"),
        ("${A B}", "invalid variable reference"),
        ("${UNTERMINATED", "unterminated"),
        ("${A:-${B}}", "unterminated or nested"),
    ],
)
def test_interpolate_errors(text: str, problem: str) -> None:
    with pytest.raises(InterpolationError, match=problem):
        interpolate(text, {"A": "a"})


def test_interpolate_reports_every_problem() -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate("${X} ${Y}", {})
    assert len(info.value.problems) == 2


# ----------------------------------------------------------------------------- errors


def test_spec_error_str_and_pickle() -> None:
    err = ExperimentError(Path("dir/x.eval.yaml"), 3, "bad thing", column=5)
    assert str(err) == "dir/x.eval.yaml:3: bad thing"
    assert (err.line, err.column, err.message) == (3, 5, "bad thing")
    assert str(ExperimentError("x.yaml", None, "unreadable")) == "x.yaml: unreadable"
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.column) == (str(err), 5)


def test_spec_errors_lists_each_sorted() -> None:
    errs = ExperimentErrors([ExperimentError("f", 9, "late"), ExperimentError("f", 2, "early")])
    assert isinstance(errs, ExperimentError)
    assert str(errs) == "f:2: early\nf:9: late"
    assert errs.line == 2
    assert str(pickle.loads(pickle.dumps(errs))) == str(errs)


def test_spec_errors_caps_the_listing() -> None:
    errs = ExperimentErrors(ExperimentError("f", i, "e") for i in range(1, 151))
    lines = str(errs).splitlines()
    assert len(lines) == 101
    assert lines[-1] == "... and 50 more errors"


# ----------------------------------------------------------------------------- loading


def test_contract_example(tmp_path: Path) -> None:
    (tmp_path / "fixtures" / "missing-reference").mkdir(parents=True)
    exp = load(tmp_path, CONTRACT_EXAMPLE, {"API_TOKEN": "tok-123456"})
    assert exp.name == exp.slug == "fix-build"
    assert exp.path == tmp_path / "x.eval.yaml"
    assert exp.description == "Does the skills plugin help the agent fix build breaks?"
    assert exp.min_pass_rate == 0.6
    assert [v.name for v in exp.variants] == ["baseline", "with-skills"]
    base, skills = exp.variants
    assert base.agent == Step("command", ("my-agent", "--prompt-file", "{prompt_file}"), 9)
    assert base.env == {"API_TOKEN": "tok-123456"}
    assert base.setup is None and base.model is None
    assert base.line == 14
    assert skills.model == "gpt-4.1"
    assert skills.setup == Step("command", "./install-skills.sh", 17)
    assert skills.env == {"API_TOKEN": "tok-123456", "SKILLS": "on"}
    assert skills.raw["env"] == {"API_TOKEN": "tok-123456", "SKILLS": "on"}
    assert skills.raw["agent"] == {"command": ["my-agent", "--prompt-file", "{prompt_file}"]}
    (task,) = exp.tasks
    assert task.name == "missing-reference"
    assert task.prompt == "The build fails with CS0246. Fix it.\n"
    assert task.fixture == (tmp_path / "fixtures" / "missing-reference").resolve()
    assert task.verify == Step("command", "./check.sh", 25)
    assert task.tags == ("build",)
    assert (task.timeout, task.setup_timeout, task.verify_timeout) == (300.0, 300.0, 300.0)
    # the task sets no gate of its own: the experiment's (0.6) applies, recorded once, on exp
    assert (task.trials, task.pass_threshold, task.min_pass_rate) == (5, 0.5, None)
    assert task.line == 21
    assert task.raw["timeout"] == 300
    assert exp.n_items == 10
    assert exp.secret_values == frozenset({"tok-123456"})


def test_defaults_and_experiment_values(tmp_path: Path) -> None:
    exp = load(tmp_path, MINIMAL, name="My Exp.eval.yml")
    assert exp.name == "My Exp"
    assert exp.slug == "My-Exp"
    (task,) = exp.tasks
    assert (task.trials, task.timeout, task.setup_timeout, task.verify_timeout) == (
        1,
        900.0,
        300.0,
        300.0,
    )
    assert task.pass_threshold == 1.0
    assert task.min_pass_rate is None and exp.min_pass_rate is None
    assert task.verify == Step("command", "./check.sh", 6)
    assert exp.variants[0].agent.value == ("my-agent",)


def test_experiment_level_values_are_inherited(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        MINIMAL
        + "    setup_timeout: 7\n"
        + "trials: 4\ntimeout: 60\nverify_timeout: 2.5\npass_threshold: 0.25\n",
    )
    (task,) = exp.tasks
    assert (task.trials, task.timeout, task.setup_timeout, task.verify_timeout) == (
        4,
        60.0,
        7.0,
        2.5,
    )
    assert task.pass_threshold == 0.25


@pytest.mark.parametrize(
    ("filename", "name"),
    [("a.eval.yaml", "a"), ("b.eval.yml", "b"), ("c.yaml", "c"), ("d.yml", "d")],
)
def test_experiment_name_from_file_name(tmp_path: Path, filename: str, name: str) -> None:
    assert load(tmp_path, MINIMAL, name=filename).name == name


def test_steps(tmp_path: Path) -> None:
    exp = load_experiment(
        write(
            tmp_path,
            """\
            defaults:
              agent: {python: "pkg.mod:run_agent"}
            variants:
              a: {}
              b: {agent: {command: "my-agent --fast"}}
              c: {agent: [my-agent, --n, 3, --t, 1.50, true], setup: {python: "x:y.z"}}
              d: {agent: {docker: {image: "x:1", args: [1, 2]}}}
            tasks:
              - name: t
                prompt: p
                verify: {command: [./check.sh, 1]}
            """,
        ),
        environ={},
        agent_kinds=["docker"],
    )
    a, b, c, d = exp.variants
    assert a.agent == Step("python", "pkg.mod:run_agent", 2)
    assert b.agent.value == "my-agent --fast"
    assert c.agent.value == ("my-agent", "--n", "3", "--t", "1.50", "true")
    assert c.setup == Step("python", "x:y.z", 6)
    assert d.agent == Step("docker", {"image": "x:1", "args": [1, 2]}, 7)
    assert exp.tasks[0].verify.value == ("./check.sh", "1")


def test_variant_extends_and_env_merge_order(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        """\
        env: {LEVEL: experiment, E: e}
        defaults:
          agent: [agent-default]
          model: m0
          env: {LEVEL: defaults, D: d}
        variants:
          base:
            agent: [agent-base]
            description: the base
            env: {LEVEL: base, B: b}
          child:
            extends: base
            model: m1
            env: {LEVEL: child}
          grandchild:
            extends: child
            agent: {python: "a:b"}
          plain:
        tasks:
          - {name: t, prompt: p, verify: ./v}
        """,
    )
    variants = {v.name: v for v in exp.variants}
    assert list(variants) == ["base", "child", "grandchild", "plain"]
    base, child, grand, plain = variants.values()
    assert base.env == {"LEVEL": "base", "E": "e", "D": "d", "B": "b"}
    assert base.model == "m0"
    assert child.env == {"LEVEL": "child", "E": "e", "D": "d", "B": "b"}
    assert child.agent.value == ("agent-base",)
    assert child.model == "m1"
    assert child.description == "the base"
    assert grand.agent == Step("python", "a:b", 17)
    assert grand.model == "m1"
    assert grand.env == child.env
    assert "extends" not in grand.raw
    assert grand.raw["name"] == "grandchild"
    assert plain.agent.value == ("agent-default",)
    assert plain.env == {"LEVEL": "defaults", "E": "e", "D": "d"}
    assert exp.tasks[0].env == {}  # experiment env goes to the variants


def test_task_extends(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.md").write_text("from a file ✓\n", encoding="utf-8")
    (tmp_path / "fx").mkdir()
    exp = load(
        tmp_path,
        """\
        variants: {a: {agent: [x]}}
        tasks:
          - name: child
            extends: base
            prompt_file: prompts/p.md
            env: {C: c}
          - name: base
            prompt: inline
            verify: ./v
            fixture: fx
            tags: [slow]
            trials: 2
            env: {B: b}
        """,
    )
    child, base = exp.tasks
    assert child.prompt == "from a file ✓\n"
    assert child.prompt_file == (tmp_path / "prompts" / "p.md").resolve()
    assert child.fixture == (tmp_path / "fx").resolve()
    assert (child.tags, child.trials) == (("slow",), 2)
    assert child.env == {"B": "b", "C": "c"}
    assert "prompt" not in child.raw and child.raw["prompt_file"] == "prompts/p.md"
    assert base.prompt == "inline" and base.prompt_file is None
    assert exp.n_items == 4


def test_yaml_merge_keys_and_aliases(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        """\
        variants: {a: {agent: &argv [x, "--y"]}, b: {agent: *argv}}
        tasks:
          - &t1 {name: t1, prompt: p, verify: ./v, tags: [a]}
          - {<<: *t1, name: t2, tags: [b]}
        """,
    )
    assert [v.agent.value for v in exp.variants] == [("x", "--y"), ("x", "--y")]
    assert [(t.name, t.tags) for t in exp.tasks] == [("t1", ("a",)), ("t2", ("b",))]


# ----------------------------------------------------------------------------- secrets


def test_secret_values(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        """\
        secrets: [MY_DB, DSN, DECLARED]
        env:
          API_TOKEN: ${PLAIN_VAR}           # key is secret-looking
          VISIBLE: ${OPENAI_API_KEY}        # variable is secret-looking
          DSN: ${CONN}                      # key listed under secrets
          OTHER: ${MY_DB}                   # variable listed under secrets
          HOST: ${HOST_NAME}                # not secret
          LITERAL_PASSWORD: hunter2-literal # literal under a secret key
          MODEL: ${MODEL:-gpt}              # not secret
        defaults:
          agent: [run, "--auth=${AUTH_VALUE}", "${NOT_HIDDEN_ARG}"]
        variants:
          a: {env: {GITHUB_TOKEN: ghp_literal, N: 3}}
        tasks:
          - name: t
            prompt: "${PROMPT_SECRET:-no}"
            verify: ./v
            env: {TASK_KEY: task-literal, SAFE: fine}
        """,
        {
            "PLAIN_VAR": "v-plain",
            "OPENAI_API_KEY": "v-openai",
            "CONN": "v-conn",
            "MY_DB": "v-db",
            "HOST_NAME": "v-host",
            "AUTH_VALUE": "v-auth",
            "NOT_HIDDEN_ARG": "v-arg",
            "DECLARED": "v-declared",
        },
    )
    assert exp.secret_values == {
        "v-plain",
        "v-openai",
        "v-conn",
        "v-db",
        "hunter2-literal",
        "v-auth",
        "ghp_literal",
        "task-literal",
        "v-declared",  # named under secrets: and set in the environment
    }
    assert exp.variants[0].env["N"] == "3"
    assert exp.variants[0].env["VISIBLE"] == "v-openai"


# ----------------------------------------------------------------------------- errors


def test_empty_and_comment_only_files(tmp_path: Path) -> None:
    assert "the file is empty" in errors(tmp_path, "")
    assert "the file is empty" in errors(tmp_path, "# just a comment\n\n# another\n")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert ":1: the top level must be a mapping" in errors(tmp_path, text)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    message = errors(tmp_path, "variants:\n  a: {agent: [x]\ntasks: []\n")
    assert "invalid YAML" in message
    assert ":3:" in message or ":2:" in message


def test_tab_indentation(tmp_path: Path) -> None:
    message = errors(tmp_path, "variants:\n\ta: {}\n")
    assert message.endswith(
        ":2: a tab character is used for indentation; YAML allows only spaces there"
    )


def test_multiple_documents(tmp_path: Path) -> None:
    assert ":7: the file must hold a single YAML document" in errors(tmp_path, MINIMAL + "---\n")


def test_invalid_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.eval.yaml"
    path.write_bytes(b"variants:\n  a: {}\n  \xff: {}\n")
    with pytest.raises(ExperimentError, match=r"bad.eval.yaml:3: the file is not valid UTF-8"):
        load_experiment(path, environ={})
    with pytest.raises(ExperimentError, match="cannot read the file"):
        load_experiment(tmp_path / "missing.eval.yaml", environ={})


def test_control_character(tmp_path: Path) -> None:
    assert "invalid YAML" in errors(tmp_path, "variants:\n  a: \x07\n")


def test_unknown_keys_with_suggestions(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        experimnet: x
        variants:
          a: {agent: [x], modle: m}
        defaults: {agnet: [x]}
        tasks:
          - name: t
            promt: p
            verify: ./v
            agent: [y]
            zzz: 1
        """,
    )
    assert ":1: unknown key 'experimnet' at the top level; did you mean 'experiment'?" in message
    assert ":3: unknown key 'modle' in variant 'a'; did you mean 'model'?" in message
    assert ":4: unknown key 'agnet' in defaults; did you mean 'agent'?" in message
    assert ":7: unknown key 'promt' in task 't'; did you mean 'prompt'?" in message
    assert ":9: unknown key 'agent' in task 't' ('agent' belongs to a variant" in message
    assert ":10: unknown key 'zzz' in task 't'\n" in message + "\n"
    assert "has no prompt" not in message  # the misspelling says it all
    assert "has no agent" not in message
    assert len(message.splitlines()) == 6


def test_extends_not_allowed_in_defaults(tmp_path: Path) -> None:
    assert "unknown key 'extends' in defaults" in errors(
        tmp_path, MINIMAL + "defaults: {extends: a}\n"
    )


def test_duplicate_keys(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        variants:
          a: {agent: [x]}
          b: {agent: [x], model: m, model: n}
          a: {agent: [y]}
        tasks:
          - name: t
            prompt: p
            prompt: q
            verify: ./v
        tasks: []
        """,
    )
    assert ":3: duplicate key 'model' (first on line 3)" in message
    assert ":4: duplicate variant 'a' (first on line 2)" in message
    assert ":8: duplicate key 'prompt' (first on line 7)" in message
    assert ":10: duplicate key 'tasks' (first on line 5)" in message


def test_duplicate_task_names_and_slug_collisions(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        variants:
          Fast Agent: {agent: [x]}
          fast-agent: {agent: [x]}
        tasks:
          - {name: t, prompt: p, verify: ./v}
          - {name: t, prompt: p, verify: ./v}
          - {name: "a b", prompt: p, verify: ./v}
          - {name: "a:b", prompt: p, verify: ./v}
        """,
    )
    assert ":6: duplicate task name 't' (first on line 5)" in message
    assert (
        ":3: variant names 'Fast Agent' (line 2) and 'fast-agent' both become the file name"
        in message
    )
    assert ":8: task names 'a b' (line 7) and 'a:b' both become the file name 'a-b'" in message


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("experiment: 'a/b'\n", ":1: experiment name 'a/b' must not contain '/'"),
        ("experiment: '..'\n", ":1: experiment name '..' must not be '..'"),
        ("experiment: ''\n", "experiment name '' must not be empty"),
    ],
)
def test_invalid_experiment_names(tmp_path: Path, snippet: str, expected: str) -> None:
    assert expected in errors(tmp_path, snippet + MINIMAL)


def test_invalid_variant_and_task_names(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        variants:
          "a/b": {agent: [x]}
          ".": {agent: [x]}
        tasks:
          - {name: "bad\\tname", prompt: p, verify: ./v}
          - {name: "", prompt: p, verify: ./v}
          - {prompt: p, verify: ./v}
          - {name: [x], prompt: p, verify: ./v}
        """,
    )
    assert ":2: variant name 'a/b' must not contain '/'" in message
    assert ":3: variant name '.' must not be '.'" in message
    assert ":5: task name 'bad\\tname' must not contain control characters" in message
    assert ":6: task name '' must not be empty" in message
    assert ":7: task #3 has no 'name'" in message
    assert ":8: 'name' in task #4 must be a string, got a list" in message


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("trials: true", "'trials' at the top level must be an integer from 1 to 10,000, got true"),
        ("trials: 0", "'trials' at the top level must be an integer from 1 to 10,000, got 0"),
        ("trials: 10001", "must be an integer from 1 to 10,000, got 10001"),
        ("trials: 2.0", "must be an integer from 1 to 10,000, got 2.0 (a number)"),
        ("trials: '3'", "must be an integer from 1 to 10,000, got '3' (a string)"),
        ("timeout: 0", "'timeout' at the top level must be a number of seconds > 0"),
        ("timeout: -1", "'timeout' at the top level must be a number of seconds > 0"),
        ("timeout: 604801", "at most 604,800 (7 days), got 604801"),
        ("setup_timeout: .inf", "'setup_timeout' at the top level must be a number"),
        ("verify_timeout: yes", "got yes (a boolean)"),
        ("min_pass_rate: 1.5", "'min_pass_rate' at the top level must be a number from 0 to 1"),
        ("min_pass_rate: -0.1", "must be a number from 0 to 1, got -0.1"),
        ("description: [a]", "'description' at the top level must be a string, got a list"),
        ("env: [a]", "'env' at the top level must be a mapping"),
        ("env: {A: null}", "env 'A' at the top level must be a string"),
        ("env: {A: [1]}", "env 'A' at the top level must be a string"),
        ("env: {'A=B': x}", "invalid environment variable name 'A=B'"),
        ("secrets: API", "'secrets' must be a list of names"),
        ("defaults: [a]", "'defaults' must be a mapping"),
    ],
)
def test_top_level_types_and_ranges(tmp_path: Path, snippet: str, expected: str) -> None:
    message = errors(tmp_path, MINIMAL + snippet + "\n")
    assert ":7: " in message
    assert expected in message


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("trials: false", "'trials' in task 't' must be an integer from 1 to 10,000, got false"),
        ("pass_threshold: 2", "'pass_threshold' in task 't' must be a number from 0 to 1"),
        ("timeout: '10'", "'timeout' in task 't' must be a number of seconds"),
        ("tags: build", "'tags' in task 't' must be a list of names"),
        ("tags: [1x]", "tag '1x' in task 't' is not a valid marker name"),
        ("tags: ['a-b']", "tag 'a-b' in task 't' is not a valid marker name"),
        ("tags: [[a]]", "tag ['a'] in task 't' is not a valid marker name"),
        ("tags: [skip]", "tag 'skip' in task 't' is reserved by pytest"),
        ("fixture: nowhere", "fixture directory 'nowhere' in task 't' does not exist"),
        ("fixture: x.eval.yaml", "fixture directory 'x.eval.yaml' in task 't' does not exist"),
        ("fixture: 3", "'fixture' in task 't' must be a path, got 3"),
        ("prompt_file: p.md", "task 't' has both 'prompt' and 'prompt_file'"),
        ("extends: nope", "task 't' extends unknown task 'nope'"),
        ("extends: tt", "extends unknown task 'tt'; did you mean 't'?"),
        ("verify: []", "'verify' in task 't': the command is empty"),
        ("verify: '  '", "'verify' in task 't': the command is empty"),
        ("verify: [./v, [x]]", "'verify' in task 't': argv items must be strings, got a list"),
        ("verify: [./v, null]", "argv items must be strings, got null"),
        ("verify: {shell: x}", "unknown verify kind 'shell' in task 't'; known kinds: command, "),
        ("verify: {comand: x}", "known kinds: command, python; did you mean 'command'?"),
        ("verify: {command: x, python: y}", "'verify' in task 't' must be a command (a string"),
        ("verify: {}", "with one key, the step kind (command, python); got keys "),
        ("verify: null", "'verify' in task 't' must be a command (a string or a list) or a"),
        ("verify: 3", "got 3 (a number)"),
        ("verify: {command: {a: b}}", "'command' step in task 't' must be a string (shell)"),
        ("verify: {python: 'not a target'}", "must be 'package.module:function', got 'not a"),
        ("verify: {python: 'mod.func'}", "must be 'package.module:function'"),
    ],
)
def test_task_field_errors(tmp_path: Path, snippet: str, expected: str) -> None:
    if snippet.startswith("verify:"):
        text = MINIMAL.replace("verify: ./check.sh", snippet)
    else:
        text = MINIMAL + "    " + snippet + "\n"
    message = errors(tmp_path, text)
    assert expected in message
    assert ":6:" in message or ":7:" in message


def test_missing_required_things(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        variants:
          a: {model: m}
          b:
        tasks:
          - name: t
          - name: u
            prompt: p
        """,
    )
    assert ":2: variant 'a' has no agent" in message
    assert ":3: variant 'b' has no agent" in message
    assert ":5: task 't' has no prompt" in message
    assert ":5: task 't' has no 'verify'" in message
    assert ":6: task 'u' has no 'verify'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks: [{name: t, prompt: p, verify: v}]\n", "the experiment has no variants"),
        ("variants: {}\ntasks: [{name: t, prompt: p, verify: v}]\n", "has no variants"),
        ("variants: [a]\ntasks: [{name: t, prompt: p, verify: v}]\n", "'variants' must be a map"),
        ("variants: {a: {agent: [x]}}\n", "the experiment has no tasks"),
        ("variants: {a: {agent: [x]}}\ntasks: []\n", "the experiment has no tasks"),
        ("variants: {a: {agent: [x]}}\ntasks: {name: t}\n", "'tasks' must be a list of tasks"),
        ("variants: {a: {agent: [x]}}\ntasks: [t]\n", "task #1 must be a mapping"),
        ("variants: {a: 3}\ntasks: [{name: t, prompt: p, verify: v}]\n", "variant 'a' must be"),
    ],
)
def test_missing_variants_or_tasks(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in errors(tmp_path, text)


def test_missing_prompt_file(tmp_path: Path) -> None:
    message = errors(tmp_path, MINIMAL.replace("prompt: do it", "prompt_file: nope.md"))
    assert ":5: prompt file 'nope.md' in task 't' does not exist" in message
    (tmp_path / "bin.md").write_bytes(b"\xff\xfe\x00")
    message = errors(tmp_path, MINIMAL.replace("prompt: do it", "prompt_file: bin.md"))
    assert "cannot be read as UTF-8" in message


def test_unset_variables(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        MINIMAL + "env:\n  A: ${NOPE}\n  B: '${ALSO_NOPE} and ${OK:-fine}'\n",
    )
    assert ":8: environment variable 'NOPE' is not set and has no default" in message
    assert ":9: environment variable 'ALSO_NOPE' is not set" in message
    assert "'OK'" not in message


def test_step_kinds(tmp_path: Path) -> None:
    text = MINIMAL.replace("agent: [my-agent]", "agent: {docker: {image: x}}")
    message = errors(tmp_path, text)
    assert ":2: unknown agent kind 'docker' in variant 'a'; known kinds: command, python" in message
    exp = load_experiment(write(tmp_path, text), environ={}, agent_kinds=["docker"])
    assert exp.variants[0].agent == Step("docker", {"image": "x"}, 2)
    message = errors(tmp_path, text.replace("agent:", "setup: {dockr: 1}, agent:"))
    assert "unknown setup kind 'dockr' in variant 'a'; known kinds: command, python" in message


def test_extends_cycles_and_unknown(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        variants:
          a: {extends: b, agent: [x]}
          b: {extends: c}
          c: {extends: a}
          d: {extends: d}
          e: {extends: a}
          f: {extends: bb}
          g: {extends: [a]}
        tasks:
          - {name: t1, prompt: p, verify: ./v, extends: t2}
          - {name: t2, prompt: p, verify: ./v, extends: t1}
        """,
    )
    assert ":2: variants extend each other in a cycle: a -> b -> c -> a" in message
    assert ":5: variants extend each other in a cycle: d -> d" in message
    assert ":7: variant 'f' extends unknown variant 'bb'; did you mean 'b'?" in message
    assert ":8: 'extends' in variant 'g' must be a string, got a list" in message
    assert ":10: tasks extend each other in a cycle: t1 -> t2 -> t1" in message
    assert "no agent" not in message  # no cascade of follow-up errors
    assert len(message.splitlines()) == 5


def test_python_tags_are_rejected_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    message = errors(
        tmp_path,
        MINIMAL
        + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
        + "env: !!python/object:collections.OrderedDict {}\n"
        + "x: !!python/name:os.system\n",
    )
    assert (
        ":7: YAML tag '!!python/object/apply:os.system' is not allowed: "
        "experiment files cannot create Python objects" in message
    )
    assert ":8: YAML tag '!!python/object:collections.OrderedDict' is not allowed" in message
    assert ":9: YAML tag '!!python/name:os.system' is not allowed" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("description: !custom x", "YAML tag '!custom' is not allowed: custom YAML tags"),
        ("description: !!binary aGk=", "YAML tag '!!binary' is not allowed: only strings"),
        ("env: !!set {a}", "YAML tag '!!set' is not allowed"),
        ("description: !!int x", "invalid !!int value 'x'"),
        ("? [a]\n: b", "mapping keys must be plain scalars"),
    ],
)
def test_other_yaml_features(tmp_path: Path, snippet: str, expected: str) -> None:
    assert expected in errors(tmp_path, MINIMAL + snippet + "\n")


def test_yaml_library_errors_keep_file_and_line(tmp_path: Path) -> None:
    # The reason is PyYAML's own text: only our part of the message is checked.
    message = errors(tmp_path, MINIMAL + "description: *nope\n")
    assert message.startswith(f"{tmp_path / 'x.eval.yaml'}:7: invalid YAML: ")
    assert len(message.splitlines()) == 1


def test_timestamps_and_yaml11_words_stay_text(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        MINIMAL.replace("prompt: do it", "prompt: 2024-01-01") + "description: on\n",
    )
    assert exp.tasks[0].prompt == "2024-01-01"
    assert exp.description == "on"


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    text = MINIMAL + "description:\n  " + "\n  ".join(lines) + "\n"
    message = errors(tmp_path, text)  # the time it takes: bench/bench_units.py
    assert "YAML aliases expand to more than 100,000 nodes" in message
    tracemalloc.start()
    try:
        errors(tmp_path, text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024


def test_recursive_alias_and_deep_nesting(tmp_path: Path) -> None:
    path = tmp_path / "x.eval.yaml"
    assert "nests more than 100 levels" in errors(tmp_path, MINIMAL + "description: &x [*x]\n")
    nested = MINIMAL + "description: " + "[" * 150 + "]" * 150 + "\n"
    assert errors(tmp_path, nested) == f"{path}:7: the file nests more than 100 levels deep"
    # Far deeper than any C stack allows: refused with the file and line, not a crash. Which
    # check stops it first, ours or libyaml's own nesting limit (libyaml 0.2.6 and later, with
    # its own words), depends on the installed PyYAML: only our part of the message is checked.
    deep = MINIMAL + "description: " + "[" * 200_000 + "]" * 200_000 + "\n"
    message = errors(tmp_path, deep)
    assert message.startswith(f"{path}:7: ")
    assert len(message.splitlines()) == 1


def test_items_limit(tmp_path: Path) -> None:
    text = (
        "variants: {a: {agent: [x]}, b: {}, c: {}}\ndefaults: {agent: [x]}\ntrials: 10000\ntasks:\n"
    ) + "".join(f"  - {{name: t{i}, prompt: p, verify: ./v}}\n" for i in range(34))
    message = errors(tmp_path, text)
    assert ":4: this file defines 1,020,000 trial items (3 variants x 340,000 task trials)" in (
        message
    )
    exp = load(tmp_path, text.replace("trials: 10000", "trials: 9803"))  # 3 x 34 x 9803
    assert exp.n_items == 999_906


def test_items_limit_counts_task_trials(tmp_path: Path) -> None:
    text = MINIMAL.replace("a: {agent: [my-agent]}", "a: {agent: [x]}\n  b: {agent: [x]}")
    text += "    trials: 10000\n"
    assert load(tmp_path, text).n_items == 20_000


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    message = errors(
        tmp_path,
        """\
        trials: 0
        variants:
          a: {agent: []}
        tasks:
          - {name: t, prompt: p, verify: ./v, timeout: -1}
          - {name: u, prompt: "${UNSET}", verify: ./v}
        """,
    )
    assert [line.split(":")[1] for line in message.splitlines()] == ["1", "3", "5", "6"]


def test_load_experiment_text_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "sub" / "fx").mkdir(parents=True)
    exp = load_experiment_text(
        MINIMAL + "    fixture: fx\n", tmp_path / "sub" / "e.eval.yaml", environ={}
    )
    assert exp.tasks[0].fixture == (tmp_path / "sub" / "fx").resolve()
    assert exp.name == "e"
    with pytest.raises(ExperimentError) as info:
        load_experiment_text("variants: [", "rel/e.eval.yaml", environ={})
    assert str(info.value).startswith("rel/e.eval.yaml:")


def test_big_file_loads(tmp_path: Path) -> None:
    lines = [
        "experiment: big",
        "trials: 10",
        "defaults:",
        "  agent: {command: [agent, --prompt-file, '{prompt_file}']}",
        "  env: {API_TOKEN: '${TOKEN:-x}'}",
        "variants:",
    ]
    lines += [f"  v{v}: {{model: m{v}, env: {{N: '{v}'}}}}" for v in range(10)]
    lines.append("tasks:")
    for t in range(1000):
        lines += [
            f"  - name: task-{t}",
            f"    prompt: 'Fix build number {t}, please'",
            "    verify: [./check.sh, --strict]",
            "    tags: [build, fast]",
            "    timeout: 300",
        ]
    path = tmp_path / "big.eval.yaml"
    path.write_text("\n".join(lines) + "\n")
    exp = load_experiment(path, environ={})  # the time it takes: bench/bench_units.py
    assert exp.n_items == 100_000


# ----------------------------------------------------------------------------- isolation keys

ISOLATION = """\
experiment: iso
sandbox: {mode: bwrap, read: [data], write: [~/cache]}
network: false
env_passthrough: [ANTHROPIC_API_KEY, "AWS_*"]
defaults:
  agent: echo
variants:
  base: {}
  open: {sandbox: none, network: true, env_passthrough: MY_VAR}
tasks:
  - {name: t, prompt: p, verify: "true"}
"""


def test_isolation_keys_resolve_per_variant(tmp_path: Path) -> None:
    from pytest_evalrun.experiment.identity import fingerprint

    exp = load(tmp_path, ISOLATION)
    base, open_ = exp.variants
    assert base.sandbox.mode == "bwrap" and not base.network
    assert base.sandbox.read == (tmp_path / "data",)
    assert base.sandbox.write == (Path.home() / "cache",)
    assert base.env_passthrough == ("ANTHROPIC_API_KEY", "AWS_*")
    assert open_.sandbox.mode == "none" and open_.sandbox.read == () and open_.network
    assert open_.env_passthrough == ("ANTHROPIC_API_KEY", "AWS_*", "MY_VAR")
    # isolation is not definition: changing it reruns nothing on resume
    other = load(
        tmp_path,
        ISOLATION.replace("network: false", "network: true").replace("mode: bwrap", "mode: auto"),
        name="y.eval.yaml",
    )
    task = exp.tasks[0]
    assert fingerprint(base, task, 1) == fingerprint(other.variants[0], other.tasks[0], 1)


def test_isolation_key_errors_name_their_lines(tmp_path: Path) -> None:
    text = errors(
        tmp_path,
        """\
        experiment: iso
        sandbox: bwarp
        network: "no"
        env_passthrough: {A: 1}
        variants:
          a: {agent: echo, sandbox: {mode: x, reed: [a]}, env_passthrough: ["", "B=1"]}
        tasks:
          - {name: t, prompt: p, verify: "true"}
        """,
    )
    assert (
        ":2: 'sandbox' at the top level must be auto|bwrap|none, got 'bwarp'; did you mean 'bwrap'?"
        in text
    )
    assert ":3: 'network' at the top level must be true, false or a mapping {allow:" in text
    assert ":4: 'env_passthrough' at the top level must be a list" in text
    assert ":6: unknown key 'reed' in 'sandbox' in variant 'a'; did you mean 'read'?" in text
    assert ":6: 'mode' in 'sandbox' in variant 'a' must be auto|bwrap|none" in text
    assert ":6: 'env_passthrough' in variant 'a': '' is not a variable name or glob" in text


def test_inherited_secret_looking_variables_are_secrets(tmp_path: Path) -> None:
    environ = {
        "GITHUB_TOKEN": "ghp_abcdef123456",
        "AWS_SECRET_ACCESS_KEY": "wJalr/K7MDENG",
        "GH_PAT": "xy",
        "CI_DEBUG_TOKEN": "true",
        "PATH": "/usr/bin",
    }
    exp = load(tmp_path, ISOLATION, environ)
    assert {"ghp_abcdef123456", "wJalr/K7MDENG", "xy"} <= exp.secret_values
    assert "true" not in exp.secret_values and "/usr/bin" not in exp.secret_values
    assert exp.weak_secrets == ("GH_PAT",)  # named for the warning; the value never shown

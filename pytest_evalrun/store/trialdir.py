"""One trial's directory in the standard layout: its own records written here (meta.json,
prompt.md, the outputs, workspace.diff, verify.json, metrics.json, earlier attempts), read back
through :mod:`.layout`; the steps write their artifacts, verifier files and outputs themselves.

    trials/<NNN>/meta.json        the TrialOutcome, plus schema_version, success and steps
                 prompt.md        the exact prompt sent
                 stdout.txt       the agent step's output
                 setup-output.txt the setup step's output (when there is a setup)
                 workspace.diff   the agent's change to the fixture
                 verify.json      verify's verdict
                 metrics.json     durations, tokens and cost
                 workspace/       the workspace after the trial
                 artifacts/       what the agent left in EVALRUN_ARTIFACTS_DIR
                 verifier/        what verify wrote (reward.txt / reward.json, its output)
                 attempts/<k>/    the files of earlier attempts of this trial, if any

Every JSON file is written atomically; meta.json is the record ``--eval-resume`` reads back.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..layoutjson import MetaJson, StepRecord
from ..outcome import PASSED, TrialOutcome
from ..secrets import Redactor, redact_file, redact_tree
from .atomic import write_json_atomic, write_text_atomic
from .layout import META, RUNNING, read_meta, standing_outcome

SCHEMA_VERSION = 1
PROMPT = "prompt.md"
STDOUT = "stdout.txt"
SETUP_OUTPUT = "setup-output.txt"
DIFF = "workspace.diff"
VERIFY = "verify.json"
METRICS = "metrics.json"
VERIFY_OUTPUT = "verify-output.txt"
ATTEMPTS = "attempts"
#: Files larger than this are checked for secrets in chunks, not masked in memory.
MASK_IN_MEMORY = 64 * 1024 * 1024
#: meta.json keys that are not TrialOutcome fields.
_META_ONLY = ("schema_version", "success", "steps")


class TrialDir:
    """Paths and files of one trial directory."""

    def __init__(self, path: Path, redactor: Redactor | None = None) -> None:
        self.path = path
        self.redactor = redactor if redactor is not None else Redactor(())

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @property
    def verifier(self) -> Path:
        return self.path / "verifier"

    @property
    def prompt(self) -> Path:
        return self.path / PROMPT

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def attempts_dir(self) -> Path:
        return self.path / ATTEMPTS

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, outcome: TrialOutcome, prompt: str, rerun_reason: str) -> None:
        """A fresh directory for an attempt. What an earlier attempt left is kept in
        ``attempts/<k>/``, and ``outcome`` learns of it (``attempt``, ``attempts``)."""
        history = self._keep_earlier_attempts(rerun_reason)
        outcome.attempts = history
        outcome.attempt = len(history) + 1
        self.artifacts.mkdir(parents=True)
        self.write_meta(outcome, {}, status=RUNNING)
        write_text_atomic(self.prompt, self.redactor.redact(prompt), fsync=False)

    def _keep_earlier_attempts(self, rerun_reason: str) -> list[dict[str, Any]]:
        """Move an earlier attempt's files into ``attempts/<k>/``; its history, oldest first.

        Crash-safe: the attempt is first renamed to a sibling ``.<NNN>.attempt``, which a later
        start finds and finishes moving when a crash came in between."""
        parked = self.path.with_name(f".{self.path.name}.attempt")
        if self.path.exists() and not parked.exists():
            self.path.rename(parked)
        if not parked.exists():
            return []
        meta = TrialDir(parked).read_meta()
        history = [a for a in meta.get("attempts", []) if isinstance(a, dict)]
        earlier = parked / ATTEMPTS
        self.path.mkdir(parents=True, exist_ok=True)
        if earlier.is_dir() and not self.attempts_dir.exists():
            earlier.rename(self.attempts_dir)
        self.attempts_dir.mkdir(exist_ok=True)
        number = len(history) + 1
        while (self.attempts_dir / str(number)).exists():
            number += 1
        parked.rename(self.attempts_dir / str(number))
        history.append(
            {
                "attempt": number,
                "status": meta.get("status"),
                "error_kind": meta.get("error_kind"),
                "message": meta.get("message", ""),
                "started_at": meta.get("started_at"),
                "finished_at": meta.get("finished_at"),
                "rerun_reason": rerun_reason,
            }
        )
        return history

    def fresh_verifier(self) -> Path:
        """An empty ``verifier/``: whatever the agent may have put there goes first."""
        shutil.rmtree(self.verifier, ignore_errors=True)
        self.verifier.mkdir()
        return self.verifier

    # -- meta.json -------------------------------------------------------------------------
    def write_meta(
        self,
        outcome: TrialOutcome,
        steps: Mapping[str, StepRecord],
        *,
        status: str | None = None,
    ) -> None:
        data = outcome.to_dict()
        if status is not None:
            data["status"] = status
        data["schema_version"] = SCHEMA_VERSION
        data["success"] = data["status"] == PASSED
        data["steps"] = dict(steps)
        write_json_atomic(self.path / META, self.redactor.redact_obj(data))

    def read_meta(self) -> MetaJson:
        """meta.json ({} when missing, torn or not an object)."""
        return read_meta(self.path) or {}

    def recorded_outcome(self, fingerprint: str) -> TrialOutcome | None:
        """The recorded outcome when it still stands for ``--eval-resume``: judged (passed,
        failed or timeout) with an unchanged definition (``fingerprint``); else None."""
        outcome = standing_outcome(self.path, fingerprint)
        if outcome is not None:
            outcome.resumed = True
        return outcome

    def record_outcome(self, outcome: TrialOutcome) -> None:
        """Rewrite meta.json with ``outcome``, keeping the steps already recorded (a crashed
        worker's trial, recorded by the controller)."""
        steps = self.read_meta().get("steps", {})
        self.write_meta(outcome, steps if isinstance(steps, dict) else {})
        self.redact_all()  # the dead worker never masked what its steps wrote

    def update_meta(self, extra: Mapping[str, Any]) -> None:
        """Merge keys into meta.json (the trial's owner is the only writer at that point)."""
        data: dict[str, Any] = dict(self.read_meta())
        if data:
            data.update(extra)
            write_json_atomic(self.path / META, self.redactor.redact_obj(data))

    def previous_outcome_fields(self) -> dict[str, Any]:
        """meta.json's outcome fields (no schema_version, success, steps)."""
        return {k: v for k, v in self.read_meta().items() if k not in _META_ONLY}

    # -- other files -----------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.path / name, self.redactor.redact(text), fsync=False)

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path / name, self.redactor.redact_obj(data), fsync=False)

    def read_text(self, name: str) -> str:
        try:
            return (self.path / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def ensure_files(self, verify_placeholder: Mapping[str, Any]) -> None:
        """The files every trial has, written empty when a step never ran."""
        for name in (STDOUT, DIFF):
            if not (self.path / name).exists():
                write_text_atomic(self.path / name, "", fsync=False)
        if not (self.path / VERIFY).exists():
            self.write_json(VERIFY, dict(verify_placeholder))

    def redact_file(self, name_or_path: str | Path) -> None:
        """Mask secrets in one file (never through a link the agent made)."""
        redact_file(self.path / name_or_path, self.redactor)

    def redact_all(self) -> None:
        """Mask every file of the trial (outputs, artifacts, verifier, workspace; names and
        link targets too), never through a link.  Our own JSON files (masked as written, with
        structure kept) and earlier attempts (masked when they ran) are left alone."""
        redact_tree(
            self.path,
            self.redactor,
            max_bytes=MASK_IN_MEMORY,
            skip=(META, VERIFY, METRICS, ATTEMPTS),
        )

    def redact_tree(self, directory: Path) -> None:
        """Mask secrets in file contents, file names and link targets under ``directory``."""
        redact_tree(directory, self.redactor)

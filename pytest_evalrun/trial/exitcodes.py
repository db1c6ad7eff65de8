"""The exit statuses a ``python:`` step's interpreter (:mod:`.pycall`) gives that are not the
callable's verdict, defined once (:mod:`.steps` and the trial runner read them)."""

#: The callable itself crashed (an exception, or a verifier that exited): not a verdict.
PYCALL_CRASHED = 70
#: The callable could not be imported or found: the step is missing.
PYCALL_NOT_FOUND = 71

"""How gates treat trials that were not judged (``error``): one name for each policy.

``count`` (the default): an error is a trial that did not pass, in every gate (a cell's
min-pass-rate gate, the regression gate). ``exclude``: errors leave the gates as they leave
the pass rates; every report then says so. Pass *rates* never include errors either way.
"""

from __future__ import annotations

from typing import Final

ERRORS_COUNT: Final = "count"
ERRORS_EXCLUDE: Final = "exclude"
ERROR_POLICIES: Final = (ERRORS_COUNT, ERRORS_EXCLUDE)

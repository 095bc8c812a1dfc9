"""Skip-or-fail for a test whose tool or data is missing.

A developer without some optional tool should still be able to run the rest
of the suite, so there a missing tool skips.  On CI (``CI=true``) the same
skip would silently stop testing what the tool checks, so there it fails.
(:mod:`tests.support.node`, :mod:`tests.support.browser` and
:mod:`tests.support.services` apply the same rule to their own tools.)
"""

from __future__ import annotations

import os
from typing import NoReturn

from twisted.trial.unittest import SkipTest


def on_ci() -> bool:
    """Whether the suite runs under CI (``CI=true``, as ``.ci/run`` is run)."""
    return os.environ.get("CI") == "true"


def missing(problem: str) -> NoReturn:
    """Skip the calling test because of ``problem``; fail it under CI."""
    if on_ci():
        raise AssertionError(f"{problem} (CI=true: a missing test tool or test data "
                             f"is a failure, not a skip)")
    raise SkipTest(problem)

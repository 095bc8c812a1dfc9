"""A warning that may come often (bad messages from others) logged at most
once per interval, with a count of what was left out since."""

from __future__ import annotations

from typing import Any

from oro_sync.logs import Logger


class RateLimitedWarning:
    def __init__(self, log: Logger, clock: Any, interval: float = 10.0):
        self.log = log
        self.clock = clock
        self.interval = interval
        self._last = -float("inf")
        self.suppressed = 0

    def __call__(self, fmt: str, **kwargs: Any) -> bool:
        """Log ``fmt`` unless one was logged within the interval; whether it was."""
        now = self.clock.seconds()
        if now - self._last < self.interval:
            self.suppressed += 1
            return False
        self._last = now
        suppressed, self.suppressed = self.suppressed, 0
        self.log.warn(fmt + " ({suppressed} similar left out before this one)",
                      suppressed=suppressed, **kwargs)
        return True

"""The per-connection message budget: every client message costs a token.

A mixin of the server protocol, so that WAMP v1 and v2 sessions share it
without knowing each other: the connection spends a token for each message
(SUBSCRIBE, UNSUBSCRIBE, PREFIX, CALL, PUBLISH, and v2's REGISTER, YIELD...)
before handing it to the session.  Out of tokens, the message at hand is
still handled, then nothing more is read from that client until a token is
back: Autobahn's loop stops at the next frame (what was already read stays
in its buffer, at most one read), and the transport stops reading, so a
flood waits in the kernel's buffers and the client's rather than in ours,
nothing is dropped or reordered, and other clients are served meanwhile.
"""

from __future__ import annotations

from typing import Any

from oro_sync.websocket.limits import MessageBudget


class ReadThrottle:
    """Mixin for the server protocol (see the module docstring)."""

    factory: Any
    transport: Any

    _message_budget: MessageBudget | None = None
    _reading_paused = False
    _resume_timer: Any = None

    def start_message_budget(self, rate: float, burst: int) -> None:
        self._message_budget = MessageBudget(rate, burst, self.factory.clock)

    def spend_message_budget(self) -> None:
        budget = self._message_budget
        if budget is not None:
            wait = budget.spend()
            if wait:
                self._pause_reading(wait)

    def _pause_reading(self, wait: float) -> None:
        factory = self.factory
        factory.metrics.counters["messages_throttled"] += 1
        if self._reading_paused:
            return
        self._reading_paused = True
        factory.repeats.warn(("message_rate", self.session_id),  # type: ignore[attr-defined]
                             "{peer} ({session}) sends more than {rate} messages/s: slowed down",
                             peer=self.peer, session=self.session_id,  # type: ignore[attr-defined]
                             rate=factory.limits.message_rate)
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()
        self._resume_timer = factory.clock.callLater(wait, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume_timer = None
        self._reading_paused = False
        if self.state not in (self.STATE_OPEN, self.STATE_CLOSING):  # type: ignore[attr-defined]
            return
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()
        if self.data:  # type: ignore[attr-defined]  # frames read before the pause
            self.consumeData()  # type: ignore[attr-defined]
            self.account_input()  # type: ignore[attr-defined]

    def _cancel_resume_timer(self) -> None:
        if self._resume_timer is not None:
            if self._resume_timer.active():
                self._resume_timer.cancel()
            self._resume_timer = None

    def processData(self) -> bool:
        # Autobahn's loop handles every frame already read; while paused the
        # rest stays in self.data until _resume_reading.
        if self._reading_paused:
            return False
        return super().processData()  # type: ignore[misc]

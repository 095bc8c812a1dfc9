"""Where ticket digests are computed: worker processes, or inline for tests.

The 5000-round sha512 digest of a sync ticket costs ~5-15 ms of CPU.  On
the reactor thread that would stall every connection, and threads would
not help since ``hashlib`` keeps the GIL for inputs this small, so
:class:`ProcessDigestPool` runs it in worker processes and delivers results
on the reactor thread.  :class:`InlineDigestPool` computes synchronously for
tests and command-line tools.  Both implement :class:`IDigestPool`, which
is all :class:`~oro_sync.auth.verifier.TicketVerifier` needs.

Kept apart from the verifier because the workers import this module: it
should pull in as little as possible.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from oro_sync.auth.ticket_signing import compute_digest
from oro_sync.logs import Logger

__all__ = ["IDigestPool", "InlineDigestPool", "ProcessDigestPool", "compute_digests",
           "exit_with_parent"]

log = Logger(namespace=__name__)

#: Most digests sent to a worker in one task (a task takes ~5-10 ms each).
BATCH_MAX = 8


def compute_digests(requests: list[tuple[str, str, str, str]]) -> list[str]:
    """:func:`compute_digest` of each request: one task carries several, so
    that the reactor process submits (and receives) once per batch."""
    return [compute_digest(*request) for request in requests]


def exit_with_parent() -> None:
    """Worker initializer: run below the server's priority, and exit as soon
    as the server process is gone.

    Each worker holds the call queue's write end, so after a SIGKILL or a
    crash of the server it would never see EOF and would live on forever.
    """
    import threading
    from multiprocessing.connection import wait

    try:
        os.nice(10)  # hashing must not compete with the reactor for a core
    except OSError:
        pass
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class IDigestPool(Interface):
    """Something that computes ticket digests, possibly elsewhere."""

    def compute(nonce: str, created: str, password: str, secret: str) -> Deferred:
        """Fire (on the reactor thread) with
        :func:`~oro_sync.auth.ticket_signing.compute_digest` of the arguments."""

    def shutdown() -> Deferred:
        """Release workers; fire when they are gone."""


@implementer(IDigestPool)
class InlineDigestPool:
    """Computes digests synchronously on the calling thread.

    For tests and command-line tools; a server should not use it, since each
    digest blocks the reactor for several milliseconds.
    """

    def compute(self, nonce: str, created: str, password: str, secret: str) -> Deferred:
        return maybeDeferred(compute_digest, nonce, created, password, secret)

    def shutdown(self) -> Deferred:
        return succeed(None)


@implementer(IDigestPool)
class ProcessDigestPool:
    """Digests computed by a :class:`ProcessPoolExecutor`, results delivered
    on the reactor thread.

    Workers start lazily (the first :meth:`compute`), number
    ``os.cpu_count()`` by default, and are started with the ``spawn`` method:
    forking a process that runs a reactor and threads is unsafe.  They are
    shut down before the reactor shuts down (or by :meth:`shutdown`).  A
    worker that dies breaks the executor; the affected computations fail and
    the next one starts a fresh executor.

    As with any ``spawn``-based multiprocessing, workers import the
    program's main module: a script that starts the reactor must do so under
    ``if __name__ == "__main__":`` (``twistd`` and console scripts do).
    """

    def __init__(self, reactor: Any = None, max_workers: int | None = None,
                 mp_context: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self._reactor = reactor
        self.max_workers = max(1, max_workers or os.cpu_count() or 1)
        self._mp_context = mp_context or multiprocessing.get_context("spawn")
        self._executor: ProcessPoolExecutor | None = None
        self._trigger: Any = None
        self._closed = False
        #: Number of digests submitted (for metrics and tests).
        self.submitted = 0
        #: Digests asked for in this reactor turn, submitted together at its end.
        self._batch: list[tuple[tuple[str, str, str, str], Deferred]] = []
        self._flush_call: Any = None

    @property
    def running(self) -> bool:
        return self._executor is not None

    def start(self) -> Deferred:
        """Spawn every worker now; fire when all have answered once.

        Optional: a spawned worker needs up to a second to start (a fresh
        interpreter importing this module and the program's main module), so
        a server may call this at start-up rather than make the first
        connections wait.
        """
        try:
            executor = self._ensure_executor()
        except Exception:
            return fail()
        return gatherResults(
            [self._submit(executor, compute_digest, "", "", "", "warm-up", 1)
             for _ in range(self.max_workers)],
            consumeErrors=True,
        ).addCallback(lambda _: None)

    def _ensure_executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the digest pool has been shut down")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.max_workers, mp_context=self._mp_context,
                initializer=exit_with_parent)
            if self._trigger is None:
                self._trigger = self._reactor.addSystemEventTrigger(
                    "before", "shutdown", self._reactor_shutting_down)
            log.debug("Started ticket digest pool ({n} worker processes)", n=self.max_workers)
        return self._executor

    def compute(self, nonce: str, created: str, password: str, secret: str) -> Deferred:
        # Batched per reactor turn: each executor.submit() takes a lock the
        # executor's manager thread also takes, and the reactor thread then
        # waits for the GIL (up to the 5 ms switch interval) per submit:
        # measured at a quarter of the reactor's time in a reconnect storm.
        try:
            self._ensure_executor()
        except Exception:
            return fail()
        self.submitted += 1
        entry: tuple[tuple[str, str, str, str], Deferred]
        d: Deferred = Deferred(lambda _: self._unbatch(entry))
        entry = ((nonce, created, password, secret), d)
        self._batch.append(entry)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _unbatch(self, entry: Any) -> None:
        try:
            self._batch.remove(entry)
        except ValueError:  # already submitted: its result will be ignored
            pass

    def _flush(self) -> None:
        """Submit this turn's digests, in at most ``max_workers`` tasks per
        :data:`BATCH_MAX` digests so that every worker gets a share."""
        self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            executor = self._ensure_executor()
        except Exception:
            failure = Failure()
            for _, d in batch:
                d.errback(failure)
            return
        size = max(1, min(BATCH_MAX, -(-len(batch) // self.max_workers)))
        for i in range(0, len(batch), size):
            chunk = batch[i:i + size]
            self._submit(executor, compute_digests, [args for args, _ in chunk]).addCallbacks(
                self._chunk_done, self._chunk_failed, callbackArgs=(chunk,), errbackArgs=(chunk,))

    @staticmethod
    def _chunk_done(digests: list[str], chunk: list[Any]) -> None:
        for digest, (_, d) in zip(digests, chunk):
            if not d.called:  # cancelled meanwhile
                d.callback(digest)

    @staticmethod
    def _chunk_failed(failure: Failure, chunk: list[Any]) -> None:
        for _, d in chunk:
            if not d.called:
                d.errback(failure)

    def _submit(self, executor: ProcessPoolExecutor, fn: Any, *args: Any) -> Deferred:
        try:
            future = executor.submit(fn, *args)
        except BrokenProcessPool as e:
            self._discard(executor)
            return fail(e)
        except Exception:
            return fail()
        d: Deferred = Deferred(lambda _: future.cancel())

        def done(f: Future) -> None:
            # Runs in the executor's management thread (or right here if the
            # future is already done): hop to the reactor thread.
            self._reactor.callFromThread(self._deliver, f, d, executor)

        future.add_done_callback(done)
        return d

    def _deliver(self, future: Future, d: Deferred, executor: ProcessPoolExecutor) -> None:
        if d.called:  # cancelled by the caller
            return
        if future.cancelled():
            d.cancel()
            return
        exc = future.exception()
        if exc is None:
            d.callback(future.result())
            return
        if isinstance(exc, BrokenProcessPool):
            self._discard(executor)
        d.errback(Failure(exc))

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Forget a broken executor so that the next computation makes a new one."""
        if self._executor is executor:
            log.error("Ticket digest worker process died; restarting the pool")
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)

    def _reactor_shutting_down(self) -> Deferred:
        self._trigger = None
        return self.shutdown()

    def shutdown(self) -> Deferred:
        """Stop the workers (pending computations are cancelled)."""
        self._closed = True
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        batch, self._batch = self._batch, []
        for _, d in batch:
            d.errback(Failure(RuntimeError("the digest pool has been shut down")))
        if self._trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._trigger)
            except (KeyError, ValueError):
                pass
            self._trigger = None
        executor, self._executor = self._executor, None
        if executor is None:
            return succeed(None)
        # Joining the workers blocks; do it in a thread so the reactor keeps
        # running (e.g. to deliver the cancellations).
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                 executor.shutdown, True, cancel_futures=True)

"""WebSocket protocol conformance of oro-sync's transport and send path.

Why: the WAMP fan-out path frames events itself
(:func:`oro_sync.core.frames.frame`) and writes them straight to the
transport, bypassing Autobahn's own (well-tested) ``sendMessage``.  That
hand-built framing is only trustworthy if a real conformance suite agrees.
These tests start :mod:`tests.support.echo` (Autobahn's receive side with
WampServerFactory's options, replies through ``frame()`` +
``transport.write``) in the trial reactor, and drive it with kosoku's
fuzzing client -- the Autobahn TestSuite cases -- as a child process so the
reactor keeps serving meanwhile.

One trial test per case group (1.x framing, 2.x pings, ...), so a failure
names its area; each asserts that every case of the group ran and was
scored OK or NON-STRICT (INFORMATIONAL only for the cases the suite itself
declares informational).  The failure message lists each offending case
with kosoku's verdicts and prose, and keeps the report directory.

kosoku's frame parser is lax in two MUST-level points of RFC 6455 that are
exactly what hand-built framing gets wrong: it accepts *masked* server
frames (5.1) and *non-minimal* payload length encodings (5.2).  So
:class:`StrictFramingTests` adds Autobahn's own client, which rejects both,
at every length-encoding boundary; negative controls prove each detector
actually fires.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet import reactor as _global_reactor
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.support import ci, echo

try:
    import kosoku  # noqa: F401  (only probed: kosoku itself runs in a child)
except ImportError:  # setUp skips, or fails under CI=true
    kosoku = None

reactor: Any = _global_reactor

#: Verdicts a conformant server may get for a case's message exchange.
ACCEPTED_BEHAVIOR = frozenset({"OK", "NON-STRICT"})
#: Verdicts a conformant server may get for a case's closing handshake.
ACCEPTED_BEHAVIOR_CLOSE = frozenset({"OK"})
INFORMATIONAL = "INFORMATIONAL"

#: Parallel cases per kosoku run.  Cases are independent connections; 4 keeps
#: a clean run fast and a broken one (where each case waits out its own
#: 1-10 s timers) inside its budget.  The 9.x timing cases run one at a time.
PARALLELISM = 4

#: Trial's own per-test ceiling; every kosoku budget below is smaller, so a
#: hang is reported by us (with kosoku's output), not as a bare timeout.
TRIAL_TIMEOUT = 90

#: Failing cases described in full in a failure message (all are listed by id).
MAX_DETAILED = 30


# -- running kosoku -----------------------------------------------------------


@dataclass
class ProcessOutcome:
    """What a child process did: exit status, output, and whether we killed it."""

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    timed_out: bool


class _Collector(protocol.ProcessProtocol):
    """Buffers a child's output and fires ``done`` when it has exited."""

    def __init__(self, done: defer.Deferred[ProcessOutcome]) -> None:
        self.done = done
        self.out = bytearray()
        self.err = bytearray()
        self.timed_out = False

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        if self.done.called:  # cancelled (trial timed the test out)
            return
        value = reason.value
        self.done.callback(ProcessOutcome(
            exit_code=getattr(value, "exitCode", None),
            signal=getattr(value, "signal", None),
            stdout=self.out.decode("utf-8", "replace"),
            stderr=self.err.decode("utf-8", "replace"),
            timed_out=self.timed_out,
        ))


def run_process(argv: Sequence[str], timeout: float) -> defer.Deferred[ProcessOutcome]:
    """Run ``argv`` without blocking the reactor; SIGKILL it after ``timeout`` s.

    The echo server lives in this very reactor, so the child must be waited
    for asynchronously (``spawnProcess``), never with ``subprocess.run``.
    """
    def kill(_: object = None) -> None:
        collector.timed_out = True
        try:
            transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    # Cancelling (trial does, on its own timeout) must not orphan the child.
    done: defer.Deferred[ProcessOutcome] = defer.Deferred(kill)
    collector = _Collector(done)
    transport = reactor.spawnProcess(collector, argv[0], list(argv), env=dict(os.environ))

    killer = reactor.callLater(timeout, kill)

    def disarm(outcome: ProcessOutcome) -> ProcessOutcome:
        if killer.active():
            killer.cancel()
        return outcome

    return done.addBoth(disarm)


#: kosoku's CLI, ended with ``os._exit`` instead of interpreter shutdown.
#:
#: Why: kosoku is a Rust extension (PyO3 + a multi-threaded tokio runtime)
#: whose runtime threads outlive ``asyncio.run``: a case task that completes
#: late wakes the (already finished) asyncio loop from a tokio worker, via
#: ``call_soon_threadsafe`` -> ``socket.send``, which releases and re-takes
#: the GIL.  If the main thread is inside ``Py_FinalizeEx`` by then,
#: CPython < 3.14 ends the re-taking thread with ``pthread_exit``; its forced
#: unwind cannot pass the Rust frames, and glibc aborts the process (SIGABRT,
#: nothing printed) -- after every case passed and the report was written.
#: Skipping finalization once the CLI is done (report files closed, stdio
#: flushed) removes the window; the exit status is the CLI's own
#: (0 passed, 1 some case failed, 2 usage), 70 for an unexpected exception.
_KOSOKU_MAIN = """\
import os, sys, traceback
sys.argv[0] = "kosoku"
code = 70
try:
    from kosoku._cli import main
    main()
    code = 0
except SystemExit as exit:
    if exit.code is None or isinstance(exit.code, int):
        code = exit.code or 0
    else:
        print(exit.code, file=sys.stderr)
        code = 1
except BaseException:
    traceback.print_exc()
finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
"""


def kosoku_command() -> list[str]:
    """kosoku's CLI (``kosoku._cli.main``) in this interpreter (the venv trial
    runs in), wrapped by :data:`_KOSOKU_MAIN` so it cannot abort at exit."""
    return [sys.executable, "-c", _KOSOKU_MAIN]


#: Prints kosoku's case ids as JSON.  Importing ``kosoku.cases`` rewrites
#: ``sys.path`` (it puts a py2-era ``autobahn`` shim first) and patches
#: ``binascii``, so that must happen in a throwaway interpreter, not in trial.
_LIST_CASES = "import json, kosoku.cases as c; print(json.dumps(list(c.CASES)))"

_all_case_ids: list[str] | None = None


@defer.inlineCallbacks
def kosoku_case_ids(globs: Sequence[str]) -> Any:
    """The case ids kosoku selects for ``globs`` (its ``-i`` matching is
    ``fnmatch``-style), asked once per test run.  Used to prove a run
    reported on *every* selected case, not just on the ones that finished."""
    global _all_case_ids
    if _all_case_ids is None:
        outcome = yield run_process([sys.executable, "-c", _LIST_CASES], timeout=30)
        if outcome.exit_code != 0:
            raise RuntimeError(f"listing kosoku cases failed: {outcome.stderr[-2000:]}")
        _all_case_ids = json.loads(outcome.stdout)
    selected = [cid for cid in _all_case_ids if any(fnmatch.fnmatchcase(cid, g) for g in globs)]
    return selected


def suite_informational_cases() -> frozenset[str]:
    """Case ids whose class unconditionally scores itself INFORMATIONAL.

    Read from kosoku's vendored case sources (``case7_1_6.py`` ...), so the
    allowance follows the suite's own definition instead of a hand list;
    these are the cases where RFC 6455 leaves the outcome undefined.
    """
    if kosoku is None:
        return frozenset()
    cases_dir = Path(kosoku.__file__).parent / "cases"
    marker = re.compile(r"self\.behavior\s*=\s*Case\.INFORMATIONAL")
    found = set()
    for source in cases_dir.glob("case*.py"):
        if marker.search(source.read_text(encoding="utf-8")):
            found.add(source.stem.removeprefix("case").replace("_", "."))
    return frozenset(found)


# -- reading kosoku's report ---------------------------------------------------


@dataclass
class CaseVerdict:
    """One case as kosoku scored it (from its Autobahn-format report)."""

    case_id: str
    behavior: str
    behavior_close: str
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """kosoku's own words for the case, for a readable failure message."""
        d = self.detail
        parts = [f"{self.case_id}: behavior={self.behavior}, behaviorClose={self.behavior_close}"]
        if d.get("result"):
            parts.append(f"result: {d['result']}")
        if d.get("resultClose"):
            parts.append(f"close: {d['resultClose']}")
        parts.append(f"remote close code {d.get('remoteCloseCode')!r}")
        if d.get("wasNotCleanReason"):
            parts.append(f"not clean: {d['wasNotCleanReason']}")
        if d.get("description"):
            parts.append(f"case: {' '.join(str(d['description']).split())[:160]}")
        return "; ".join(parts)


def read_report(outdir: Path) -> dict[str, CaseVerdict]:
    """Parse ``index.json`` and each per-case JSON that kosoku wrote."""
    index = json.loads((outdir / "index.json").read_text(encoding="utf-8"))
    verdicts: dict[str, CaseVerdict] = {}
    for agent_cases in index.values():
        for case_id, entry in agent_cases.items():
            detail: dict[str, Any] = {}
            report_file = outdir / entry.get("reportfile", "")
            if report_file.is_file():
                detail = json.loads(report_file.read_text(encoding="utf-8"))
            verdicts[case_id] = CaseVerdict(case_id, entry["behavior"], entry["behaviorClose"], detail)
    return verdicts


def unacceptable(verdicts: dict[str, CaseVerdict], informational: frozenset[str]) -> list[CaseVerdict]:
    """Cases a conformant server must not get: anything but OK / NON-STRICT
    (and a clean, expected close), except INFORMATIONAL where the suite
    declares the case informational."""
    bad = []
    for verdict in verdicts.values():
        allowed = ACCEPTED_BEHAVIOR | ({INFORMATIONAL} if verdict.case_id in informational else set())
        allowed_close = ACCEPTED_BEHAVIOR_CLOSE | (
            {INFORMATIONAL} if verdict.case_id in informational else set())
        if verdict.behavior not in allowed or verdict.behavior_close not in allowed_close:
            bad.append(verdict)
    return bad


@dataclass
class KosokuRun:
    """A finished kosoku run: its selection, process outcome and verdicts."""

    globs: list[str]
    expected_ids: list[str]
    outdir: Path
    outcome: ProcessOutcome
    verdicts: dict[str, CaseVerdict] | None
    failing: list[CaseVerdict] = field(default_factory=list)

    def problems(self, judge: Callable[[dict[str, CaseVerdict]], list[CaseVerdict]]) -> list[str]:
        """Everything wrong with the run, one line each (empty = passed).

        Sets :attr:`failing` to the verdicts ``judge`` rejected.
        """
        out = self.outcome
        self.failing = []
        if out.timed_out:
            return [f"kosoku did not finish within its budget and was killed; it writes "
                    f"its report only at the end, so there are no per-case verdicts "
                    f"(re-run by hand: kosoku <url> -i {' -i '.join(self.globs)})"]
        if self.verdicts is None:
            return [f"kosoku wrote no report (exit code {out.exit_code}, signal {out.signal})"]
        if out.exit_code not in (0, 1):  # 1 = "some case did not pass"
            return [f"kosoku crashed (exit code {out.exit_code}, signal {out.signal})"]
        lines = []
        if not self.expected_ids:
            lines.append(f"kosoku has no cases matching {self.globs}")
        missing = [cid for cid in self.expected_ids if cid not in self.verdicts]
        if missing:
            lines.append(f"no verdict for {len(missing)} selected case(s): {', '.join(missing)}")
        self.failing = sorted(judge(self.verdicts), key=lambda v: _id_key(v.case_id))
        lines.extend(v.describe() for v in self.failing)
        return lines

    def failure_message(self, problems: list[str]) -> str:
        """The assertion message: failing case ids, kosoku's words on each (the
        first :data:`MAX_DETAILED`), and where the full report was kept."""
        head = [f"WebSocket conformance ({', '.join(self.globs)}): {len(problems)} problem(s)"]
        if self.failing:
            head.append(f"failing cases: {', '.join(v.case_id for v in self.failing)}")
        body = [f"  {p}" for p in problems[:MAX_DETAILED]]
        if len(problems) > MAX_DETAILED:
            body.append(f"  ... and {len(problems) - MAX_DETAILED} more, see the report")
        foot = [f"kosoku report kept in {self.outdir}"]
        if (self.verdicts is None or self.outcome.timed_out
                or self.outcome.exit_code not in (0, 1)):
            # No report to read, or kosoku died: its own output is all there is.
            tail = (self.outcome.stderr + self.outcome.stdout).strip()[-3000:]
            foot.append(f"kosoku output:\n{tail}" if tail else "kosoku printed nothing")
        return "\n".join(head + body + foot)


def _id_key(case_id: str) -> list[int]:
    """Numeric case order: 6.2.10 after 6.2.9."""
    return [int(part) for part in case_id.split(".")]


# -- the echo server under test ------------------------------------------------


class EchoServerMixin:
    """Runs :mod:`tests.support.echo` on 127.0.0.1, port 0, for one test."""

    server: echo.EchoServer
    url: str

    def start_echo(self, test: unittest.TestCase,
                   max_message_size: int = echo.CONFORMANCE_MAX_MESSAGE_SIZE) -> None:
        self.server = echo.listen_echo(reactor, maxMessageSize=max_message_size)
        self.url = self.server.url
        # Cleanups run LIFO: first drop whatever is still connected (a killed
        # kosoku can leave half-open sockets), then stop listening.
        test.addCleanup(self.server.port.stopListening)
        test.addCleanup(self.server.factory.drop_all)


# -- kosoku, one test per case group -------------------------------------------


class KosokuConformanceTests(EchoServerMixin, unittest.TestCase):
    """kosoku's fuzzing client (Autobahn TestSuite cases) against the echo.

    Needs 16 MiB messages (9.1.6 / 9.2.6): the echo gets
    :data:`echo.CONFORMANCE_MAX_MESSAGE_SIZE` instead of the WAMP default of
    1 MiB, which would close those with 1009 and score 9.1.4-9.1.6,
    9.2.4-9.2.6 (and the 4 MiB 9.3.x / 9.4.x) FAILED.
    """

    timeout = TRIAL_TIMEOUT

    def setUp(self) -> None:
        if kosoku is None:
            ci.missing("kosoku is not installed in the test venv (pip install kosoku)")
        self.start_echo(self)
        self.informational = suite_informational_cases()

    @defer.inlineCallbacks
    def run_kosoku(self, globs: Sequence[str], *, budget: float,
                   parallelism: int = PARALLELISM) -> Any:
        """Run kosoku on ``globs`` against the echo; return a :class:`KosokuRun`.

        Reports go to a fresh directory outside the repository; it is
        removed when the test passes and kept (and named) when it fails.
        """
        globs = list(globs)
        expected_ids = yield kosoku_case_ids(globs)
        outdir = Path(tempfile.mkdtemp(prefix="oro-sync-kosoku-"))
        argv = kosoku_command() + [self.url, "-p", str(parallelism), "-o", str(outdir)]
        for glob in globs:
            argv += ["-i", glob]
        outcome = yield run_process(argv, timeout=budget)
        verdicts = read_report(outdir) if (outdir / "index.json").is_file() else None
        return KosokuRun(globs, expected_ids, outdir, outcome, verdicts)

    @defer.inlineCallbacks
    def assert_conformant(self, globs: Sequence[str], *, budget: float,
                          parallelism: int = PARALLELISM) -> Any:
        """Every selected case ran and was scored acceptably."""
        run = yield self.run_kosoku(globs, budget=budget, parallelism=parallelism)
        problems = run.problems(lambda v: unacceptable(v, self.informational))
        if problems:
            self.fail(run.failure_message(problems))
        shutil.rmtree(run.outdir, ignore_errors=True)
        return run

    def test_group_01_framing(self) -> defer.Deferred[Any]:
        """1.x: text/binary payloads of 0..65536 bytes, across every length
        encoding boundary of frame() (7-bit, 16-bit, 64-bit)."""
        return self.assert_conformant(["1.*"], budget=30)

    def test_group_02_pings_pongs(self) -> defer.Deferred[Any]:
        """2.x: pings answered with matching pongs (Autobahn's side of the
        protocol, but it shares the transport with frame()'s writes)."""
        return self.assert_conformant(["2.*"], budget=30)

    def test_group_03_reserved_bits(self) -> defer.Deferred[Any]:
        """3.x: frames with RSV bits fail the connection; the echo of the
        message before them must already be on the wire, intact."""
        return self.assert_conformant(["3.*"], budget=30)

    def test_group_04_opcodes(self) -> defer.Deferred[Any]:
        """4.x: reserved opcodes fail the connection after a correct echo."""
        return self.assert_conformant(["4.*"], budget=30)

    def test_group_05_fragmentation(self) -> defer.Deferred[Any]:
        """5.x: fragmented input is echoed as one frame() frame, interleaved
        with Autobahn's pongs without corrupting either."""
        return self.assert_conformant(["5.*"], budget=30)

    def test_group_06_utf8(self) -> defer.Deferred[Any]:
        """6.x: valid UTF-8 is echoed byte for byte, invalid closes with 1007."""
        return self.assert_conformant(["6.*"], budget=40)

    @defer.inlineCallbacks
    def test_group_07_close(self) -> Any:
        """7.x; 7.1.6 and 7.13.x are informational by the suite's definition
        (RFC 6455 leaves their outcome open) and must still complete."""
        self.assertTrue({"7.1.6", "7.13.1", "7.13.2"} <= self.informational,
                        "kosoku's informational cases changed: review the allowance")
        yield self.assert_conformant(["7.*"], budget=30)

    def test_group_09_limits(self) -> defer.Deferred[Any]:
        """9.x: messages up to 16 MiB, one case at a time (they are timed)."""
        return self.assert_conformant(["9.*"], budget=60, parallelism=1)

    def test_group_10_misc(self) -> defer.Deferred[Any]:
        """10.x: a 64 KiB message received in 1300-byte fragments."""
        return self.assert_conformant(["10.*"], budget=30)

    @defer.inlineCallbacks
    def test_group_12_13_compression_declined(self) -> Any:
        """12.x/13.x need permessage-deflate, which WampServerFactory does not
        negotiate (and frame() never compresses).  Assert the precise outcome:
        each case is UNIMPLEMENTED with a proper close -- the offer is declined
        and the connection still behaves -- rather than FAILED."""
        run = yield self.run_kosoku(["12.*", "13.*"], budget=30)

        def judge(verdicts: dict[str, CaseVerdict]) -> list[CaseVerdict]:
            return [v for v in verdicts.values()
                    if (v.behavior, v.behavior_close) != ("UNIMPLEMENTED", "OK")]

        problems = run.problems(judge)
        if problems:
            self.fail(run.failure_message(problems))
        shutil.rmtree(run.outdir, ignore_errors=True)

    @defer.inlineCallbacks
    def test_control_corrupted_echo_is_reported(self) -> Any:
        """Negative control: a corrupted echo must come back as a failure that
        names the case -- proof the report parsing is not vacuous."""
        def corrupting_frame(payload: bytes, opcode: int = echo.OPCODE_TEXT) -> bytes:
            if payload:
                payload = payload[:-1] + (b"#" if payload[-1:] != b"#" else b"$")
            return echo.FRAME_UNPATCHED(payload, opcode)

        self.patch(echo, "frame", corrupting_frame)
        run = yield self.run_kosoku(["1.1.2"], budget=30)
        problems = run.problems(lambda v: unacceptable(v, self.informational))
        self.assertEqual(len(problems), 1, run.failure_message(problems))
        self.assertTrue(problems[0].startswith("1.1.2: behavior=FAILED"), problems[0])
        self.assertIn("differ", problems[0])
        shutil.rmtree(run.outdir, ignore_errors=True)


# -- strict framing checks that kosoku does not make ---------------------------


#: Payload lengths around each of frame()'s length-encoding switches.
BOUNDARY_LENGTHS = (0, 1, 125, 126, 127, 65535, 65536, 65537)


def _payload(n: int, binary: bool) -> bytes:
    """Distinct, position-dependent bytes (ASCII for text) so that a dropped,
    repeated or shifted byte is visible, not just a wrong length."""
    if binary:
        return bytes((i * 7 + n) % 256 for i in range(n))
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return bytes(alphabet[(i + n) % len(alphabet)] for i in range(n))


@dataclass
class StrictResult:
    """How a strict Autobahn client's echo session ended."""

    received: list[tuple[bytes, bool]]
    was_clean: bool
    code: int | None
    reason: str | None


class _StrictClient(WebSocketClientProtocol):
    """Sends every message, collects echoes, closes with 1000 when all are back.

    Autobahn's client fails the connection on masked server frames and on
    non-minimal length encodings, both of which kosoku lets through.
    """

    factory: "_StrictClientFactory"

    def onOpen(self) -> None:
        for payload, is_binary in self.factory.messages:
            self.sendMessage(payload, isBinary=is_binary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append((payload, isBinary))
        if len(self.factory.received) == len(self.factory.messages):
            self.sendClose(1000)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.close_info = (wasClean, code, reason)

    def connectionLost(self, reason: Failure) -> None:
        # Fire only once TCP is gone, so the test leaves a clean reactor.
        super().connectionLost(reason)
        echo.cancel_batched_timers(self.factory)
        was_clean, code, why = self.factory.close_info
        if not self.factory.done.called:
            self.factory.done.callback(StrictResult(self.factory.received, was_clean, code, why))


class _StrictClientFactory(WebSocketClientFactory):
    protocol = _StrictClient

    def __init__(self, url: str, messages: list[tuple[bytes, bool]]) -> None:
        super().__init__(url)
        self.messages = messages
        self.received: list[tuple[bytes, bool]] = []
        self.close_info: tuple[bool, int | None, str | None] = (False, None, None)
        self.done: defer.Deferred[StrictResult] = defer.Deferred()
        # Defaults are already strict; spelled out because they are the point.
        self.setProtocolOptions(acceptMaskedServerFrames=False, utf8validateIncoming=True)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.done.called:
            self.done.errback(reason)


def _non_minimal_frame(payload: bytes, opcode: int = echo.OPCODE_TEXT) -> bytes:
    """Always the 64-bit length form: legal-looking, but RFC 6455 5.2 says
    the minimal encoding MUST be used.  kosoku accepts this."""
    return struct.pack("!BBQ", 0x80 | opcode, 127, len(payload)) + payload


def _masked_frame(payload: bytes, opcode: int = echo.OPCODE_TEXT) -> bytes:
    """A correctly masked frame -- which a server MUST NOT send (RFC 6455
    5.1).  kosoku unmasks and accepts it."""
    key = b"\x11\x22\x33\x44"
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class StrictFramingTests(EchoServerMixin, unittest.TestCase):
    """frame() checked by Autobahn's strict client at the length boundaries."""

    timeout = 30

    def setUp(self) -> None:
        self.start_echo(self)

    def echo_session(self, messages: list[tuple[bytes, bool]]) -> defer.Deferred[StrictResult]:
        factory = _StrictClientFactory(self.url, messages)
        address = self.server.port.getHost()
        reactor.connectTCP(address.host, address.port, factory, timeout=10)
        return factory.done

    @defer.inlineCallbacks
    def test_boundary_lengths_round_trip(self) -> Any:
        """Every boundary length, text and binary, comes back byte-identical
        in a frame the strict client accepts, and the close is clean."""
        messages = [(_payload(n, binary), binary)
                    for binary in (False, True) for n in BOUNDARY_LENGTHS]
        result = yield self.echo_session(messages)
        self.assertEqual(len(result.received), len(messages),
                         f"echoes lost; closed with {result.code} {result.reason!r}")
        for (sent, sent_binary), (got, got_binary) in zip(messages, result.received):
            self.assertEqual((len(got), got_binary), (len(sent), sent_binary))
            self.assertEqual(got, sent, f"payload of length {len(sent)} altered")
        self.assertTrue(result.was_clean, f"unclean close: {result.code} {result.reason!r}")
        self.assertEqual(result.code, 1000)

    @defer.inlineCallbacks
    def assert_rejected(self, bad_frame: Callable[[bytes, int], bytes], because: str) -> Any:
        """With ``bad_frame`` in place of frame(), the strict client must fail
        the connection before accepting the echo, for the reason named."""
        self.patch(echo, "frame", bad_frame)
        result = yield self.echo_session([(_payload(10, False), False)])
        self.assertEqual(result.received, [])
        self.assertFalse(result.was_clean)
        self.assertNotEqual(result.code, 1000)
        self.assertIn(because, result.reason or "")

    def test_detects_non_minimal_length(self) -> defer.Deferred[Any]:
        """Negative control for a check kosoku does not make (RFC 6455 5.2)."""
        return self.assert_rejected(_non_minimal_frame, "minimal length encoding")

    def test_detects_masked_server_frame(self) -> defer.Deferred[Any]:
        """Negative control for a check kosoku does not make (RFC 6455 5.1)."""
        return self.assert_rejected(_masked_frame, "masked server-to-client frame")

    def test_detects_reserved_bits(self) -> defer.Deferred[Any]:
        """Negative control: kosoku checks RSV only in cases that keep a wire
        log, i.e. not in 9.x (the large messages); this client always does."""
        def rsv1_frame(payload: bytes, opcode: int = echo.OPCODE_TEXT) -> bytes:
            framed = echo.FRAME_UNPATCHED(payload, opcode)
            return bytes((framed[0] | 0x40,)) + framed[1:]
        return self.assert_rejected(rsv1_frame, "RSV = 4")


class EchoMirrorsWampOptionsTests(unittest.TestCase):
    """The echo is only evidence about the WAMP server if it is configured
    like it; guard that the copy stays complete."""

    def test_options_match_wamp_factory(self) -> None:
        from oro_sync.websocket.factory import WampServerFactory

        wamp = WampServerFactory()
        ours = echo.FramesEchoFactory()
        for name in echo.MIRRORED_OPTIONS:
            mine, theirs = getattr(ours, name), getattr(wamp, name)
            if callable(theirs):  # e.g. the "decline compression" lambda,
                mine, theirs = mine.__code__, theirs.__code__  # one per factory
            self.assertEqual(mine, theirs, name)
        self.assertFalse(ours.failByDrop)
        self.assertEqual(ours.maxMessagePayloadSize, wamp.maxMessagePayloadSize)
        self.assertEqual(ours.maxFramePayloadSize, wamp.maxFramePayloadSize)
        big = echo.FramesEchoFactory(maxMessageSize=echo.CONFORMANCE_MAX_MESSAGE_SIZE)
        self.assertEqual(big.maxMessagePayloadSize, 16 * 1024 * 1024)
        self.assertEqual(big.maxFramePayloadSize, 16 * 1024 * 1024)

    def test_every_option_is_mirrored(self) -> None:
        """If Autobahn grows a protocol option, decide whether to mirror it:
        every attribute resetProtocolOptions() sets must be copied, except
        the size limits the echo sets on purpose."""
        from types import SimpleNamespace

        from autobahn.twisted.websocket import WebSocketServerFactory

        defaults = SimpleNamespace()
        WebSocketServerFactory.resetProtocolOptions(defaults)  # type: ignore[arg-type]
        not_mirrored = set(vars(defaults)) - set(echo.MIRRORED_OPTIONS)
        self.assertEqual(not_mirrored, {"maxMessagePayloadSize", "maxFramePayloadSize"})

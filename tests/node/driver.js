#!/usr/bin/env node
/*
 * A scriptable WAMP v1 client for oro-sync's end-to-end tests.
 *
 * Why this exists: the Python tests want to prove that a real, third-party
 * WAMP v1 client (the npm package `wamp1`, over the `ws` WebSocket library)
 * interoperates with oro-sync over a real TCP socket.  The Python side
 * (tests/support/node.py) spawns one of these per simulated peer and drives
 * it line by line, so a single trial test can orchestrate several peers and
 * wait on what each of them saw.
 *
 * Usage: node driver.js ws://127.0.0.1:PORT [subprotocol]
 *
 * stdin: one JSON command per line:
 *   {"op": "prefix", "prefix": P, "uri": U}
 *   {"op": "subscribe", "topic": T}
 *   {"op": "unsubscribe", "topic": T}
 *   {"op": "publish", "args": [T, event, ...extras]}  -> [7, T, event, ...extras]
 *   {"op": "call", "tag": ID, "uri": U, "args": [...]} -> [2, <random>, U, ...args]
 *   {"op": "close"}                                  -> WebSocket close 1000
 *
 * stdout: one JSON report per line.  Every report triggered by a server
 * message carries `frame`, the raw JSON array as received, so the tests can
 * check the exact wire layout (arity, types) and not only what the `wamp1`
 * library chose to expose:
 *   {"type": "welcome", "sessionId", "version", "server", "protocol", "frame"}
 *   {"type": "event", "topic", "event", "frame"}
 *   {"type": "callresult", "tag", "result", "frame"}
 *   {"type": "callerror", "tag", "uri", "desc", "details", "frame"}
 *   {"type": "unexpected", "frame"}     (a message wamp1 does not surface)
 *   {"type": "error", "message"}        (socket or library error)
 *   {"type": "closed", "code", "reason"} (then the process exits)
 */
"use strict";

const readline = require("readline");
const WebSocket = require("ws");
const Wamp = require("wamp1");

const url = process.argv[2];
const subprotocol = process.argv.length > 3 ? process.argv[3] : "wamp";

/** Write one report line; pipes are synchronous on POSIX, so order is kept. */
function report(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

if (!url) {
	report({ type: "error", message: "usage: driver.js ws://host:port [subprotocol]" });
	process.exit(2);
}

const socket = subprotocol ? new WebSocket(url, subprotocol) : new WebSocket(url);

// Registered before `new Wamp(socket)` so that it runs first for every
// message: the library's callbacks below can then report the raw frame.
let lastFrame = null;
socket.on("message", (data, isBinary) => {
	try {
		lastFrame = JSON.parse(String(data));
	} catch (e) {
		lastFrame = null;
		report({ type: "error", message: "server sent invalid JSON: " + String(data), binary: isBinary });
		return;
	}
	// WELCOME, CALLRESULT, CALLERROR and EVENT are surfaced by wamp1 itself.
	const kind = Array.isArray(lastFrame) ? lastFrame[0] : undefined;
	if (![0, 3, 4, 8].includes(kind)) {
		report({ type: "unexpected", frame: lastFrame });
	}
});

const wamp = new Wamp(socket, (info) => {
	report({
		type: "welcome",
		sessionId: info.sessionId,
		version: info.version,
		server: info.server,
		protocol: socket.protocol,
		frame: lastFrame,
	});
});

// Every EVENT, with the topic exactly as it was on the wire (wamp1 also
// re-emits it under prefixed/expanded names to per-topic listeners, which
// would hide whether the server sent the full URI).
wamp.on("event", (topic, event) => {
	report({ type: "event", topic: topic, event: event, frame: lastFrame });
});

// Without a listener an EventEmitter "error" would crash the driver.
wamp.on("error", (err) => report({ type: "error", message: String(err && err.message) }));
socket.on("error", (err) => report({ type: "error", message: String(err && err.message) }));

socket.on("close", (code, reason) => {
	report({ type: "closed", code: code, reason: String(reason) });
	// Nothing else to do once the peer is gone: stop reading commands too.
	process.exit(0);
});

/** Subscription callbacks are required by wamp1; EVENTs are reported above. */
function ignore() {}

function handle(cmd) {
	switch (cmd.op) {
		case "prefix":
			wamp.prefix(cmd.prefix, cmd.uri);
			break;
		case "subscribe":
			wamp.subscribe(cmd.topic, ignore);
			break;
		case "unsubscribe":
			wamp.unsubscribe(cmd.topic);
			break;
		case "publish":
			wamp.publish.apply(wamp, cmd.args);
			break;
		case "call": {
			const args = [cmd.uri].concat(cmd.args || []);
			args.push((err, result) => {
				if (err) {
					const out = { type: "callerror", tag: cmd.tag, uri: err.uri, desc: err.message, frame: lastFrame };
					if (Object.prototype.hasOwnProperty.call(err, "details")) {
						out.details = err.details;
					}
					report(out);
				} else {
					report({ type: "callresult", tag: cmd.tag, result: result === undefined ? null : result, frame: lastFrame });
				}
			});
			wamp.call.apply(wamp, args);
			break;
		}
		case "close":
			socket.close(1000, "driver asked to close");
			break;
		default:
			report({ type: "error", message: "unknown driver command " + JSON.stringify(cmd) });
	}
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
	if (!line.trim()) {
		return;
	}
	let cmd;
	try {
		cmd = JSON.parse(line);
	} catch (e) {
		report({ type: "error", message: "bad command line: " + line });
		return;
	}
	try {
		handle(cmd);
	} catch (e) {
		// e.g. sending before the socket is open: report, do not die.
		report({ type: "error", message: "command " + cmd.op + " failed: " + String(e && e.message) });
	}
});
// The test runner closing our stdin means "we are done": leave politely.
input.on("close", () => {
	if (socket.readyState === WebSocket.OPEN) {
		socket.close(1000, "driver input closed");
	} else if (socket.readyState === WebSocket.CONNECTING) {
		socket.terminate();
	}
});

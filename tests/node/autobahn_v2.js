#!/usr/bin/env node
/*
 * A scriptable WAMP v2 client (Autobahn|JS, the npm package `autobahn`) for
 * oro-sync's end-to-end tests: proof that a modern browser-side client
 * library, unchanged and with its default serializers, works against
 * oro-sync's WAMP v2 front end.  Driven like driver.js (tests/support/node.py).
 *
 * Usage: node autobahn_v2.js ws://127.0.0.1:PORT/?ticket=... REALM [json|msgpack|cbor]
 *
 * With a serializer named, only that one is offered (Autobahn's
 * `serializers: [new MsgpackSerializer()]`).  With ORO_TICKET in the
 * environment the session authenticates the WAMP way (authmethods
 * ["ticket"], the ticket given in onchallenge) instead of by URL.
 *
 * stdin: one JSON command per line:
 *   {"op": "subscribe", "topic": T}
 *   {"op": "publish", "tag": ID, "topic": T, "args": [...], "kwargs": {...}, "options": {...}}
 *   {"op": "call", "tag": ID, "procedure": P, "args": [...]}
 *   {"op": "register", "tag": ID, "procedure": P, "behaviour": "double"|"fail"}
 *   {"op": "close"}
 *
 * stdout: one JSON report per line:
 *   {"type": "welcome", "sessionId", "realm", "authid", "authrole", "protocol"}
 *   {"type": "subscribed", "topic", "id"}
 *   {"type": "event", "topic", "args", "kwargs", "publication"}
 *   {"type": "published", "tag", "id"}       (publish with acknowledge)
 *   {"type": "callresult", "tag", "result"}
 *   {"type": "registered", "tag", "id"}
 *   {"type": "error", "tag", "error", "args"} (a refused request)
 *   {"type": "closed", "reason"}             (then the process exits)
 */
"use strict";

const readline = require("readline");
// Autobahn|JS uses the platform's WebSocket, as in a browser; Node.js has one
// built in from version 22, and here the `ws` package (the same API) stands in
// on older Node.js.
if (typeof globalThis.WebSocket === "undefined") {
	globalThis.WebSocket = require("ws");
}
const autobahn = require("autobahn");

const [url, realm, serializerName] = process.argv.slice(2);

function report(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

function failed(tag) {
	return (e) => report({ type: "error", tag, error: e.error || String(e), args: e.args || [] });
}

const options = { url, realm, max_retries: 0 };
const serializers = {
	json: autobahn.serializer.JSONSerializer,
	msgpack: autobahn.serializer.MsgpackSerializer,
	cbor: autobahn.serializer.CBORSerializer,
};
if (serializerName) {
	options.serializers = [new serializers[serializerName]()];
}
const ticket = process.env.ORO_TICKET;
if (ticket) {
	options.authmethods = ["ticket"];
	options.onchallenge = (session, method) => {
		report({ type: "challenge", method });
		return ticket;
	};
}
const connection = new autobahn.Connection(options);
let session = null;

connection.onopen = (s, details) => {
	session = s;
	report({
		type: "welcome",
		sessionId: s.id,
		realm: details.realm,
		authid: details.authid,
		authrole: details.authrole,
		protocol: connection.transport && connection.transport.info ? connection.transport.info.protocol : null,
	});
};

connection.onclose = (reason, details) => {
	report({ type: "closed", reason, details: details && details.reason });
	process.exit(0);
	return true; // no reconnection
};

const commands = readline.createInterface({ input: process.stdin });
commands.on("line", (line) => {
	if (!line.trim()) return;
	const cmd = JSON.parse(line);
	if (cmd.op === "close") {
		connection.close();
		return;
	}
	if (session === null) {
		report({ type: "error", tag: cmd.tag, error: "not joined yet" });
		return;
	}
	if (cmd.op === "subscribe") {
		session
			.subscribe(cmd.topic, (args, kwargs, details) =>
				report({ type: "event", topic: cmd.topic, args, kwargs, publication: details.publication }))
			.then((sub) => report({ type: "subscribed", topic: cmd.topic, id: sub.id }), failed(cmd.topic));
	} else if (cmd.op === "publish") {
		const p = session.publish(cmd.topic, cmd.args || [], cmd.kwargs || {}, cmd.options || {});
		if (p) p.then((pub) => report({ type: "published", tag: cmd.tag, id: pub.id }), failed(cmd.tag));
	} else if (cmd.op === "register") {
		const endpoint = cmd.behaviour === "fail"
			? () => { throw new autobahn.Error("com.example.refused", ["no"]); }
			: (args) => args[0] * 2;
		session.register(cmd.procedure, endpoint).then(
			(reg) => report({ type: "registered", tag: cmd.tag, id: reg.id }), failed(cmd.tag));
	} else if (cmd.op === "call") {
		session.call(cmd.procedure, cmd.args || []).then(
			(result) => report({ type: "callresult", tag: cmd.tag, result }), failed(cmd.tag));
	}
});
commands.on("close", () => connection.close());

connection.open();

// A Shoal client written from docs/protocol.md alone, with the official NATS JavaScript
// packages (3.x): it submits jobs, waits for them, reads their logs, results and history, stops
// one and sends a bad spec, through the subjects, buckets and streams the document describes.
//
//   node client.mjs <nats-url> <examples.json>
//
// examples.json holds specs taken from the document by the test ({"wasm": {...}, "invalid":
// {...}}). Prints one JSON object of what it saw (tests/e2e/test_js_client.py asserts on it);
// a step that goes wrong prints {"error": "..."} and exits 1.

import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";

const TERMINAL_JOB = new Set(["Completed", "Failed", "Stopped"]);
const LIVE_EXECUTION = new Set(["offered", "accepted", "running"]);
const WAIT = 30_000; // ms: the longest any one step may take

const [url, examplesPath] = process.argv.slice(2);
const examples = JSON.parse(readFileSync(examplesPath, "utf8"));
const text = new TextDecoder();

// ---- helpers ----------------------------------------------------------------------------------

const NS = "default"; // the namespace this client's jobs are in

/** A request on shoal.v1.ns.<ns>.api.<verb> (job verbs) or shoal.v1.api.<verb> (node verbs);
 * the whole ApiReply ({Ok, Error, Data}). */
async function api(nc, verb, body) {
  const subject = verb.startsWith("node.") ? `shoal.v1.api.${verb}` : `shoal.v1.ns.${NS}.api.${verb}`;
  const msg = await nc.request(subject, JSON.stringify(body), { timeout: 10_000 });
  return msg.json();
}

/** Data of a successful reply, or an exception naming the error. */
async function call(nc, verb, body) {
  const reply = await api(nc, verb, body);
  if (!reply.Ok) throw new Error(`${verb}: ${reply.Error.Code}: ${reply.Error.Message}`);
  return reply.Data;
}

/** Reads a subscription one message at a time, with a timeout (null when it passes). */
class Inbox {
  constructor(sub) {
    this.sub = sub;
    this.it = sub[Symbol.asyncIterator]();
    this.pending = null;
  }
  async next(ms) {
    this.pending ??= this.it.next();
    let timer;
    const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve(null), ms)));
    const result = await Promise.race([this.pending, timeout]);
    clearTimeout(timer);
    if (result === null) return null;
    this.pending = null;
    return result.done ? null : result.value;
  }
  close() {
    this.sub.unsubscribe();
  }
}

/** The uuid5 of `name` in the URL namespace: a named job's id (encoding rules). */
function uuid5(name) {
  const namespace = Buffer.from("6ba7b8119dad11d180b400c04fd430c8", "hex");
  const hash = createHash("sha1").update(namespace).update(name, "utf8").digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// Section 8: the keys whose missing value is not the zero of its type.
function jobRecord(raw) {
  return { Version: 1, State: "Pending", MaxAttempts: 3, ...raw };
}
function executionRecord(raw) {
  return {
    JobVersion: 1, Attempt: 1, DesiredState: "running", ComputeState: "offered",
    ExitCode: null, Retryable: true, Result: null, ...raw,
  };
}

/**
 * Follows `shoal.v1.ns.<ns>.state.<job-id>.>` (section 2, "Waiting on the stored state, step by step")
 * until `done(job, executions)`, keeping the newest record of the job and of each execution in
 * `seen` (pass the same one to follow a job further); asks job.describe after 2 s of silence.
 */
async function followState(nc, jobId, inbox, done, seen = { job: null, executions: new Map(), messages: 0 }) {
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    const m = await inbox.next(2_000);
    if (m === null) {
      const view = await call(nc, "job.describe", { JobID: jobId });
      if (done(view, view.Executions)) return { ...seen, view };
      continue;
    }
    seen.messages += 1;
    const tokens = m.subject.split(".").slice(5); // shoal.v1.ns.<ns>.state.<job-id>.…
    const op = m.headers?.get("KV-Operation") ?? "";
    if (tokens[1] === "job") {
      seen.job = jobRecord(m.json());
    } else if (tokens[1] === "execution") {
      if (op === "DEL" || op === "PURGE") seen.executions.delete(tokens[2]);
      else seen.executions.set(tokens[2], executionRecord(m.json()));
    }
    if (seen.job !== null) {
      const version = seen.job.Version;
      const current = [...seen.executions.values()].filter((e) => e.JobVersion === version);
      if (done(seen.job, current)) return { ...seen, view: null };
    }
  }
  throw new Error(`job ${jobId} did not get there within ${WAIT} ms`);
}

const ended = (job, executions) =>
  TERMINAL_JOB.has(job.State) && !executions.some((e) => LIVE_EXECUTION.has(e.ComputeState));

/** Every log chunk of the job, by "<execution>.<stream>" (section 2, "Reading a job's logs"):
 * only the chunks whose subject names the node the execution was placed on. */
async function readLogs(nc, jobId) {
  const placed = new Map();
  for (const e of (await call(nc, "job.describe", { JobID: jobId })).Executions ?? []) {
    placed.set(e.ID, e.NodeID);
  }
  const consumer = await jetstream(nc).consumers.get("SHOAL_LOGS", {
    filter_subjects: [`shoal.v1.ns.${NS}.logs.${jobId}.>`],
  });
  const chunks = new Map();
  if ((await consumer.info()).num_pending === 0) return chunks;
  const messages = await consumer.consume();
  for await (const m of messages) {
    // shoal.v1.ns.<ns>.logs.<job-id>.<node-id>.<execution-id>.<stream>
    const [node, execution, stream] = m.subject.split(".").slice(-3);
    if (placed.get(execution) === node) {
      const key = `${execution}.${stream}`;
      chunks.set(key, [...(chunks.get(key) ?? []), m.data]);
    }
    if (m.info.pending === 0) break;
  }
  await messages.close();
  const out = {};
  for (const [key, parts] of chunks) out[key] = text.decode(Buffer.concat(parts));
  return out;
}

/** The files of a gzip'd pax tar (section 2, "Reading a job's results"), name -> text. */
function untar(gz) {
  const tar = gunzipSync(gz);
  const files = {};
  let nextName = null;
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    if (header.every((b) => b === 0)) break;
    const field = (from, to) => text.decode(header.subarray(from, to)).replace(/\0.*$/s, "");
    const size = parseInt(field(124, 136).trim() || "0", 8);
    const type = field(156, 157) || "0";
    const prefix = field(345, 500);
    const data = tar.subarray(at + 512, at + 512 + size);
    if (type === "x" || type === "g") {
      const path = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(text.decode(data));
      if (type === "x" && path) nextName = path[1];
    } else {
      const name = nextName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
      if (type === "0") files[name] = text.decode(data);
      nextName = null;
    }
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** Every page of job.history, `limit` events a page, following Next until it is left out. */
async function history(nc, jobId, limit) {
  const pages = [];
  let after = 0;
  for (;;) {
    const page = await call(nc, "job.history", { JobID: jobId, After: after, Limit: limit });
    pages.push(page.Events.map((e) => ({
      kind: e.Kind, state: e.State, message: e.Message, executionId: e.ExecutionID,
    })));
    if (!page.Next) return pages;
    after = page.Next;
  }
}

// ---- the client's run ---------------------------------------------------------------------------

async function main() {
  const nc = await connect({ servers: url });
  const out = {};
  try {
    const nodes = await call(nc, "node.list", {});
    out.nodes = nodes.Nodes.map((n) => ({ id: n.ID, engines: n.Engines, connection: n.Connection }));

    // 1. A batch job with the nats publisher: waited for on its stored state, then described,
    //    its record read from KV, its logs from SHOAL_LOGS and its archive from shoal-results-ns-<ns>.
    const jobId = `j-${randomUUID()}`;
    const inbox = new Inbox(nc.subscribe(`shoal.v1.ns.${NS}.state.${jobId}.>`));
    const submitted = await call(nc, "job.submit", {
      JobID: jobId,
      SpecText: [
        "Type: batch",
        "Tasks:",
        "  - Engine:",
        "      Type: noop",
        "      Params:",
        '        Stdout: "hello {{.who}} from js\\n"',
        "    Publisher:",
        "      Type: nats",
      ].join("\n"),
      Variables: { who: "ada" },
    });
    const seen = await followState(nc, jobId, inbox, ended);
    inbox.close();
    const view = await call(nc, "job.describe", { JobID: jobId });
    const execution = view.Executions[0];
    const kv = await new Kvm(nc).open("shoal-jobs");
    const stored = jobRecord((await kv.get(`default.${jobId}`)).json());
    const logs = await readLogs(nc, jobId);
    const store = await new Objm(nc).open(`shoal-results-ns-${NS}`);
    const archive = untar(await store.getBlob(execution.Result.Location));
    out.batch = {
      id: jobId,
      submitted,
      stateMessages: seen.messages,
      sawEndOnState: seen.view === null,
      storedState: seen.job?.State ?? null,
      state: view.State,
      exitCode: execution.ExitCode,
      result: execution.Result,
      kvState: stored.State,
      kvVersion: stored.Version,
      stdout: logs[`${execution.ID}.stdout`] ?? "",
      archive,
    };

    // 2. The document's inline wasm example, a named job: its id computed here, its end read
    //    from the closing event's View on shoal.v1.ns.<ns>.events.<job-id>.
    const wasmId = `j-${uuid5(`shoal:default/${examples.wasm.Name}`)}`;
    const events = new Inbox(nc.subscribe(`shoal.v1.ns.${NS}.events.${wasmId}`));
    const wasmReply = await call(nc, "job.submit", { Spec: examples.wasm });
    let closing = null;
    for (const deadline = Date.now() + WAIT; closing === null && Date.now() < deadline; ) {
      const m = await events.next(2_000);
      if (m === null) {
        // A core subscription can miss an event: describe at least every 2 s.
        const described = await call(nc, "job.describe", { JobID: wasmId });
        if (TERMINAL_JOB.has(described.State)) closing = { State: described.State, View: described };
        continue;
      }
      const event = m.json();
      if (event.Kind === "job" && TERMINAL_JOB.has(event.State)) closing = event;
    }
    events.close();
    if (closing === null) throw new Error(`no closing event for ${wasmId}`);
    const wasmLogs = await readLogs(nc, wasmId);
    const wasmExecution = closing.View.Executions[0];
    out.wasm = {
      computedId: wasmId,
      submittedId: wasmReply.JobID,
      eventState: closing.State,
      viewState: closing.View.State,
      exitCode: wasmExecution.ExitCode,
      result: wasmExecution.Result,
      stdout: wasmLogs[`${wasmExecution.ID}.stdout`] ?? "",
    };

    // 3. A service that runs until stopped: wait until it runs, stop it, wait until its
    //    execution is no longer live, then read its history a page of two events at a time.
    const serviceId = `j-${randomUUID()}`;
    const state = new Inbox(nc.subscribe(`shoal.v1.ns.${NS}.state.${serviceId}.>`));
    await call(nc, "job.submit", {
      JobID: serviceId,
      Spec: {
        Type: "service",
        Count: 1,
        Tasks: [{ Engine: { Type: "noop", Params: { Stdout: "serving\n", Sleep: "forever" } } }],
      },
    });
    const records = { job: null, executions: new Map(), messages: 0 };
    const running = (job, executions) => executions.some((e) => e.ComputeState === "running");
    await followState(nc, serviceId, state, running, records);
    const stopReply = await call(nc, "job.stop", { JobID: serviceId, Reason: "no longer needed" });
    await followState(nc, serviceId, state, ended, records);
    state.close();
    const stopped = await call(nc, "job.describe", { JobID: serviceId });
    // History is written just after the state: until every execution's end is in it, read again.
    let pages;
    for (const deadline = Date.now() + WAIT; ; ) {
      pages = await history(nc, serviceId, 2);
      const events = pages.flat();
      const recorded = (e) =>
        events.some((h) => h.kind === "execution" && h.executionId === e.ID && h.state === e.ComputeState);
      if (stopped.Executions.every(recorded)) break;
      if (Date.now() > deadline) throw new Error(`history of ${serviceId} lacks its executions' ends`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    out.stop = {
      id: serviceId,
      replyState: stopReply.State,
      replyStateMessage: stopReply.StateMessage,
      replySpec: stopReply.Spec,
      state: stopped.State,
      stateMessage: stopped.StateMessage,
      executions: stopped.Executions.map((e) => ({
        computeState: e.ComputeState,
        desiredState: e.DesiredState,
        exitCode: e.ExitCode,
        result: e.Result,
        error: e.Error,
      })),
    };
    out.history = {
      pages: pages.length,
      events: pages.flat().map(({ kind, state, message }) => ({ kind, state, message })),
    };

    // 4. The document's invalid spec: every problem, with its path.
    const bad = await api(nc, "job.submit", examples.invalid);
    out.invalid = {
      ok: bad.Ok,
      code: bad.Error?.Code,
      message: bad.Error?.Message,
      problems: bad.Error?.Problems ?? [],
      details: bad.Error?.Details ?? [],
      paths: (bad.Error?.Details ?? []).map((d) => d.Path ?? ""), // Path "" is left out
    };
  } finally {
    await nc.close();
  }
  return out;
}

main().then(
  (out) => {
    process.stdout.write(JSON.stringify(out) + "\n");
  },
  (err) => {
    process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + "\n");
    process.exit(1);
  },
);

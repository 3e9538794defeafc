import assert from "node:assert/strict";
import { test } from "node:test";

import { RewriteJobs, rewriteArguments } from "../rewrite";
import { formatLatency, formatStatus } from "../status";

test("latency formatting", () => {
  assert.equal(formatLatency(84.4), "84 ms");
  assert.equal(formatLatency(1530), "1.5 s");
  assert.equal(formatLatency(null), "");
  assert.equal(formatLatency(-1), "");
  assert.equal(formatLatency(Number.NaN), "");
});

test("ready shows the last latency", () => {
  const view = formatStatus({ state: "ready", latencyMs: 120, model: "tiny", message: "infill stop" });
  assert.equal(view.text, "$(check) diffgemma 120 ms");
  assert.match(view.tooltip, /model: tiny/);
  assert.match(view.tooltip, /last answer: 120 ms/);
  assert.equal(view.severity, undefined);
});

test("loading spins and error is marked", () => {
  assert.equal(formatStatus({ state: "loading", message: "loading model x…" }).text, "$(loading~spin) diffgemma");
  const error = formatStatus({ state: "error", message: "no daemon answers" });
  assert.equal(error.severity, "error");
  assert.match(error.tooltip, /no daemon answers/);
  assert.equal(formatStatus(undefined).text, "$(circle-slash) diffgemma");
  assert.equal(formatStatus({ state: "weird" }).text, "$(question) diffgemma");
});

test("rewrite arguments carry the instruction only when given", () => {
  const range = { start: { line: 1, character: 4 }, end: { line: 2, character: 0 } };
  assert.deepEqual(rewriteArguments("file:///a.py", range), ["file:///a.py", range]);
  assert.deepEqual(rewriteArguments("file:///a.py", range, "  "), ["file:///a.py", range]);
  assert.deepEqual(rewriteArguments("file:///a.py", range, "use a loop"), ["file:///a.py", range, "use a loop"]);
});

test("a rewrite job is awaited whichever comes first, its answer or its end", async () => {
  const jobs = new RewriteJobs();
  const waited = jobs.wait("a");
  jobs.done({ job: "a", applied: true });
  assert.equal(await waited, true);
  jobs.done({ job: "b", applied: false });
  assert.equal(await jobs.wait("b"), false);
  const pending = jobs.wait("c");
  jobs.clear();
  assert.equal(await pending, false);
});

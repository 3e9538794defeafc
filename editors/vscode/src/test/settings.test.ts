import assert from "node:assert/strict";
import { test } from "node:test";

import { needsRestart, serverCommand, serverSettings } from "../settings";

function getter(values: Record<string, unknown>): (key: string) => unknown {
  return (key) => values[key];
}

test("maps every server key and drops empty values", () => {
  const settings = serverSettings(
    getter({
      model: "  google/diffusiongemma-26B-A4B-it ",
      socket: "",
      autoStart: false,
      maxTokens: 48,
      steps: null,
      debounceMs: 0,
      contextChars: 4000,
      crossFile: true,
      enable: { python: true, "*": false },
      serverPath: "/opt/bin/diffgemma",
    }),
  );
  assert.deepEqual(settings, {
    model: "google/diffusiongemma-26B-A4B-it",
    autoStart: false,
    maxTokens: 48,
    debounceMs: 0,
    contextChars: 4000,
    crossFile: true,
    enable: { python: true, "*": false },
  });
  assert.ok(!("serverPath" in settings), "client-only keys stay in the client");
});

test("passes bad values through for the server to report", () => {
  assert.deepEqual(serverSettings(getter({ maxTokens: "lots" })), { maxTokens: "lots" });
});

test("server command defaults to diffgemma lsp", () => {
  assert.deepEqual(serverCommand(getter({})), { command: "diffgemma", args: ["lsp"] });
  assert.deepEqual(serverCommand(getter({ serverPath: " /x/diffgemma " })), {
    command: "/x/diffgemma",
    args: ["lsp"],
  });
});

test("only the executable path needs a restart", () => {
  assert.equal(needsRestart((s) => s === "diffgemma.serverPath"), true);
  assert.equal(needsRestart((s) => s === "diffgemma.maxTokens"), false);
});

test("passes alternatives and confidentPrefix to the server", () => {
  assert.deepEqual(serverSettings(getter({ alternatives: 3, confidentPrefix: 0.4 })), {
    alternatives: 3,
    confidentPrefix: 0.4,
  });
  assert.deepEqual(serverSettings(getter({ confidentPrefix: false })), { confidentPrefix: false });
});

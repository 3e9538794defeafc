// Pure formatting of the status-bar item from the server's `diffgemma/status` notification:
// {state, message, latencyMs, model}. No `vscode` import: unit-tested under plain node.

export type ServerState = "starting" | "loading" | "ready" | "error" | "stopped" | string;

export interface StatusParams {
  state?: ServerState;
  message?: string;
  latencyMs?: number | null;
  model?: string | null;
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** "error" or "warning" selects the status bar's background colour; undefined: normal */
  severity?: "error" | "warning";
}

const ICONS: Record<string, string> = {
  starting: "$(loading~spin)",
  loading: "$(loading~spin)",
  ready: "$(check)",
  error: "$(error)",
  stopped: "$(circle-slash)",
};

export function formatLatency(ms: number | null | undefined): string {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    return "";
  }
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  return `${(ms / 1000).toFixed(1)} s`;
}

export function formatStatus(params: StatusParams | null | undefined): StatusView {
  const state = (params && typeof params.state === "string" && params.state) || "stopped";
  const icon = ICONS[state] ?? "$(question)";
  const latency = state === "ready" ? formatLatency(params?.latencyMs) : "";
  const text = `${icon} diffgemma${latency ? " " + latency : ""}`;
  const lines = [`diffgemma: ${state}`];
  if (params?.model) {
    lines.push(`model: ${params.model}`);
  }
  if (params?.message) {
    lines.push(params.message);
  }
  const latencyLine = formatLatency(params?.latencyMs);
  if (latencyLine) {
    lines.push(`last answer: ${latencyLine}`);
  }
  const view: StatusView = { text, tooltip: lines.join("\n") };
  if (state === "error") {
    view.severity = "error";
  } else if (state === "stopped") {
    view.severity = "warning";
  }
  return view;
}

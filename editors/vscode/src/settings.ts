// Pure mapping from VS Code's `diffgemma.*` configuration to the language server's settings
// (initializationOptions and workspace/didChangeConfiguration). No `vscode` import: unit-tested
// under plain node.

/** The keys the server understands (flat camelCase, as in its settings.py). */
export const SERVER_KEYS = [
  "model",
  "socket",
  "autoStart",
  "url",
  "token",
  "tokenFile",
  "caCert",
  "maxTokens",
  "steps",
  "debounceMs",
  "contextChars",
  "crossFile",
  "enable",
  "alternatives",
  "confidentPrefix",
  "nextEdit",
] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];
export type ServerSettings = Partial<Record<ServerKey, unknown>>;

/** Reads one `diffgemma.<key>` value; VS Code's WorkspaceConfiguration.get fits. */
export type ConfigGetter = (key: string) => unknown;

/**
 * The server's settings from the editor's configuration. Empty strings and nulls are left out
 * so the server applies its own defaults; values are passed through otherwise, because the
 * server checks each one and reports a bad value itself rather than the client hiding it.
 */
export function serverSettings(get: ConfigGetter): ServerSettings {
  const out: ServerSettings = {};
  for (const key of SERVER_KEYS) {
    let value = get(key);
    if (typeof value === "string") {
      value = value.trim();
      if (value === "") {
        continue;
      }
    }
    if (value === undefined || value === null) {
      continue;
    }
    out[key] = value;
  }
  return out;
}

/** How to start the server: `<serverPath> lsp`. */
export function serverCommand(get: ConfigGetter): { command: string; args: string[] } {
  const raw = get("serverPath");
  const command = typeof raw === "string" && raw.trim() !== "" ? raw.trim() : "diffgemma";
  return { command, args: ["lsp"] };
}

/** Whether a configuration change needs a server restart (rather than a settings update). */
export function needsRestart(changed: (section: string) => boolean): boolean {
  return changed("diffgemma.serverPath");
}

// diffgemma for VS Code: starts `diffgemma lsp`, which provides ghost text (inline
// completions), the "Rewrite selection" command and next-edit suggestions (nextEditController);
// a status-bar item shows the daemon's state and the last answer's latency.

import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

import { NextEdits } from "./nextEditController";
import { RewriteDone, RewriteJobs, RewriteStarted, rewriteArguments } from "./rewrite";
import { needsRestart, serverCommand, serverSettings } from "./settings";
import { formatStatus, StatusParams } from "./status";

const SECTION = "diffgemma";
const SERVER_COMMAND = "diffgemma.rewriteSelection";

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let output: vscode.LogOutputChannel;
const rewriteJobs = new RewriteJobs();
let nextEdits: NextEdits;

function config(): (key: string) => unknown {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  return (key) => cfg.get(key);
}

function showStatus(params: StatusParams): void {
  const view = formatStatus(params);
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.backgroundColor =
    view.severity === "error"
      ? new vscode.ThemeColor("statusBarItem.errorBackground")
      : view.severity === "warning"
        ? new vscode.ThemeColor("statusBarItem.warningBackground")
        : undefined;
  statusItem.show();
}

async function startClient(): Promise<void> {
  const get = config();
  const { command, args } = serverCommand(get);
  const serverOptions: ServerOptions = {
    run: { command, args, transport: TransportKind.stdio },
    debug: { command, args: [...args, "--verbose"], transport: TransportKind.stdio },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: serverSettings(get),
    outputChannel: output,
    middleware: {
      // next-edit suggestions wait for ghost text to go: note where it was answered
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const result = await next(document, position, context, token);
        const items = Array.isArray(result) ? result : (result?.items ?? []);
        nextEdits.ghostAnswered(document, position, items.length);
        return result;
      },
    },
  };
  client = new LanguageClient("diffgemma", "diffgemma", serverOptions, clientOptions);
  client.onNotification("diffgemma/status", (params: StatusParams) => showStatus(params));
  client.onNotification("diffgemma/rewriteDone", (params: RewriteDone) => rewriteJobs.done(params));
  showStatus({ state: "starting", message: `${command} ${args.join(" ")}` });
  try {
    await client.start();
  } catch (err) {
    showStatus({ state: "error", message: String(err) });
    void vscode.window.showErrorMessage(
      `diffgemma: could not start \`${command} lsp\` (${err}). Set diffgemma.serverPath to the diffgemma executable.`,
    );
  }
}

async function stopClient(): Promise<void> {
  const running = client;
  client = undefined;
  rewriteJobs.clear();
  nextEdits.clear();
  if (running) {
    await running.stop();
  }
  showStatus({ state: "stopped" });
}

async function rewriteSelection(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || editor.selection.isEmpty) {
    void vscode.window.showInformationMessage("diffgemma: select the code to rewrite first");
    return;
  }
  if (!client) {
    void vscode.window.showWarningMessage("diffgemma: the language server is not running");
    return;
  }
  const instruction = await vscode.window.showInputBox({
    title: "Rewrite selection",
    prompt: "What should change? (optional: leave empty to let the model tidy it)",
  });
  if (instruction === undefined) {
    return; // cancelled
  }
  const selection = editor.selection;
  const range = client.code2ProtocolConverter.asRange(selection);
  const uri = client.code2ProtocolConverter.asUri(editor.document.uri);
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: "diffgemma: rewriting…", cancellable: true },
    async (_progress, token) => {
      // the server answers at once and runs the rewrite as a job; the edit arrives as
      // workspace/applyEdit, and diffgemma/rewriteDone ends the wait
      const started = (await client?.sendRequest(
        ExecuteCommandRequest.type,
        { command: SERVER_COMMAND, arguments: rewriteArguments(uri, range, instruction) },
        token,
      )) as RewriteStarted | null | undefined;
      if (started?.started && started.job) {
        await rewriteJobs.wait(started.job);
      }
    },
  );
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("diffgemma", { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "diffgemma.showOutput";
  nextEdits = new NextEdits(
    () => client,
    output,
    () => vscode.workspace.getConfiguration(SECTION).get<boolean>("nextEdit.enable", true),
  );
  context.subscriptions.push(
    nextEdits,
    vscode.commands.registerCommand("diffgemma.acceptNextEdit", () => nextEdits.tab()),
    vscode.commands.registerCommand("diffgemma.dismissNextEdit", () => nextEdits.dismiss()),
    vscode.commands.registerCommand("diffgemma.jumpToNextEdit", () => nextEdits.jump()),
    vscode.commands.registerCommand("diffgemma.suggestNextEdit", () => nextEdits.suggest()),
    vscode.commands.registerCommand("diffgemma.hideGhostText", () => nextEdits.hideGhostText()),
    vscode.workspace.onDidChangeTextDocument((event) => nextEdits.onDidChangeDocument(event)),
    vscode.window.onDidChangeTextEditorSelection((event) => nextEdits.onDidChangeSelection(event)),
    vscode.window.onDidChangeActiveTextEditor(() => nextEdits.onDidChangeActiveEditor()),
    output,
    statusItem,
    vscode.commands.registerCommand("diffgemma.rewrite", rewriteSelection),
    vscode.commands.registerCommand("diffgemma.restart", async () => {
      await stopClient();
      await startClient();
    }),
    vscode.commands.registerCommand("diffgemma.showOutput", () => output.show()),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      if (needsRestart((s) => event.affectsConfiguration(s))) {
        await stopClient();
        await startClient();
      } else if (client) {
        await client.sendNotification(DidChangeConfigurationNotification.type, {
          settings: serverSettings(config()),
        });
      }
    }),
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  await stopClient();
}

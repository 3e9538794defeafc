// Next-edit suggestions in VS Code: after an edit (and a pause the server waits out) the extension
// asks `diffgemma/nextEdit` and draws the proposed edit in place: the lines it replaces on a red
// background, the new text after them on a green one, a hover with the whole diff, a status-bar
// item. Tab goes to it and accepts it, Escape dismisses it, "Go to next suggested edit" jumps.
//
// Drawn with decorations and a context key (stable API): VS Code 1.100 shows an inline
// completion that replaces other lines only through its proposed `isInlineEdit` API, which an
// installed extension cannot use, and a plain inline completion only when it extends the cursor's
// own line. Ghost text always wins: the server answers nothing while it is showing, and the
// extension tells the server when it goes away (`diffgemma/ghostText`).

import * as vscode from "vscode";
import type { LanguageClient } from "vscode-languageclient/node";

import {
  NextEditAnswer,
  Position,
  cursorAfterAccept,
  diffText,
  editView,
  jumpTarget,
  parseAnswer,
  shiftAfter,
  tabAction,
} from "./nextEdit";

const REQUEST = "diffgemma/nextEdit";
const GHOST_TEXT = "diffgemma/ghostText";
const CONTEXT_KEY = "diffgemma.nextEditVisible";
const TRIGGER_MS = 50; // after the last change; the server debounces (nextEdit.debounceMs) as well

interface Shown {
  editor: vscode.TextEditor;
  version: number;
  answer: NextEditAnswer;
}

interface NextPlace {
  uri: string;
  version: number;
  position: Position;
}

export class NextEdits implements vscode.Disposable {
  private shown: Shown | undefined;
  private nextPlace: NextPlace | undefined;
  private ghost: { uri: string; line: number; character: number } | undefined;
  private pending: vscode.CancellationTokenSource | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly removed = vscode.window.createTextEditorDecorationType({
    backgroundColor: new vscode.ThemeColor("diffEditor.removedLineBackground"),
    isWholeLine: true,
  });
  private readonly added = vscode.window.createTextEditorDecorationType({
    after: {
      backgroundColor: new vscode.ThemeColor("diffEditor.insertedTextBackground"),
      color: new vscode.ThemeColor("editor.foreground"),
      margin: "0 0 0 2em",
    },
  });
  private readonly status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 99);

  constructor(
    private readonly client: () => LanguageClient | undefined,
    private readonly output: vscode.LogOutputChannel,
    private readonly enabled: () => boolean,
  ) {
    this.status.command = "diffgemma.jumpToNextEdit";
  }

  // -- events ------------------------------------------------------------------------------------

  onDidChangeDocument(event: vscode.TextDocumentChangeEvent): void {
    if (!event.contentChanges.length) {
      return;
    }
    if (this.shown?.editor.document === event.document) {
      this.clear();
    }
    if (this.ghost?.uri === this.client()?.code2ProtocolConverter.asUri(event.document.uri)) {
      this.ghost = undefined; // the server forgets it when the document changes too
    }
    const editor = vscode.window.activeTextEditor;
    if (editor?.document === event.document) {
      this.schedule();
    }
  }

  onDidChangeSelection(event: vscode.TextEditorSelectionChangeEvent): void {
    const ghost = this.ghost;
    const at = event.selections[0]?.active;
    const uri = this.client()?.code2ProtocolConverter.asUri(event.textEditor.document.uri);
    if (ghost && at && (ghost.uri !== uri || ghost.line !== at.line || ghost.character !== at.character)) {
      this.ghostGone(); // VS Code hides ghost text when the cursor leaves it
    }
  }

  onDidChangeActiveEditor(): void {
    this.clear();
    this.ghostGone();
  }

  /** Middleware around inline completions: remember where ghost text was answered. */
  ghostAnswered(document: vscode.TextDocument, position: vscode.Position, items: number): void {
    const uri = this.client()?.code2ProtocolConverter.asUri(document.uri);
    this.ghost = items > 0 && uri ? { uri, line: position.line, character: position.character } : undefined;
  }

  /** Escape over ghost text: hide it as VS Code does, tell the server, and ask for a suggestion. */
  async hideGhostText(): Promise<void> {
    await vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
    this.ghostGone();
    this.schedule();
  }

  private ghostGone(): void {
    const ghost = this.ghost;
    this.ghost = undefined;
    if (ghost) {
      void this.client()?.sendNotification(GHOST_TEXT, { textDocument: { uri: ghost.uri }, visible: false });
    }
  }

  // -- asking ------------------------------------------------------------------------------------

  private schedule(): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.pending?.cancel(); // its $/cancelRequest stops the server's work (and the daemon's)
    this.timer = setTimeout(() => void this.suggest(), TRIGGER_MS);
  }

  /** Ask for a suggestion at the cursor of the active editor (the command, or after an edit). */
  async suggest(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = this.client();
    if (!editor || !client || !this.enabled()) {
      return;
    }
    this.pending?.cancel();
    const source = (this.pending = new vscode.CancellationTokenSource());
    const document = editor.document;
    const version = document.version;
    const params = {
      textDocument: { uri: client.code2ProtocolConverter.asUri(document.uri) },
      position: client.code2ProtocolConverter.asPosition(editor.selection.active),
    };
    let raw: unknown;
    try {
      raw = await client.sendRequest(REQUEST, params, source.token);
    } catch (err) {
      if (!source.token.isCancellationRequested) {
        this.output.warn(`next edit: ${err}`);
      }
      return;
    }
    if (source.token.isCancellationRequested || document.version !== version || editor !== vscode.window.activeTextEditor) {
      return;
    }
    const answer = parseAnswer(raw);
    if (!answer) {
      return;
    }
    const uri = params.textDocument.uri;
    this.nextPlace = answer.next ? { uri, version, position: answer.next } : undefined;
    if (!answer.edits.length) {
      this.output.info(`next edit: none (${answer.reason ?? "no reason given"})`);
      return;
    }
    this.show(editor, version, answer);
  }

  // -- showing -----------------------------------------------------------------------------------

  private show(editor: vscode.TextEditor, version: number, answer: NextEditAnswer): void {
    this.clear();
    const document = editor.document;
    const removed: vscode.DecorationOptions[] = [];
    const added: vscode.DecorationOptions[] = [];
    for (const edit of answer.edits) {
      const view = editView(edit);
      const lines: string[] = [];
      if (view.removed) {
        for (let line = view.removed.first; line <= Math.min(view.removed.last, document.lineCount - 1); line++) {
          lines.push(document.lineAt(line).text);
        }
      }
      const hover = new vscode.MarkdownString();
      hover.appendMarkdown("**diffgemma** suggests (Tab to accept, Escape to dismiss):\n");
      hover.appendCodeblock(diffText(lines, edit), "diff");
      if (view.removed) {
        removed.push({ range: new vscode.Range(view.removed.first, 0, view.removed.first + lines.length - 1, 0), hoverMessage: hover });
      }
      for (const { line, text } of view.shown) {
        const end = document.lineAt(Math.min(line, document.lineCount - 1)).range.end;
        added.push({ range: new vscode.Range(end, end), hoverMessage: hover, renderOptions: { after: { contentText: text } } });
      }
    }
    editor.setDecorations(this.removed, removed);
    editor.setDecorations(this.added, added);
    this.shown = { editor, version, answer };
    const first = answer.edits[0].range.start.line + 1;
    this.status.text = `$(arrow-right) next edit: line ${first}`;
    this.status.tooltip = "diffgemma suggests an edit: Tab goes to it and accepts it, Escape dismisses it";
    this.status.show();
    void vscode.commands.executeCommand("setContext", CONTEXT_KEY, true);
    this.output.info(`next edit shown: ${JSON.stringify(answer)}`);
  }

  clear(): void {
    const shown = this.shown;
    this.shown = undefined;
    if (shown) {
      shown.editor.setDecorations(this.removed, []);
      shown.editor.setDecorations(this.added, []);
      this.status.hide();
      void vscode.commands.executeCommand("setContext", CONTEXT_KEY, false);
    }
  }

  /** The suggestion when it is still for the active editor's text. */
  private current(): Shown | undefined {
    const shown = this.shown;
    const editor = vscode.window.activeTextEditor;
    if (!shown || shown.editor.document !== editor?.document || shown.editor.document.version !== shown.version) {
      this.clear();
      return undefined;
    }
    return shown;
  }

  // -- commands ----------------------------------------------------------------------------------

  /** Tab: go to the suggestion when the cursor is elsewhere, else apply it as one undoable edit. */
  async tab(): Promise<void> {
    const shown = this.current();
    if (!shown) {
      return;
    }
    if (tabAction(shown.answer, shown.editor.selection.active.line) === "jump") {
      this.moveTo(shown.editor, shown.answer.edits[0].range.start);
      return;
    }
    await this.accept();
  }

  async accept(): Promise<boolean> {
    const shown = this.current();
    const client = this.client();
    if (!shown || !client) {
      return false;
    }
    const { editor, answer } = shown;
    const edit = new vscode.WorkspaceEdit();
    for (const item of answer.edits) {
      edit.replace(editor.document.uri, client.protocol2CodeConverter.asRange(item.range), item.newText);
    }
    this.clear();
    const uri = client.code2ProtocolConverter.asUri(editor.document.uri);
    const next = shiftAfter(answer.next, answer.edits);
    if (!(await vscode.workspace.applyEdit(edit))) {
      return false;
    }
    this.output.info("next edit accepted");
    this.nextPlace = next ? { uri, version: editor.document.version, position: next } : undefined;
    this.moveTo(editor, cursorAfterAccept(answer.edits[0]));
    return true;
  }

  dismiss(): void {
    if (this.shown) {
      this.output.info("next edit dismissed");
    }
    this.clear();
  }

  /** Go to the suggestion, or to the next suggested place (and ask for a suggestion there). */
  jump(): void {
    const editor = vscode.window.activeTextEditor;
    const client = this.client();
    if (!editor || !client) {
      return;
    }
    const shown = this.current();
    const place = this.nextPlace;
    const uri = client.code2ProtocolConverter.asUri(editor.document.uri);
    const next = place && place.uri === uri && place.version === editor.document.version ? place.position : null;
    const target = jumpTarget(shown ? shown.answer : { edits: [], next, reason: null }, editor.selection.active.line);
    if (!target) {
      void vscode.window.setStatusBarMessage("diffgemma: no suggested place to go to", 3000);
      return;
    }
    this.moveTo(editor, target);
    if (!shown) {
      void this.suggest();
    }
  }

  private moveTo(editor: vscode.TextEditor, position: Position): void {
    const at = new vscode.Position(position.line, position.character);
    editor.selection = new vscode.Selection(at, at);
    editor.revealRange(new vscode.Range(at, at), vscode.TextEditorRevealType.InCenterIfOutsideViewport);
  }

  dispose(): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.pending?.cancel();
    this.clear();
    this.removed.dispose();
    this.added.dispose();
    this.status.dispose();
  }
}

// Pure pieces of next-edit suggestions: checking the server's `diffgemma/nextEdit` answer, what
// to draw for each proposed edit, and what Tab and the jump command do. No `vscode` import:
// unit-tested under plain node.

import type { Position, Range } from "./lspTypes";

export type { Position, Range };

/** One proposed edit: whole lines `range` replaced by `newText`. */
export interface NextEditItem {
  range: Range;
  newText: string;
  confidence: number;
}

/** The answer of `diffgemma/nextEdit`; `next` is where the edit after these is likely to be. */
export interface NextEditAnswer {
  edits: NextEditItem[];
  next: Position | null;
  reason: string | null;
}

function isPosition(value: unknown): value is Position {
  const p = value as Position;
  return (
    typeof p === "object" && p !== null && Number.isInteger(p.line) && Number.isInteger(p.character) &&
    p.line >= 0 && p.character >= 0
  );
}

function isRange(value: unknown): value is Range {
  const r = value as Range;
  return typeof r === "object" && r !== null && isPosition(r.start) && isPosition(r.end) &&
    (r.start.line < r.end.line || (r.start.line === r.end.line && r.start.character <= r.end.character));
}

/** The answer when it has the expected shape (malformed edits are left out); undefined for null. */
export function parseAnswer(raw: unknown): NextEditAnswer | undefined {
  if (typeof raw !== "object" || raw === null) {
    return undefined;
  }
  const data = raw as Record<string, unknown>;
  const edits: NextEditItem[] = [];
  for (const item of Array.isArray(data.edits) ? data.edits : []) {
    const e = item as Record<string, unknown>;
    if (typeof e === "object" && e !== null && isRange(e.range) && typeof e.newText === "string") {
      const confidence = typeof e.confidence === "number" ? e.confidence : 0;
      edits.push({ range: e.range, newText: e.newText, confidence });
    }
  }
  edits.sort((a, b) => a.range.start.line - b.range.start.line);
  return {
    edits,
    next: isPosition(data.next) ? data.next : null,
    reason: typeof data.reason === "string" ? data.reason : null,
  };
}

/** What to draw for one edit: the lines it replaces, and the new text shown next to them. */
export interface EditView {
  /** first and last replaced line (inclusive); undefined for a pure insertion */
  removed?: { first: number; last: number };
  /** text shown after the end of `line`: the new line that takes its place, or several joined */
  shown: { line: number; text: string }[];
}

/** Separator between new lines drawn on one line (a decoration cannot break lines). */
export const LINE_JOIN = " ⏎ ";

export function newLines(text: string): string[] {
  if (text === "") {
    return [];
  }
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") {
    lines.pop(); // the newline that ends the last line
  }
  return lines;
}

/** How many whole lines `range` replaces (a range ending mid-line reaches the document's end). */
export function replacedLineCount(range: Range): number {
  return range.end.line - range.start.line + (range.end.character > 0 ? 1 : 0);
}

/**
 * Replaced line i shows new line i after it; new lines beyond the replaced ones are joined onto
 * the last replaced line; replaced lines beyond the new ones are shown removed with nothing after.
 * A pure insertion is shown after the line before it (or on the first line, at the very top).
 */
export function editView(edit: NextEditItem): EditView {
  const added = newLines(edit.newText);
  const count = replacedLineCount(edit.range);
  const first = edit.range.start.line;
  if (count === 0) {
    const line = Math.max(0, first - 1);
    return { shown: added.length ? [{ line, text: "+ " + added.join(LINE_JOIN) }] : [] };
  }
  const shown: { line: number; text: string }[] = [];
  for (let i = 0; i < Math.min(count, added.length); i++) {
    const last = i === count - 1;
    shown.push({ line: first + i, text: last ? added.slice(i).join(LINE_JOIN) : added[i] });
  }
  return { removed: { first, last: first + count - 1 }, shown };
}

/** The unified-diff text of one edit, for a hover: `-` the old lines, `+` the new ones. */
export function diffText(oldLines: string[], edit: NextEditItem): string {
  return [...oldLines.map((l) => "- " + l), ...newLines(edit.newText).map((l) => "+ " + l)].join("\n");
}

/** Whether the cursor's `line` is at the suggestion (within a line of its first edit). */
export function cursorAtEdit(answer: NextEditAnswer, line: number): boolean {
  const edit = answer.edits[0];
  if (!edit) {
    return false;
  }
  const last = edit.range.start.line + Math.max(0, replacedLineCount(edit.range) - 1);
  return line >= edit.range.start.line - 1 && line <= last + 1;
}

/** What Tab does: accept the suggestion where the cursor is, or first go to it (as VS Code's own
 * edit suggestions do), so an edit far from the cursor is never applied unseen. */
export function tabAction(answer: NextEditAnswer, cursorLine: number): "accept" | "jump" {
  return cursorAtEdit(answer, cursorLine) ? "accept" : "jump";
}

/** Where the jump command goes: the shown suggestion when the cursor is not at it, else the next
 * suggested place. */
export function jumpTarget(answer: NextEditAnswer | undefined, cursorLine: number): Position | undefined {
  if (answer && answer.edits.length && !cursorAtEdit(answer, cursorLine)) {
    return answer.edits[0].range.start;
  }
  return answer?.next ?? undefined;
}

/** The next suggested place once `edits` are applied: lines after them move by the lines they added. */
export function shiftAfter(next: Position | null, edits: NextEditItem[]): Position | null {
  if (!next) {
    return null;
  }
  let line = next.line;
  for (const edit of edits) {
    if (edit.range.start.line + replacedLineCount(edit.range) <= next.line) {
      line += newLines(edit.newText).length - replacedLineCount(edit.range);
    } else if (edit.range.start.line <= next.line) {
      return { line: edit.range.start.line, character: 0 }; // inside an edit: its start
    }
  }
  return { line: Math.max(0, line), character: next.character };
}

/** Where the cursor goes after accepting: the end of the first edit's new text. */
export function cursorAfterAccept(edit: NextEditItem): Position {
  const lines = newLines(edit.newText);
  if (!lines.length) {
    return edit.range.start;
  }
  return { line: edit.range.start.line + lines.length - 1, character: lines[lines.length - 1].length };
}

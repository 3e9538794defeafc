import assert from "node:assert/strict";
import { test } from "node:test";

import {
  LINE_JOIN,
  NextEditAnswer,
  NextEditItem,
  cursorAfterAccept,
  cursorAtEdit,
  diffText,
  editView,
  jumpTarget,
  parseAnswer,
  shiftAfter,
  tabAction,
} from "../nextEdit";
import { serverSettings } from "../settings";

function item(startLine: number, endLine: number, newText: string, endCharacter = 0): NextEditItem {
  return {
    range: { start: { line: startLine, character: 0 }, end: { line: endLine, character: endCharacter } },
    newText,
    confidence: 0.9,
  };
}

function answer(edits: NextEditItem[], next: { line: number; character: number } | null = null): NextEditAnswer {
  return { edits, next, reason: null };
}

test("parses the server's answer and drops malformed edits", () => {
  const raw = {
    edits: [
      item(4, 5, "b\n"),
      { range: { start: { line: 1, character: 0 }, end: { line: 0, character: 0 } }, newText: "x" }, // backwards
      { range: { start: { line: 1 }, end: { line: 2, character: 0 } }, newText: "x" },
      { range: item(0, 1, "").range, newText: 7 },
      item(2, 3, "a\n"),
    ],
    next: { line: 9, character: 4 },
    reason: null,
    threshold: 0.5,
  };
  const parsed = parseAnswer(raw);
  assert.ok(parsed);
  assert.deepEqual(parsed.edits.map((e) => e.range.start.line), [2, 4]); // sorted by line
  assert.deepEqual(parsed.next, { line: 9, character: 4 });
  assert.equal(parseAnswer(null), undefined);
  assert.equal(parseAnswer("nope"), undefined);
  assert.deepEqual(parseAnswer({ edits: [], next: null, reason: "no confident change" }), {
    edits: [],
    next: null,
    reason: "no confident change",
  });
  assert.deepEqual(parseAnswer({ edits: "x", next: { line: -1, character: 0 } })?.next, null);
});

test("a changed line shows its replacement after it", () => {
  assert.deepEqual(editView(item(3, 4, "    return amount * factor\n")), {
    removed: { first: 3, last: 3 },
    shown: [{ line: 3, text: "    return amount * factor" }],
  });
});

test("extra new lines join onto the last replaced line; extra old lines are only removed", () => {
  assert.deepEqual(editView(item(1, 2, "a\nb\nc\n")).shown, [{ line: 1, text: ["a", "b", "c"].join(LINE_JOIN) }]);
  assert.deepEqual(editView(item(1, 4, "a\n")), { removed: { first: 1, last: 3 }, shown: [{ line: 1, text: "a" }] });
  assert.deepEqual(editView(item(1, 3, "")), { removed: { first: 1, last: 2 }, shown: [] });
  // a range that ends mid-line reaches the end of the document: that last line counts
  assert.deepEqual(editView(item(5, 6, "x\ny", 3)).removed, { first: 5, last: 6 });
});

test("an insertion shows after the line before it", () => {
  assert.deepEqual(editView(item(4, 4, "import os\n")), { shown: [{ line: 3, text: "+ import os" }] });
  assert.deepEqual(editView(item(0, 0, "a\nb\n")).shown, [{ line: 0, text: "+ a" + LINE_JOIN + "b" }]);
});

test("the hover shows the edit as a diff", () => {
  assert.equal(diffText(["old one", "old two"], item(0, 2, "new\n")), "- old one\n- old two\n+ new");
});

test("Tab goes to a suggestion elsewhere before accepting it", () => {
  const a = answer([item(10, 12, "x\n")], { line: 20, character: 4 });
  assert.equal(tabAction(a, 2), "jump");
  assert.equal(tabAction(a, 9), "accept"); // the line just above counts as at it
  assert.equal(tabAction(a, 11), "accept");
  assert.equal(tabAction(a, 12), "accept");
  assert.equal(tabAction(a, 13), "jump");
  assert.equal(cursorAtEdit(answer([]), 0), false);
});

test("the jump goes to the suggestion, then to the next suggested place", () => {
  const a = answer([item(10, 11, "x\n")], { line: 20, character: 4 });
  assert.deepEqual(jumpTarget(a, 0), { line: 10, character: 0 });
  assert.deepEqual(jumpTarget(a, 10), { line: 20, character: 4 });
  assert.deepEqual(jumpTarget(answer([], { line: 3, character: 1 }), 10), { line: 3, character: 1 });
  assert.equal(jumpTarget(answer([]), 0), undefined);
  assert.equal(jumpTarget(undefined, 0), undefined);
});

test("the next place moves with the lines an accepted edit adds or removes", () => {
  const next = { line: 20, character: 4 };
  assert.deepEqual(shiftAfter(next, [item(2, 3, "a\nb\nc\n")]), { line: 22, character: 4 });
  assert.deepEqual(shiftAfter(next, [item(2, 5, "a\n")]), { line: 18, character: 4 });
  assert.deepEqual(shiftAfter(next, [item(25, 26, "a\nb\n")]), next); // after it: no move
  assert.deepEqual(shiftAfter(next, [item(19, 22, "a\n")]), { line: 19, character: 0 }); // inside
  assert.equal(shiftAfter(null, [item(1, 2, "a\n")]), null);
});

test("after accepting, the cursor ends where the new text does", () => {
  assert.deepEqual(cursorAfterAccept(item(3, 4, "    return amount\n")), { line: 3, character: 17 });
  assert.deepEqual(cursorAfterAccept(item(3, 4, "a\nbc\n")), { line: 4, character: 2 });
  assert.deepEqual(cursorAfterAccept(item(3, 5, "")), { line: 3, character: 0 });
});

test("the nextEdit group goes to the server as one object", () => {
  const settings = serverSettings((key) =>
    key === "nextEdit" ? { enable: false, debounceMs: 400, threshold: null } : undefined,
  );
  assert.deepEqual(settings, { nextEdit: { enable: false, debounceMs: 400, threshold: null } });
});

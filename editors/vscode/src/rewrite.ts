// Pure: the arguments of the server's `diffgemma.rewriteSelection` command.

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

/** [uri, range] plus the instruction when the user typed one. */
export function rewriteArguments(uri: string, range: Range, instruction?: string): unknown[] {
  const args: unknown[] = [
    uri,
    {
      start: { line: range.start.line, character: range.start.character },
      end: { line: range.end.line, character: range.end.character },
    },
  ];
  const text = instruction?.trim();
  if (text) {
    args.push(text);
  }
  return args;
}

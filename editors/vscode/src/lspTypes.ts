// The LSP position and range as the server sends them (zero-based lines and characters), shared by
// the pure modules. No `vscode` import.

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

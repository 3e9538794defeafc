// Pure: the arguments of the server's `diffgemma.rewriteSelection` command.

import type { Range } from "./lspTypes";

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

/** The answer of `workspace/executeCommand diffgemma.rewriteSelection`: the job it started. */
export interface RewriteStarted {
  started?: boolean;
  job?: string;
}

/** `diffgemma/rewriteDone`: a rewrite job has finished, its edit applied or not. */
export interface RewriteDone {
  job: string;
  uri?: string;
  applied?: boolean;
}

/**
 * Rewrite jobs the extension waits for. The server answers the command at once and sends
 * `diffgemma/rewriteDone` when the job ends; either may be seen first here, so a job that ends
 * before anyone waits is remembered.
 */
export class RewriteJobs {
  private waiting = new Map<string, (applied: boolean) => void>();
  private finished = new Map<string, boolean>();

  wait(job: string): Promise<boolean> {
    const applied = this.finished.get(job);
    if (applied !== undefined) {
      this.finished.delete(job);
      return Promise.resolve(applied);
    }
    return new Promise((resolve) => this.waiting.set(job, resolve));
  }

  done(params: RewriteDone): void {
    const applied = params.applied === true;
    const resolve = this.waiting.get(params.job);
    if (resolve) {
      this.waiting.delete(params.job);
      resolve(applied);
    } else {
      this.finished.set(params.job, applied);
    }
  }

  /** Stop waiting for everything (the server stopped): every waiter gets "not applied". */
  clear(): void {
    for (const resolve of this.waiting.values()) {
      resolve(false);
    }
    this.waiting.clear();
    this.finished.clear();
  }
}

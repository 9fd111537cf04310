/**
 * The workers each language runs, and how they are started: a tiny bootstrap
 * on the command line reads the worker's source as the first frame on stdin,
 * so no file of ours has to exist inside the sandbox.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type CodeLanguage = "python" | "javascript";
export const CODE_LANGUAGES: readonly CodeLanguage[] = ["python", "javascript"];

const workersDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "workers");

const PYTHON_BOOTSTRAP =
  "import sys,struct;b=sys.stdin.buffer;n=struct.unpack('>I',b.read(4))[0];" +
  "exec(compile(b.read(n),'<agentbox-worker>','exec'),{'__name__':'__agentbox_worker__'})";

const NODE_BOOTSTRAP =
  "const fs=require('fs');const h=Buffer.alloc(4);let o=0;while(o<4)o+=fs.readSync(0,h,o,4-o,null);" +
  "const n=h.readUInt32BE(0);const s=Buffer.alloc(n);o=0;while(o<n)o+=fs.readSync(0,s,o,n-o,null);" +
  "const m={exports:{}};new Function('require','module','exports','__filename','__dirname',s.toString())(require,m,m.exports,'<agentbox-worker>','/')";

export interface WorkerLaunch {
  /** Program and arguments, run inside the sandbox (or on the machine of a remote worker). */
  argv: string[];
  /** Sent as the first frame: the worker's source. */
  source: Buffer;
}

const cache = new Map<CodeLanguage, Buffer>();

function source(language: CodeLanguage): Buffer {
  let s = cache.get(language);
  if (!s) {
    const file = language === "python" ? join(workersDir, "python", "agentbox_worker.py") : join(workersDir, "node", "agentbox_worker.cjs");
    s = readFileSync(file);
    cache.set(language, s);
  }
  return s;
}

/** How to start a worker of `language`. `python` is the interpreter to run (default `python3`). */
export function workerLaunch(language: CodeLanguage, programs: { python?: string; node?: string } = {}): WorkerLaunch {
  if (language === "python") return { argv: [programs.python ?? "python3", "-u", "-c", PYTHON_BOOTSTRAP], source: source(language) };
  return { argv: [programs.node ?? "node", "-e", NODE_BOOTSTRAP], source: source(language) };
}

/**
 * Test helpers that start real processes: relays (`connectoid-relay`, bound
 * to 127.0.0.1 port 0, read back from its `listening http=ADDR` line) and the
 * Rust `connectoid` CLI. Binaries come from CONNECTOID_RELAY_BIN and
 * CONNECTOID_CLI_BIN, else `$CARGO_TARGET_DIR/debug/...`, else
 * `../target/debug/...` (build with `cargo build -p connectoid-relay -p connectoid`).
 */
import { ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

const JS_DIR = resolve(new URL("../..", import.meta.url).pathname);
const TARGET = process.env.CARGO_TARGET_DIR ?? join(JS_DIR, "..", "target");

/** Path of a workspace binary, from its variable or the cargo target dir. */
export function binary(name: string, variable: string): string {
  const path = process.env[variable] ?? join(TARGET, "debug", name);
  if (!existsSync(path)) throw new Error(`${path} not found: run cargo build -p connectoid-relay -p connectoid, or set ${variable}`);
  return path;
}

/** A fresh temporary directory, removed by {@link cleanup}. */
const dirs: string[] = [];
export function tempDir(prefix = "connectoid-js-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A running relay process. */
export class Relay {
  private constructor(
    readonly child: ChildProcess,
    /** The relay URL, `http://127.0.0.1:PORT/`. */
    readonly url: string,
  ) {}

  /** Starts a relay with its own data directory and waits (at most 20 s) for its address. */
  static async start(extra: string[] = []): Promise<Relay> {
    const child = spawn(binary("connectoid-relay", "CONNECTOID_RELAY_BIN"), ["--http", "127.0.0.1:0", "--data", tempDir("connectoid-relay-"), ...extra], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    const url = await new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error("the relay did not print its address within 20 s")), 20_000);
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        const m = /^listening http=(\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          ok(`http://${m[1]}/`);
        }
      });
      child.on("exit", (code) => fail(new Error(`the relay exited with ${code}`)));
    });
    return new Relay(child, url);
  }

  /** Kills the process (SIGKILL) and waits for it. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const done = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGKILL");
    await done;
  }
}

/** The result of a CLI run. */
export interface Run {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Runs a program to completion (at most 60 s). */
export function run(program: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((ok) => {
    execFile(program, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      ok({ code, stdout, stderr });
    });
  });
}

/** Runs the Rust `connectoid` CLI with a profile directory and `--json`. */
export async function rustCli(profile: string, args: string[]): Promise<Run> {
  return run(binary("connectoid", "CONNECTOID_CLI_BIN"), ["--profile", profile, "--json", "--no-udp", "--timeout", "2", ...args]);
}

/** Runs this package's `connectoid-js` CLI with a profile directory and `--json`. */
export async function jsCli(profile: string, args: string[]): Promise<Run> {
  return run(process.execPath, [join(JS_DIR, "dist", "src", "cli.js"), "--profile", profile, "--json", "--timeout", "2", ...args]);
}

/** JSON lines of an output. */
export function lines(text: string): Record<string, unknown>[] {
  return text
    .split("\n")
    .filter((l) => l.trim().startsWith("{") || l.trim().startsWith("["))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Removes the temporary directories. */
export function cleanup(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

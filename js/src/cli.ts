#!/usr/bin/env node
/**
 * `connectoid-js`: a small command line over the package, so that other
 * implementations can be tested against it. Commands and `--json` output
 * shapes follow the Rust `connectoid` CLI: share, accept, poll --once, send,
 * safety-code, unshare, peers; `--profile DIR` (or CONNECTOID_PROFILE) holds
 * the profile. Thin: all logic is in the library.
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { Client, Delivery, LINK_ALREADY_USED, SendReport } from "./client.js";
import type { Kind } from "./envelope.js";
import { FileStore } from "./node.js";

const USAGE = `usage: connectoid-js [--profile DIR] [--json] [--timeout SECONDS] COMMAND
  share NICKNAME [--relay URL]... [--ext TEXT] [--app-url URL]
  accept LINK NICKNAME [--payload JSON] [--relay URL]...
  poll --once
  send NICKNAME PAYLOAD [--kind offer|answer|app]
  safety-code NICKNAME
  unshare NICKNAME
  peers`;

interface Args {
  positional: string[];
  flags: Map<string, string[]>;
}

const BOOL = new Set(["json", "once"]);

function parse(argv: string[]): Args {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--")) {
      const [name, inline] = a.slice(2).split("=", 2) as [string, string | undefined];
      const value = BOOL.has(name) ? "true" : (inline ?? argv[++i]);
      if (value === undefined) throw new Error(`--${name} needs a value`);
      flags.set(name, [...(flags.get(name) ?? []), value]);
    } else positional.push(a);
  }
  return { positional, flags };
}

const sendJson = (r: SendReport) => r.relays.map((o) => (o.ok ? { relay: o.relay, ok: true } : { relay: o.relay, ok: false, error: o.error }));

function printSend(report: SendReport, nickname: string, json: boolean) {
  if (json) console.log(JSON.stringify({ nickname, relays: sendJson(report) }));
  else console.log(`sent to ${nickname}: accepted by ${report.relays.filter((r) => r.ok).length} of ${report.relays.length} relay(s)`);
}

async function main(argv: string[]): Promise<number> {
  const { positional, flags } = parse(argv);
  const flag = (name: string) => flags.get(name)?.at(-1);
  const json = flags.has("json");
  const [command, ...rest] = positional;
  if (!command) {
    console.error(USAGE);
    return 2;
  }
  const dir = flag("profile") ?? process.env.CONNECTOID_PROFILE ?? join(homedir(), ".connectoid-js");
  const timeoutMs = flag("timeout") ? Number(flag("timeout")) * 1000 : undefined;
  const client = await Client.open(new FileStore(dir), { timeoutMs, log: (l) => process.env.CONNECTOID_LOG && console.error(l) });
  const relays = (flags.get("relay") ?? []).map((url) => ({ url }));
  const need = (n: number) => {
    if (rest.length < n) throw new Error(`${command}: missing arguments\n${USAGE}`);
  };
  switch (command) {
    case "share": {
      need(1);
      const { link, text } = await client.share(rest[0]!, { relays, ext: flag("ext") ?? null, appUrl: flag("app-url") });
      if (json) console.log(JSON.stringify({ nickname: rest[0], link: text }));
      else console.log(text);
      console.error(`shared a link for ${rest[0]} through ${link.relays.length} relay(s); send it over a channel you trust`);
      return 0;
    }
    case "accept": {
      need(2);
      const report = await client.accept(rest[0]!, rest[1]!, JSON.parse(flag("payload") ?? "null"), { relays });
      printSend(report, rest[1]!, json);
      return 0;
    }
    case "poll": {
      const { deliveries, errors } = await client.poll();
      for (const e of errors) console.error(`connectoid-js: ${e.error}`);
      let linkUsed = false;
      for (const d of deliveries) {
        print(d, json);
        if (d.event.event === "link-already-used") {
          console.error(`connectoid-js: ${d.event.nickname}: ${LINK_ALREADY_USED}`);
          linkUsed = true;
        }
        await client.ack(d);
      }
      return linkUsed ? 1 : 0;
    }
    case "send": {
      need(2);
      const kind = (flag("kind") ?? "app") as Kind;
      if (!["offer", "answer", "app"].includes(kind)) throw new Error(`--kind ${kind}: expected offer, answer or app`);
      printSend(await client.send(rest[0]!, kind, JSON.parse(rest[1]!)), rest[0]!, json);
      return 0;
    }
    case "safety-code": {
      need(1);
      const code = client.safetyCode(rest[0]!);
      if (json) console.log(JSON.stringify({ nickname: rest[0], emoji: code.emoji, words: code.words }));
      else console.log(`${code.emoji}\n${code.words}`);
      return 0;
    }
    case "unshare": {
      need(1);
      const r = await client.unshare(rest[0]!);
      if (json) console.log(JSON.stringify({ nickname: rest[0], notified: r.notified ? sendJson(r.notified) : null, deleted: r.deleted }));
      else console.log(`unshared ${rest[0]}: keys deleted, mailbox deleted at ${r.deleted.filter((d) => d.ok).length} of ${r.deleted.length} relay(s)`);
      return 0;
    }
    case "peers": {
      const peers = client.peers();
      if (json) console.log(JSON.stringify(peers));
      else for (const p of peers) console.log(`${p.nickname} [${p.status}]`);
      return 0;
    }
    default:
      console.error(USAGE);
      return 2;
  }
}

function print(d: Delivery, json: boolean) {
  if (json) console.log(JSON.stringify({ ...d.event, id: d.id }));
  else console.log(`${d.event.nickname}: ${d.event.event} ${JSON.stringify(d.event)}`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: Error) => {
    console.error(`connectoid-js: ${e.message}`);
    process.exit(1);
  },
);

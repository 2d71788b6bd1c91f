/**
 * Interop with the Rust side, real processes: three `connectoid-relay`
 * processes on 127.0.0.1, the Rust `connectoid` CLI, and this package (its
 * library and its `connectoid-js` CLI). JS shares and the Rust CLI accepts;
 * the reverse; a second use of a link; one message over three relays with
 * one of them killed, delivered once.
 */
import { strict as assert } from "node:assert";
import { after, before, test } from "node:test";
import { RelayClient } from "../src/api.js";
import { Client, Delivery } from "../src/client.js";
import { PublicKey } from "../src/keys.js";
import { FileStore } from "../src/node.js";
import { cleanup, jsCli, lines, Relay, rustCli, tempDir } from "./procs.js";

let relays: Relay[] = [];
const relayArgs = () => relays.flatMap((r) => ["--relay", r.url]);

before(async () => {
  relays = await Promise.all([Relay.start(), Relay.start(), Relay.start()]);
});

after(async () => {
  await Promise.all(relays.map((r) => r.kill()));
  cleanup();
});

/** Polls until `want` returns a delivery (bounded: 20 polls). */
async function pollFor(client: Client, want: (d: Delivery) => boolean): Promise<Delivery[]> {
  const all: Delivery[] = [];
  for (let i = 0; i < 20; i++) {
    const { deliveries } = await client.poll();
    for (const d of deliveries) {
      all.push(d);
      await client.ack(d);
    }
    if (all.some(want)) return all;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`no wanted delivery in ${JSON.stringify(all)}`);
}

/** Runs the Rust CLI's `poll --once` until an event matches (bounded: 20 polls). */
async function rustPollFor(profile: string, want: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>[]> {
  const all: Record<string, unknown>[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await rustCli(profile, ["poll", "--once"]);
    all.push(...lines(r.stdout));
    if (all.some(want)) return all;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.fail(`no wanted event in ${JSON.stringify(all)}`);
}

test("JS shares, the Rust CLI accepts, JS receives the hello and answers, the CLI's poll shows it", async () => {
  const alice = await Client.open(new FileStore(tempDir()), { timeoutMs: 2000 });
  const bobDir = tempDir();
  const { text } = await alice.share("bob", { relays: relays.map((r) => ({ url: r.url })) });
  const offer = { sdpOffer: { type: "offer", sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n" } };
  const accepted = await rustCli(bobDir, ["accept", text, "alice", "--payload", JSON.stringify(offer)]);
  assert.equal(accepted.code, 0, accepted.stderr);
  const report = lines(accepted.stdout)[0] as { relays: { ok: boolean }[] };
  assert.equal(report.relays.filter((r) => r.ok).length, 3);

  const got = await pollFor(alice, (d) => d.event.event === "peer-connected");
  const hello = got.find((d) => d.event.event === "peer-connected")!;
  assert.deepEqual((hello.event as { body: unknown }).body, offer);
  assert.equal(got.filter((d) => d.event.event === "peer-connected").length, 1, "the hello came through three relays and is delivered once");

  const answer = { sdpAnswer: { type: "answer", sdp: "v=0\r\n" } };
  const sent = await alice.send("bob", "answer", answer);
  assert.equal(sent.relays.filter((r) => r.ok).length, 3);
  const events = await rustPollFor(bobDir, (e) => e.event === "message" && e.kind === "answer");
  const m = events.find((e) => e.event === "message")!;
  assert.deepEqual(m.body, answer);

  // Both sides show the same safety code.
  const rustCode = lines((await rustCli(bobDir, ["safety-code", "alice"])).stdout)[0]!;
  assert.equal(rustCode.words, alice.safetyCode("bob").words);
  assert.equal(rustCode.emoji, alice.safetyCode("bob").emoji);
});

test("the Rust CLI shares, connectoid-js accepts, polls and answers", async () => {
  const aliceDir = tempDir();
  const bobDir = tempDir();
  const shared = await rustCli(aliceDir, ["share", "bob", ...relayArgs()]);
  assert.equal(shared.code, 0, shared.stderr);
  const link = lines(shared.stdout)[0]!.link as string;
  const accepted = await jsCli(bobDir, ["accept", link, "alice", "--payload", '{"sdpOffer":"o"}']);
  assert.equal(accepted.code, 0, accepted.stderr);
  assert.equal((lines(accepted.stdout)[0]!.relays as { ok: boolean }[]).filter((r) => r.ok).length, 3);

  const events = await rustPollFor(aliceDir, (e) => e.event === "peer-connected");
  assert.deepEqual(events.find((e) => e.event === "peer-connected")!.body, { sdpOffer: "o" });
  const sent = await rustCli(aliceDir, ["send", "bob", '{"sdpAnswer":"a"}', "--kind", "answer"]);
  assert.equal(sent.code, 0, sent.stderr);

  let seen: Record<string, unknown>[] = [];
  for (let i = 0; i < 20 && !seen.some((e) => e.kind === "answer"); i++) {
    const polled = await jsCli(bobDir, ["poll", "--once"]);
    assert.equal(polled.code, 0, polled.stderr);
    seen = seen.concat(lines(polled.stdout));
  }
  const answer = seen.find((e) => e.kind === "answer")!;
  assert.deepEqual(answer.body, { sdpAnswer: "a" });
  assert.equal(answer.event, "message");
  assert.equal(answer.nickname, "alice");
  assert.equal(typeof answer.id, "string");

  const jsCode = lines((await jsCli(bobDir, ["safety-code", "alice"])).stdout)[0]!;
  const rustCode = lines((await rustCli(aliceDir, ["safety-code", "bob"])).stdout)[0]!;
  assert.equal(jsCode.words, rustCode.words);
});

test("a second use of a JS link by the Rust CLI ends in 'already used'", async () => {
  const alice = await Client.open(new FileStore(tempDir()), { timeoutMs: 2000 });
  const { text } = await alice.share("bob", { relays: relays.map((r) => ({ url: r.url })) });
  const bobDir = tempDir();
  const eveDir = tempDir();
  assert.equal((await rustCli(bobDir, ["accept", text, "alice"])).code, 0);
  await pollFor(alice, (d) => d.event.event === "peer-connected");
  assert.equal((await rustCli(eveDir, ["accept", text, "alice"])).code, 0);
  const got = await pollFor(alice, (d) => d.event.event === "link-reuse-refused");
  assert.equal(got.filter((d) => d.event.event === "peer-connected").length, 0);
  let used: Record<string, unknown>[] = [];
  for (let i = 0; i < 20 && !used.some((e) => e.event === "link-already-used"); i++) {
    const polled = await rustCli(eveDir, ["poll", "--once"]);
    used = used.concat(lines(polled.stdout));
    if (used.some((e) => e.event === "link-already-used")) {
      assert.notEqual(polled.code, 0);
      assert.match(polled.stderr, /this link was already used \(intercepted\?\)/);
    }
  }
  assert.equal(used.find((e) => e.event === "link-already-used")!.error, "this link was already used (intercepted?)");
});

test("one message over three relays, one of them killed, is delivered once (both directions)", async () => {
  const own = await Promise.all([Relay.start(), Relay.start(), Relay.start()]);
  try {
    const alice = await Client.open(new FileStore(tempDir()), { timeoutMs: 2000 });
    const bobDir = tempDir();
    const { text } = await alice.share("bob", { relays: own.map((r) => ({ url: r.url })) });
    assert.equal((await rustCli(bobDir, ["accept", text, "alice"])).code, 0);
    await pollFor(alice, (d) => d.event.event === "peer-connected");

    await own[1]!.kill();
    const report = await alice.send("bob", "app", { n: 1 });
    assert.deepEqual(
      report.relays.map((r) => r.ok),
      [true, false, true],
    );
    const events = await rustPollFor(bobDir, (e) => e.event === "message");
    await new Promise((r) => setTimeout(r, 200));
    const more = lines((await rustCli(bobDir, ["poll", "--once"])).stdout);
    assert.equal([...events, ...more].filter((e) => e.event === "message").length, 1, "delivered once");

    const sent = await rustCli(bobDir, ["send", "alice", '{"n":2}']);
    assert.equal(sent.code, 0, sent.stderr);
    const outcomes = lines(sent.stdout)[0]!.relays as { ok: boolean }[];
    assert.deepEqual(
      outcomes.map((o) => o.ok),
      [true, false, true],
    );
    const got = await pollFor(alice, (d) => d.event.event === "message");
    const again = (await alice.poll()).deliveries;
    const messages = [...got, ...again].filter((d) => d.event.event === "message");
    assert.equal(messages.length, 1, "delivered once");
    assert.deepEqual((messages[0]!.event as { body: unknown }).body, { n: 2 });
  } finally {
    await Promise.all(own.map((r) => r.kill()));
  }
});

test("JS to JS: unshare tells the peer and deletes both mailboxes at every relay", async () => {
  const alice = await Client.open(new FileStore(tempDir()), { timeoutMs: 2000 });
  const bob = await Client.open(new FileStore(tempDir()), { timeoutMs: 2000 });
  const { text } = await alice.share("bob", { relays: relays.map((r) => ({ url: r.url })) });
  await bob.accept(text, "alice", { hi: 1 });
  await pollFor(alice, (d) => d.event.event === "peer-connected");
  await alice.send("bob", "app", { n: 1 });
  await pollFor(bob, (d) => d.event.event === "message");
  assert.equal(alice.safetyCode("bob").words, bob.safetyCode("alice").words);
  const aliceKey = PublicKey.parse(alice.peers()[0]!.our_key);
  const bobKey = PublicKey.parse(bob.peers()[0]!.our_key);

  const report = await alice.unshare("bob");
  assert.deepEqual(
    report.deleted.map((d) => d.ok),
    [true, true, true],
  );
  assert.equal(report.notified?.relays.filter((r) => r.ok).length, 3);
  assert.deepEqual(alice.peers(), []);
  await pollFor(bob, (d) => d.event.event === "peer-unshared");
  assert.deepEqual(bob.peers(), []);
  for (const relay of relays) {
    for (const key of [aliceKey, bobKey]) {
      const r = await new RelayClient(relay.url).request({ action: "check", pub: key, at: 0 });
      assert.equal(r.type, "not-found", `${relay.url} still holds a message for ${key}`);
    }
  }
});

test("the relay information document is read through the relay URL", async () => {
  const info = await new RelayClient(relays[0]!.url).info();
  assert.equal(info.protocol, 1);
  assert.equal(info.software, "connectoid-relay");
  assert.ok((info.limits?.max_message_bytes ?? 0) > 0);
});

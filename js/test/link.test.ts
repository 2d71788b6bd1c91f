/** Link and envelope behaviour beyond the vectors: round trips and precise errors. */
import { strict as assert } from "node:assert";
import { test } from "node:test";
import { randomBytes } from "../src/b64.js";
import { EnvelopeError, openEnvelope, sealEnvelope, verifyJws, signEnvelope } from "../src/envelope.js";
import { SecretKey } from "../src/keys.js";
import { decodeLink, encodeLink, Link, LinkError, toAppUrl, validateLink } from "../src/link.js";

test("a link with several relays, per-relay ext and a secret round-trips, also through an app URL", () => {
  const link: Link = {
    key: SecretKey.generate().publicKey(),
    relays: [{ url: "https://a.example/", ext: "key a" }, { url: "http://127.0.0.1:8080/" }],
    ext: "app",
    secret: randomBytes(16),
  };
  validateLink(link);
  const text = encodeLink(link);
  assert.equal(text.split(".").length, 4);
  const back = decodeLink(text);
  assert.equal(encodeLink(back), text);
  assert.equal(encodeLink(decodeLink(toAppUrl(link, "myapp:open?x=1#f"))), text);
  assert.throws(() => validateLink({ ...link, ext: "" }), (e: unknown) => e instanceof LinkError && e.code === "empty-ext");
});

test("an envelope signed by one key and sealed to another opens only there, and not after 70 minutes", async () => {
  const alice = SecretKey.generate();
  const bob = SecretKey.generate();
  const from: Link = { key: bob.publicKey(), relays: [{ url: "https://r.example/" }] };
  const e = { kind: "app" as const, to: alice.publicKey(), from, ts: 1_700_000_000_000, body: { b: [1, "é"], a: null } };
  const sealed = await sealEnvelope(bob, e);
  const opened = await openEnvelope(alice, sealed, e.ts);
  assert.deepEqual(opened.body, e.body);
  await assert.rejects(openEnvelope(bob, sealed, e.ts), (x: unknown) => x instanceof EnvelopeError && x.kind === "Open::Decrypt");
  await assert.rejects(openEnvelope(alice, sealed, e.ts + 4_200_001), (x: unknown) => x instanceof EnvelopeError && x.kind === "Expired");
  assert.throws(() => signEnvelope(alice, e), (x: unknown) => x instanceof EnvelopeError && x.kind === "SignerMismatch");
  const jws = signEnvelope(bob, e);
  const tampered = jws.slice(0, -2) + (jws.endsWith("AA") ? "BA" : "AA");
  assert.throws(() => verifyJws(tampered), (x: unknown) => x instanceof EnvelopeError);
});

test("a changed character of a four-part link is damaged, a cut one truncated, a pasted one cleaned", () => {
  const link: Link = {
    key: SecretKey.generate().publicKey(),
    relays: [{ url: "https://a.example/" }],
    secret: new Uint8Array(16).fill(5),
  };
  const text = encodeLink(link);
  const code = (input: string): string => {
    try {
      decodeLink(input);
      return "ok";
    } catch (e) {
      return (e as LinkError).code;
    }
  };
  const changed = text.slice(0, 70) + (text[70] === "A" ? "B" : "A") + text.slice(71);
  assert.equal(code(changed), "damaged");
  assert.equal(code(text.slice(0, -3)), "truncated");
  assert.equal(code(`“${text.slice(0, 50)}\r\n ${text.slice(50)}”.`), "ok");
  assert.equal(code(`(https://app.example.com/?connectoid=${text}),`), "ok");
});

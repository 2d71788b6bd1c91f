/**
 * Unit tests of `src/peer.ts` beyond `spec/vectors/peer.json`: candidate
 * text in and out (RFC 5952 IPv6, what is not `ip:port`), frames back to
 * back, and proofs that must not verify.
 */
import { strict as assert } from "node:assert";
import { test } from "node:test";
import { SecretKey } from "../src/keys.js";
import {
  AuthMessageError,
  decodeFrame,
  encodeFrame,
  formatCandidate,
  FrameError,
  MAX_FRAME_LEN,
  OfferError,
  offerFromBody,
  offerToBody,
  parseCandidate,
  parseProof,
  proofJson,
  signProof,
  verifyProof,
} from "../src/peer.js";

test("candidates come out in canonical form and bad ones are malformed", () => {
  const canon = (t: string) => formatCandidate(parseCandidate(t));
  assert.equal(canon("192.0.2.7:41000"), "192.0.2.7:41000");
  assert.equal(canon("[2001:DB8:0:0:0:0:0:7]:1"), "[2001:db8::7]:1");
  assert.equal(canon("[::]:0"), "[::]:0");
  assert.equal(canon("[1:0:0:2:0:0:0:3]:9"), "[1:0:0:2::3]:9");
  assert.equal(canon("[1:0:2:3:4:5:6:7]:9"), "[1:0:2:3:4:5:6:7]:9");
  assert.equal(canon("[::ffff:192.0.2.1]:65535"), "[::ffff:192.0.2.1]:65535");
  for (const bad of ["relay.example:1", "192.0.2.7", "192.0.2.7:65536", "192.0.2.07:1", "1.2.3:4", "2001:db8::7:1", "[2001:db8::7]", "[fe80::1%1]:5", "[1::2::3]:4", "[1:2:3:4:5:6:7:8:9]:1", ":1", "192.0.2.7:-1", "192.0.2.7: 1"]) {
    assert.throws(() => parseCandidate(bad), (e: unknown) => e instanceof OfferError && e.code === "malformed", bad);
  }
});

test("an offer survives body -> offer -> body, and the checks keep their order", () => {
  const body = { quic: { session: "c2Vzc2lvbg", fingerprint: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc", candidates: ["[::1]:6000", "127.0.0.1:5000"] }, other: 1 };
  const offer = offerFromBody(body);
  assert.deepEqual(offerToBody(offer), { quic: body.quic });
  const code = (b: unknown) => {
    try {
      offerFromBody(b);
      return null;
    } catch (e) {
      return e instanceof OfferError ? e.code : String(e);
    }
  };
  assert.equal(code(null), "no-quic");
  assert.equal(code([]), "no-quic");
  assert.equal(code({ quic: { ...body.quic, candidates: "127.0.0.1:1" } }), "malformed");
  assert.equal(code({ quic: { ...body.quic, candidates: [1] } }), "malformed");
  // malformed comes before too many; too many before the session and fingerprint.
  assert.equal(code({ quic: { ...body.quic, candidates: [...Array(17).fill("1.2.3.4:5"), "x"] } }), "malformed");
  assert.equal(code({ quic: { session: "", fingerprint: "", candidates: Array(17).fill("1.2.3.4:5") } }), "too-many-candidates");
  assert.equal(code({ quic: { ...body.quic, session: "", fingerprint: "" } }), "session");
  // 64 bytes of UTF-8 is the most, counted in bytes: 32 two-byte characters pass, 33 do not.
  assert.equal(code({ quic: { ...body.quic, session: "é".repeat(32) } }), null);
  assert.equal(code({ quic: { ...body.quic, session: "é".repeat(33) } }), "session");
  assert.throws(() => offerToBody({ ...offer, session: "" }), (e: unknown) => e instanceof OfferError && e.code === "session");
});

test("frames back to back decode one after the other", () => {
  const two = new Uint8Array([...encodeFrame(new Uint8Array([1, 2])), ...encodeFrame(new Uint8Array(0))]);
  const first = decodeFrame(two);
  assert.deepEqual([...first.message], [1, 2]);
  const second = decodeFrame(first.rest);
  assert.equal(second.message.length, 0);
  assert.equal(second.rest.length, 0);
  assert.throws(() => decodeFrame(new Uint8Array(0)), (e: unknown) => e instanceof FrameError && e.code === "truncated");
  const max = new Uint8Array(4);
  new DataView(max.buffer).setUint32(0, MAX_FRAME_LEN);
  // The largest length is allowed; the message is then simply not there yet.
  assert.throws(() => decodeFrame(max), (e: unknown) => e instanceof FrameError && e.code === "truncated");
});

test("a proof verifies only with its own inputs and key", () => {
  const key = SecretKey.fromBytes(new Uint8Array(48).fill(7));
  const newKey = SecretKey.fromBytes(new Uint8Array(48).fill(8)).publicKey();
  const [ours, theirs, challenge] = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), new Uint8Array(32).fill(3)];
  const proof = parseProof(proofJson(signProof(key, challenge, ours, theirs, newKey)));
  assert.ok(verifyProof(proof, key.publicKey(), challenge, ours, theirs));
  assert.ok(!verifyProof(proof, newKey, challenge, ours, theirs));
  assert.ok(!verifyProof({ ...proof, key: key.publicKey() }, key.publicKey(), challenge, ours, theirs));
  const flipped = Uint8Array.from(proof.signature);
  flipped[95]! ^= 1;
  assert.ok(!verifyProof({ ...proof, signature: flipped }, key.publicKey(), challenge, ours, theirs));
  // `"key": null` reads as no key; a key of another type or an array message is malformed.
  assert.equal(parseProof(proofJson({ ...proof, key: null }).replace("}", ',"key":null}')).key, null);
  for (const bad of ['{"signature":"x","key":1}', '["x"]', "null", '"x"']) {
    assert.throws(() => parseProof(bad), (e: unknown) => e instanceof AuthMessageError && e.code === "malformed", bad);
  }
});

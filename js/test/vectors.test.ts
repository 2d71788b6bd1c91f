/**
 * Checks the vectors of `spec/vectors/*.json` (the files the Rust tests and
 * check.py read) byte for byte against this package, and prints how many
 * were checked per file. The last test fails when a file in the directory
 * was not read, so a new vector file cannot be skipped silently.
 */
import { strict as assert } from "node:assert";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { b64decode, b64encode, fromHex, toHex, utf8 } from "../src/b64.js";
import { ApiError, decodeRequest, decodeResponse, ERROR_STATUS, MAX_MAILBOXES_PER_HELD_CHECK, MAX_RECEIVE_LIMIT, PUSH_ERROR_STATUS, Request, requestJson } from "../src/api.js";
import { checkProof, Envelope, ENVELOPE_MAX_AGE_MS, ENVELOPE_MAX_SKEW_MS, ENVELOPE_VERSION, EnvelopeError, JWS_HEADER, linkProof, openEnvelope, payloadJson, sealEnvelope, signEnvelope } from "../src/envelope.js";
import { KeyError, PublicKey, SecretKey } from "../src/keys.js";
import { decodeLink, decodeReply, encodeLink, Link, LinkError, MAX_APP_URL_OVERHEAD, MAX_EXT_LEN, MAX_LINK_LEN, MAX_RELAY_URL_LEN, MAX_RELAYS_PER_LINK, parseRelayUrl, toAppUrl } from "../src/link.js";
import {
  AUTH_LABEL,
  AuthMessageError,
  CHALLENGE_LEN,
  certificateFingerprint,
  challengeJson,
  decodeFrame,
  encodeFrame,
  FINGERPRINT_LEN,
  FrameError,
  MAX_CANDIDATES,
  MAX_FRAME_LEN,
  MAX_SESSION_LEN,
  OfferError,
  offerFromBody,
  offerToBody,
  parseChallenge,
  parseProof,
  proofJson,
  signingInput,
  signProof,
  verifyProof,
} from "../src/peer.js";
import { safetyCode, safetyDigest } from "../src/safety.js";
import * as udp from "../src/udp.js";
import { answerFor, MAX_MESSAGE_BYTES, MAX_PLAINTEXT_LEN, messageId, open, openQuestion, pad, paddedLen, seal, Purpose } from "../src/seal.js";

const DIR = new URL("../../../spec/vectors/", import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type V = any;
const load = (name: string): V => JSON.parse(readFileSync(new URL(name, DIR), "utf8"));
const counts = new Map<string, number>();
const count = (file: string, n = 1) => counts.set(file, (counts.get(file) ?? 0) + n);

function linkJson(link: Link): V {
  return {
    pub: link.key.toString(),
    relays: link.relays.map((r) => ({ url: r.url, ext: r.ext ?? null })),
    ext: link.ext ?? null,
    secret_hex: link.secret ? toHex(link.secret) : null,
  };
}

const decodeMode = (mode: string, input: string) => (mode === "link" ? decodeLink(input) : decodeReply(input));

function checkLinks(file: string, valid: V[], invalid: V[]) {
  for (const c of valid) {
    const link = decodeMode(c.mode, c.input);
    assert.deepEqual(linkJson(link), c.link, c.name);
    assert.equal(encodeLink(link), c.encoded, c.name);
    count(file);
  }
  for (const c of invalid) {
    assert.throws(
      () => decodeMode(c.mode, c.input),
      (e: unknown) => e instanceof LinkError && e.code === c.code,
      `${c.name}: expected ${c.code}`,
    );
    count(file);
  }
}

test("keys.json", () => {
  const v = load("keys.json");
  for (const c of v.valid) {
    const sk = SecretKey.fromBytes(fromHex(c.secret_hex));
    assert.equal(sk.publicKey().toString(), c.public_b64, c.name);
    assert.equal(toHex(sk.publicKey().bytes), c.public_hex);
    assert.equal(PublicKey.parse(c.public_b64).toString(), c.public_b64);
    count("keys.json");
  }
  for (const c of v.signatures) {
    const sk = SecretKey.fromBytes(fromHex(c.secret_hex));
    const sig = sk.sign(utf8(c.message));
    assert.equal(toHex(sig), c.signature_hex);
    assert.ok(sk.publicKey().verify(utf8(c.message), sig));
    count("keys.json");
  }
  for (const c of v.invalid_public) {
    assert.throws(() => PublicKey.parse(c.text), (e: unknown) => e instanceof KeyError && e.kind === c.error, c.name);
    count("keys.json");
  }
  for (const c of v.invalid_secret) {
    assert.throws(() => SecretKey.fromBytes(fromHex(c.secret_hex)), (e: unknown) => e instanceof KeyError && e.kind === c.error, c.name);
    count("keys.json");
  }
});

test("hpke.json", async () => {
  const v = load("hpke.json");
  assert.deepEqual(v.suite, { aead_id: 2, kdf_id: 2, kem_id: 17, mode: 0 });
  count("hpke.json");
  for (const c of v.padding) {
    assert.equal(paddedLen(c.plaintext_len), c.padded_len);
    count("hpke.json");
  }
  for (const c of v.vectors) {
    const sk = SecretKey.fromBytes(fromHex(c.recipient_secret_hex));
    assert.equal(sk.publicKey().toString(), c.recipient_public_b64);
    const purpose = c.purpose as Purpose;
    const plaintext = fromHex(c.plaintext_hex);
    const padded = purpose === "message" ? pad(plaintext) : plaintext;
    assert.equal(toHex(padded), c.padded_hex, c.name);
    const sealed = await seal(sk.publicKey(), purpose, padded, fromHex(c.ikm_e_hex));
    assert.equal(toHex(sealed), c.sealed_hex, c.name);
    assert.equal(toHex(sealed.subarray(0, 97)), c.enc_hex);
    assert.equal(b64encode(sealed), c.sealed_b64);
    assert.equal(toHex(messageId(sealed)), c.id_hex);
    assert.equal(toHex(await open(sk, purpose, sealed)), c.padded_hex);
    if (purpose === "question") {
      const secret = await openQuestion(sk, sealed);
      assert.equal(b64encode(answerFor(secret, c.relay_url)), c.answer_b64);
    }
    count("hpke.json");
  }
});

function envelopeFrom(c: V): Envelope {
  return {
    kind: c.kind,
    to: PublicKey.parse(c.to),
    from: decodeReply(c.from),
    ts: c.ts,
    proof: c.proof_b64 ? b64decode(c.proof_b64) : null,
    body: c.body ?? null,
  };
}

async function checkRejected(file: string, c: V) {
  const recipient = SecretKey.fromBytes(fromHex(c.recipient_secret_hex));
  if (c.ikm_e_hex) {
    const sealed = await seal(PublicKey.parse(c.sealed_to_b64), c.purpose, fromHex(c.padded_hex), fromHex(c.ikm_e_hex));
    assert.equal(toHex(sealed), c.sealed_hex, c.name);
  }
  const sealed = fromHex(c.sealed_hex);
  let error: string | null = null;
  try {
    const e = await openEnvelope(recipient, sealed, c.now_ms);
    if (c.link_secret_hex) checkProof(e, fromHex(c.link_secret_hex));
  } catch (e) {
    if (!(e instanceof EnvelopeError)) throw e;
    error = e.kind;
  }
  assert.equal(error, c.error, c.name);
  count(file);
}

test("envelopes.json", async () => {
  const v = load("envelopes.json");
  for (const c of v.valid) {
    const sender = SecretKey.fromBytes(fromHex(c.sender_secret_hex));
    const recipient = SecretKey.fromBytes(fromHex(c.recipient_secret_hex));
    const e = envelopeFrom(c.envelope);
    assert.equal(payloadJson(e), c.payload_json, c.name);
    const jws = signEnvelope(sender, e);
    assert.equal(jws, c.jws, c.name);
    assert.equal(jws.split(".").slice(0, 2).join("."), c.signing_input);
    assert.equal(toHex(b64decode(jws.split(".")[2]!)), c.signature_hex);
    const sealed = await sealEnvelope(sender, e, fromHex(c.ikm_e_hex));
    assert.equal(toHex(sealed), c.sealed_hex, c.name);
    if (c.proof_hex) {
      const secret = fromHex(c.link_secret_hex);
      assert.equal(toHex(linkProof(secret, e.to, e.from.key)), c.proof_hex);
    }
    for (const now of c.open_at_ms) {
      const opened = await openEnvelope(recipient, sealed, now);
      assert.equal(payloadJson(opened), c.payload_json);
      if (c.link_secret_hex && opened.kind === "hello") checkProof(opened, fromHex(c.link_secret_hex));
    }
    count("envelopes.json");
  }
  for (const c of v.rejected) await checkRejected("envelopes.json", c);
});

test("the limits the files state are this package's limits", () => {
  assert.deepEqual(load("links.json").limits, {
    max_app_url_overhead: MAX_APP_URL_OVERHEAD,
    max_ext_len: MAX_EXT_LEN,
    max_link_len: MAX_LINK_LEN,
    max_relay_url_len: MAX_RELAY_URL_LEN,
    max_relays_per_link: MAX_RELAYS_PER_LINK,
  });
  assert.deepEqual(load("api.json").limits, { max_ext_len: MAX_EXT_LEN, max_message_bytes: MAX_MESSAGE_BYTES, max_receive_limit: MAX_RECEIVE_LIMIT, max_request_body: 91478 });
  assert.deepEqual(load("udp.json").limits, {
    max_checks_per_datagram: udp.MAX_CHECKS_PER_DATAGRAM,
    max_datagram_ext_len: udp.MAX_DATAGRAM_EXT_LEN,
    max_datagram_len: udp.MAX_DATAGRAM_LEN,
  });
  assert.equal(load("hpke.json").max_plaintext_len, MAX_PLAINTEXT_LEN);
  const e = load("envelopes.json");
  assert.deepEqual([e.header, e.max_age_ms, e.max_skew_ms, e.version], [JWS_HEADER, ENVELOPE_MAX_AGE_MS, ENVELOPE_MAX_SKEW_MS, ENVELOPE_VERSION]);
  assert.equal(load("safety.json").label, "connectoid/v1 safety code");
  count("limits", 6);
});

test("links.json", () => {
  const v = load("links.json");
  checkLinks("links.json", v.valid, v.invalid);
  for (const c of v.app_urls) {
    assert.equal(toAppUrl(decodeLink(c.link), c.app_url), c.result);
    count("links.json");
  }
});

function requestFrom(d: V, raw: string): Request {
  const pub = PublicKey.parse(d.pub);
  const at = /"at":(\d+)/.exec(raw);
  switch (d.action) {
    case "send":
      return { action: "send", pub, ext: d.ext, data: fromHex(d.data_hex) };
    case "check":
      return { action: "check", pub, ext: d.ext, at: at ? BigInt(at[1]!) : null };
    case "receive":
      return { action: "receive", pub, ext: d.ext, at: at ? BigInt(at[1]!) : null, answer: fromHex(d.answer_hex), limit: d.limit };
    default:
      return { action: "delete", pub, ext: d.ext, answer: d.answer_hex ? fromHex(d.answer_hex) : null };
  }
}

test("wait.json", () => {
  const v = load("wait.json");
  assert.equal(v.limits.max_mailboxes_per_held_check, MAX_MAILBOXES_PER_HELD_CHECK);
  for (const c of v.requests) {
    if (c.decoded) {
      const got = decodeRequest(c.body);
      assert.equal(requestJson(got), c.canonical, c.name);
      if (c.decoded.wait !== undefined) {
        const want: Request = {
          action: "check",
          pub: PublicKey.parse(c.decoded.pub),
          ext: c.decoded.ext,
          at: BigInt(/"at":(\d+),"ext"/.exec(c.canonical)![1]!),
          wait: BigInt(/"wait":(\d+)/.exec(c.canonical)?.[1] ?? "0"),
          also: c.decoded.also.map((a: V) => ({ pub: PublicKey.parse(a.pub), at: a.at })),
        };
        assert.equal(requestJson(want), c.canonical, c.name);
      }
    } else {
      assert.throws(
        () => decodeRequest(c.body),
        (e: unknown) =>
          e instanceof ApiError && e.error === c.error && e.status === c.status && (!["Bad value", "Missing field"].includes(c.error) || e.detail === c.detail),
        `${c.name}: ${c.error}`,
      );
    }
    count("wait.json");
  }
  for (const c of v.responses) {
    const r = decodeResponse("check", c.json);
    if (c.value.type === "not-found") assert.deepEqual(r, { type: "not-found" });
    else assert.deepEqual(r, { type: "found-many", checks: c.value.checks.map((f: V) => ({ pub: f.pub, question: fromHex(f.question_hex) })) });
    count("wait.json");
  }
});

test("api.json", () => {
  const v = load("api.json");
  for (const c of v.requests) {
    if (c.decoded) {
      const want = requestFrom(c.decoded, c.canonical);
      assert.equal(requestJson(want), c.canonical, c.name);
      const got = decodeRequest(c.body);
      assert.equal(requestJson(got), c.canonical, c.name);
    } else {
      assert.throws(
        () => decodeRequest(c.body),
        (e: unknown) => e instanceof ApiError && e.error === c.error && e.status === c.status && (c.error !== "Missing field" || e.detail === c.detail),
        `${c.name}: ${c.error}`,
      );
    }
    count("api.json");
  }
  for (const c of v.responses) {
    const r = decodeResponse(c.action, c.json);
    const value = c.value;
    switch (value.type) {
      case "one":
        assert.deepEqual(r, { type: "one", at: value.at, data: fromHex(value.data_hex) });
        break;
      case "many":
        assert.deepEqual(r, { type: "many", messages: value.messages.map((m: V) => ({ at: m.at, data: fromHex(m.data_hex) })) });
        break;
      case "found":
        assert.deepEqual(r, { type: "found", question: fromHex(value.question_hex) });
        break;
      case "error":
        assert.deepEqual(r, { type: "error", error: value.error, detail: value.detail });
        assert.equal(ERROR_STATUS[value.error], c.status);
        break;
      default:
        assert.deepEqual(r, { type: value.type });
    }
    count("api.json");
  }
  for (const c of v.errors) {
    assert.equal(ERROR_STATUS[c.error], c.status, c.error);
    count("api.json");
  }
  assert.equal(Object.keys(ERROR_STATUS).length, v.errors.length);
});

test("push.json", () => {
  // This client does not send push requests yet (the browser side is the web
  // client's issue): it checks what it shares with them, the error answers and
  // strings, and that every request body is an object naming the push action.
  const v = load("push.json");
  for (const c of v.requests) {
    const body = JSON.parse(c.body);
    assert.equal(body.action, "push", c.name);
    if (c.decoded) assert.equal(JSON.parse(c.canonical).push, c.decoded.push, c.name);
    count("push.json");
  }
  for (const c of v.responses) {
    const value = c.value;
    if (value.type === "error") {
      assert.deepEqual(decodeResponse("send", c.json), { type: "error", error: value.error, detail: value.detail });
      assert.equal(PUSH_ERROR_STATUS[value.error], c.status);
    } else {
      assert.equal(c.status, 200, c.name);
      assert.deepEqual(JSON.parse(c.json).push ?? [], value.push ?? [], c.name);
    }
    count("push.json");
  }
  for (const c of v.errors) {
    assert.equal(PUSH_ERROR_STATUS[c.error], c.status, c.error);
    assert.equal(ERROR_STATUS[c.error], undefined, c.error);
    count("push.json");
  }
  assert.equal(Object.keys(PUSH_ERROR_STATUS).length, v.errors.length);
});

test("safety.json", () => {
  const v = load("safety.json");
  for (const c of v.vectors) {
    const a = PublicKey.parse(c.a_b64);
    const b = PublicKey.parse(c.b_b64);
    assert.equal(toHex(safetyDigest(a, b)), c.digest_hex);
    const code = safetyCode(b, a);
    assert.deepEqual(code.indices, c.indices);
    assert.equal(code.emoji, c.emoji);
    assert.equal(code.words, c.words);
    count("safety.json");
  }
});

test("clarified.json", async () => {
  const v = load("clarified.json");
  for (const c of v.app_urls) {
    const link = decodeLink(c.link);
    const result = toAppUrl(link, c.app_url);
    assert.equal(result, c.result, c.name);
    assert.equal(encodeLink(decodeLink(result)), c.link);
    count("clarified.json");
  }
  for (const c of v.relay_urls) {
    let got: string | null = null;
    try {
      got = parseRelayUrl(c.input);
    } catch {
      got = null;
    }
    assert.equal(got, c.normalized, c.name);
    count("clarified.json");
  }
  checkLinks("clarified.json", v.links_valid, v.links_invalid);
  for (const c of v.answers) {
    assert.equal(parseRelayUrl(c.relay_url_input), c.relay_url);
    assert.equal(b64encode(answerFor(fromHex(c.secret_hex), c.relay_url)), c.answer_b64);
    count("clarified.json");
  }
  for (const c of v.envelopes) await checkRejected("clarified.json", c);
});

function ipBytes(text: string): Uint8Array {
  if (text.includes(".")) return Uint8Array.from(text.split(".").map(Number));
  const [head, tail] = text.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill("0"), ...t].map((g) => parseInt(g, 16));
  return Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 255]));
}

function udpResponse(v: V): udp.CheckResponse {
  return {
    nonce: fromHex(v.nonce_hex),
    statuses: v.statuses,
    observed: v.observed ? { ip: ipBytes(v.observed.ip), port: v.observed.port } : null,
  };
}

test("udp.json", () => {
  const v = load("udp.json");
  // `at` goes up to 2^64 - 1, beyond a JSON number's exact range in
  // JavaScript: read the digits from the text (requests hold every "at").
  const ats = [...readFileSync(new URL("udp.json", DIR), "utf8").matchAll(/"at": (\d+)/g)].map((m) => BigInt(m[1]!));
  for (const c of v.requests) {
    const value: udp.CheckRequest = {
      nonce: fromHex(c.value.nonce_hex),
      ext: c.value.ext,
      checks: c.value.checks.map((k: V) => ({ key: fromHex(k.key_hex), at: ats.shift()! })),
    };
    assert.equal(toHex(udp.encodeRequest(value)), c.hex, c.name);
    const back = udp.decodeRequest(fromHex(c.hex));
    assert.equal(toHex(udp.encodeRequest(back)), c.hex);
    assert.equal(back.checks.length, value.checks.length);
    count("udp.json");
  }
  for (const c of v.responses) {
    assert.equal(toHex(udp.encodeResponse(udpResponse(c.value))), c.hex, c.name);
    assert.deepEqual(udp.decodeResponse(fromHex(c.hex)), udpResponse(c.value));
    count("udp.json");
  }
  for (const c of v.encode_within) {
    const got = udp.encodeWithin(udpResponse(c.response), c.request_len);
    assert.equal(got ? toHex(got) : null, c.hex, c.name);
    count("udp.json");
  }
  for (const c of v.invalid) {
    const decode = c.decoder === "request" ? udp.decodeRequest : udp.decodeResponse;
    assert.throws(() => decode(fromHex(c.hex)), (e: unknown) => e instanceof udp.DatagramError && e.kind === c.error, `${c.name}: ${c.error}`);
    count("udp.json");
  }
});

test("peer.json", () => {
  const v = load("peer.json");
  const file = "peer.json";
  assert.deepEqual(v.limits, {
    auth_label: AUTH_LABEL,
    challenge_len: CHALLENGE_LEN,
    fingerprint_len: FINGERPRINT_LEN,
    max_candidates: MAX_CANDIDATES,
    max_frame_len: MAX_FRAME_LEN,
    max_session_len: MAX_SESSION_LEN,
  });
  count(file);
  for (const c of v.frames) {
    const message = fromHex(c.message_hex);
    assert.equal(toHex(encodeFrame(message)), c.frame_hex, c.name);
    // A frame followed by more bytes: the message, then exactly those bytes.
    const { message: got, rest } = decodeFrame(fromHex(c.frame_hex + "ff00"));
    assert.equal(toHex(got), c.message_hex, c.name);
    assert.equal(toHex(rest), "ff00", c.name);
    count(file);
  }
  for (const c of v.invalid_frames) {
    assert.throws(() => decodeFrame(fromHex(c.hex)), (e: unknown) => e instanceof FrameError && e.code === c.error, `${c.name}: expected ${c.error}`);
    count(file);
  }
  assert.throws(() => encodeFrame(new Uint8Array(MAX_FRAME_LEN + 1)), (e: unknown) => e instanceof FrameError && e.code === "too-long");
  for (const c of v.fingerprints) {
    const fp = certificateFingerprint(fromHex(c.certificate_hex));
    assert.equal(toHex(fp), c.fingerprint_hex, c.name);
    assert.equal(b64encode(fp), c.fingerprint_b64, c.name);
    count(file);
  }
  for (const c of v.offers) {
    const offer = offerFromBody(c.body);
    assert.equal(offer.session, c.offer.session, c.name);
    assert.equal(toHex(offer.fingerprint), c.offer.fingerprint_hex, c.name);
    assert.deepEqual(offerToBody(offer).quic.candidates, c.offer.candidates, c.name);
    assert.deepEqual(offerToBody(offer), c.body, c.name);
    count(file);
  }
  for (const c of v.invalid_offers) {
    assert.throws(() => offerFromBody(c.body), (e: unknown) => e instanceof OfferError && e.code === c.error, `${c.name}: expected ${c.error}`);
    count(file);
  }
  for (const c of v.proofs) {
    const challenge = fromHex(c.challenge_hex);
    const signer = fromHex(c.signer_fingerprint_hex);
    const verifier = fromHex(c.verifier_fingerprint_hex);
    const sk = SecretKey.fromBytes(fromHex(c.signer_secret_hex));
    assert.equal(sk.publicKey().toString(), c.signer_public_b64, c.name);
    const newKey = c.new_key_b64 === null ? null : PublicKey.parse(c.new_key_b64);
    assert.equal(challengeJson(challenge), c.challenge_json, c.name);
    assert.equal(toHex(parseChallenge(utf8(c.challenge_json))), c.challenge_hex, c.name);
    assert.equal(toHex(signingInput(challenge, signer, verifier, newKey)), c.signing_input_hex, c.name);
    const proof = signProof(sk, challenge, signer, verifier, newKey);
    assert.equal(toHex(proof.signature), c.signature_hex, c.name);
    assert.equal(proofJson(proof), c.proof_json, c.name);
    const read = parseProof(utf8(c.proof_json));
    assert.equal(toHex(read.signature), c.signature_hex, c.name);
    assert.equal(read.key?.toString() ?? null, c.new_key_b64, c.name);
    const pinned = PublicKey.parse(c.signer_public_b64);
    assert.ok(verifyProof(read, pinned, challenge, signer, verifier), c.name);
    // Each input is inside the signature: swapping the fingerprints, another
    // challenge, or dropping the announced key must fail.
    assert.ok(!verifyProof(read, pinned, challenge, verifier, signer), c.name);
    const other = Uint8Array.from(challenge);
    other[0]! ^= 1;
    assert.ok(!verifyProof(read, pinned, other, signer, verifier), c.name);
    if (read.key) assert.ok(!verifyProof({ ...read, key: null }, pinned, challenge, signer, verifier), c.name);
    count(file);
  }
  for (const c of v.invalid_messages) {
    const parse = c.message === "challenge" ? parseChallenge : parseProof;
    assert.throws(() => parse(utf8(c.json)), (e: unknown) => e instanceof AuthMessageError && e.code === c.error, `${c.name}: expected ${c.error}`);
    count(file);
  }
});

test("every file in spec/vectors was read", () => {
  let total = 0;
  for (const [file, n] of [...counts].sort()) {
    console.log(`vectors: ${file}: ${n} checked`);
    if (file !== "limits") total += n;
  }
  const files = readdirSync(DIR).filter((f) => f.endsWith(".json"));
  const unread = files.filter((f) => !counts.has(f));
  const read = files.length - unread.length;
  console.log(`vectors: ${total} checked in ${read} of ${files.length} files (${unread.join(", ") || "none"} not read)`);
  assert.deepEqual(unread, [], "every vector file must be checked by a test in this file");
});

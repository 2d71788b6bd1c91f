/**
 * Envelopes (spec/protocol.md §6): the signed JSON payload (JWS compact,
 * ES384) that peers exchange inside a sealed message, link proofs, and the
 * checks of opening in the spec's order. The sender's identity is NOT
 * decided here (see `client.ts`): opening proves only that the holder of the
 * `from` key signed. No I/O.
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { b64decode, b64encode, concat, ctEqual, fromUtf8, utf8 } from "./b64.js";
import { isU64, scanTop } from "./json.js";
import { PublicKey, SecretKey, SIGNATURE_LEN } from "./keys.js";
import { decodeReply, encodeLink, Link, LinkError } from "./link.js";
import { OpenError, openMessage, sealMessage } from "./seal.js";

/** The one JWS header (34 bytes). */
export const JWS_HEADER = '{"alg":"ES384","typ":"connectoid"}';
/** Envelope version. */
export const ENVELOPE_VERSION = 1;
/** Oldest acceptable envelope, ms before now. */
export const ENVELOPE_MAX_AGE_MS = 4_200_000;
/** Furthest acceptable future `ts`, ms after now. */
export const ENVELOPE_MAX_SKEW_MS = 600_000;
/** Deepest accepted payload nesting (the payload object is level 1). */
export const MAX_PAYLOAD_DEPTH = 127;

/** The kinds of §6.3. */
export const KINDS = ["hello", "offer", "answer", "relays", "unshare", "app", "link-used"] as const;
/** What an envelope is for. */
export type Kind = (typeof KINDS)[number];

/** An envelope's fields. */
export interface Envelope {
  /** What it is for. */
  kind: Kind;
  /** The recipient's mailbox key. */
  to: PublicKey;
  /** The sender's reply value; its key signs. */
  from: Link;
  /** Sender's clock, ms since the Unix epoch. */
  ts: number;
  /** The link proof of a hello (32 bytes). */
  proof?: Uint8Array | null;
  /** The app's payload (JSON; null when none). */
  body?: unknown;
}

/** Names of the faults, as `envelopes.json` writes them. */
export type EnvelopeErrorKind =
  | `Open::${"TooShort" | "BadEncappedKey" | "Decrypt" | "Padding" | "WrongLength"}`
  | "Seal"
  | "SignerMismatch"
  | "From"
  | "Jws"
  | "Header"
  | "Payload"
  | "Version"
  | "UnknownKind"
  | "BadSignature"
  | "WrongRecipient"
  | "Expired"
  | "FromFuture"
  | "MissingProof"
  | "BadProof";

/** An envelope could not be made, or was rejected when opened. */
export class EnvelopeError extends Error {
  override name = "EnvelopeError";
  /** Creates the error. */
  constructor(readonly kind: EnvelopeErrorKind, message: string) {
    super(message);
  }
}

/** JSON text as the reference implementation writes it: compact, object keys sorted by UTF-8 bytes. */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value as object).sort(compareUtf8);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function compareUtf8(a: string, b: string): number {
  // Code point order equals UTF-8 byte order.
  const ai = [...a];
  const bi = [...b];
  for (let i = 0; i < Math.min(ai.length, bi.length); i++) {
    const d = ai[i]!.codePointAt(0)! - bi[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return ai.length - bi.length;
}

/** The payload JSON of §6.2 in the reference member order. */
export function payloadJson(e: Envelope): string {
  let out = `{"v":1,"kind":${JSON.stringify(e.kind)},"to":${JSON.stringify(e.to.toString())},"from":${JSON.stringify(encodeLink(e.from))},"ts":${e.ts}`;
  if (e.proof) out += `,"proof":${JSON.stringify(b64encode(e.proof))}`;
  return `${out},"body":${canonicalJson(e.body ?? null)}}`;
}

/** Signs an envelope with `sender` (whose key must be `from`'s); returns the JWS text (§6.4). */
export function signEnvelope(sender: SecretKey, e: Envelope): string {
  if (!sender.publicKey().equals(e.from.key)) throw new EnvelopeError("SignerMismatch", "the signer's key is not the key in from");
  if (e.from.secret) throw new EnvelopeError("From", "from must not carry a link secret");
  const input = `${b64encode(utf8(JWS_HEADER))}.${b64encode(utf8(payloadJson(e)))}`;
  return `${input}.${b64encode(sender.sign(utf8(input)))}`;
}

/** Signs and seals an envelope to `e.to` (§6.5). `ikmE` fixes the ephemeral key (vectors). */
export async function sealEnvelope(sender: SecretKey, e: Envelope, ikmE?: Uint8Array): Promise<Uint8Array> {
  return sealMessage(e.to, utf8(signEnvelope(sender, e)), ikmE);
}

/** The link proof (§6.6): HMAC-SHA-256 with the link secret. */
export function linkProof(secret: Uint8Array, to: PublicKey, fromKey: PublicKey): Uint8Array {
  return hmac(sha256, secret, concat(utf8("connectoid/v1 link proof"), new Uint8Array([0]), to.bytes, fromKey.bytes));
}

/** Checks a hello's proof (§6.7 steps 19–20). */
export function checkProof(e: Envelope, secret: Uint8Array): void {
  if (!e.proof) throw new EnvelopeError("MissingProof", "the hello has no link proof");
  if (!ctEqual(e.proof, linkProof(secret, e.to, e.from.key))) throw new EnvelopeError("BadProof", "the link proof does not verify");
}

function b64part(text: string, what: string): Uint8Array {
  try {
    return b64decode(text);
  } catch (e) {
    throw new EnvelopeError("Jws", `${what}: ${(e as Error).message}`);
  }
}


/** Verifies a JWS text and decodes its payload (§6.7 steps 5–15). */
export function verifyJws(text: string): Envelope {
  const parts = text.split(".");
  if (parts.length !== 3) throw new EnvelopeError("Jws", `the JWS has ${parts.length} parts, expected 3`);
  const [headerB64, payloadB64, signatureB64] = parts as [string, string, string];
  const headerBytes = b64part(headerB64, "header");
  if (fromUtf8(headerBytes) !== JWS_HEADER) throw new EnvelopeError("Header", `the header is not exactly ${JWS_HEADER}`);
  const payloadBytes = b64part(payloadB64, "payload");
  const signature = b64part(signatureB64, "signature");
  if (signature.length !== SIGNATURE_LEN) throw new EnvelopeError("BadSignature", "the signature is not 96 bytes");
  const payloadText = fromUtf8(payloadBytes);
  if (payloadText === null) throw new EnvelopeError("Payload", "the payload is not UTF-8");
  if (!/^[ \t\n\r]*\{/.test(payloadText)) throw new EnvelopeError("Payload", "not a JSON object");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(payloadText) as Record<string, unknown>;
  } catch (e) {
    throw new EnvelopeError("Payload", (e as Error).message);
  }
  const { depth, members } = scanTop(payloadText);
  if (depth > MAX_PAYLOAD_DEPTH) throw new EnvelopeError("Payload", `nested ${depth} deep, the maximum is ${MAX_PAYLOAD_DEPTH}`);
  for (const name of ["v", "kind", "to", "from", "ts", "proof", "body"]) {
    if ((members.get(name)?.length ?? 0) > 1) throw new EnvelopeError("Payload", `duplicate field \`${name}\``);
  }
  const bad = (what: string) => new EnvelopeError("Payload", what);
  for (const name of ["v", "kind", "to", "from", "ts"]) if (!(name in raw)) throw bad(`missing field \`${name}\``);
  const vText = members.get("v")![0]!;
  const tsText = members.get("ts")![0]!;
  if (!isU64(vText)) throw bad("v is not an unsigned integer");
  if (typeof raw.kind !== "string") throw bad("kind is not a string");
  if (typeof raw.to !== "string") throw bad("to is not a string");
  let to: PublicKey;
  try {
    to = PublicKey.parse(raw.to);
  } catch (e) {
    throw bad(`to: ${(e as Error).message}`);
  }
  if (typeof raw.from !== "string") throw bad("from is not a string");
  if (!isU64(tsText)) throw bad("ts is not an unsigned integer");
  let proof: Uint8Array | null = null;
  if (raw.proof !== undefined && raw.proof !== null) {
    if (typeof raw.proof !== "string") throw bad("proof is not a string");
    try {
      proof = b64decode(raw.proof);
    } catch (e) {
      throw bad(`proof: ${(e as Error).message}`);
    }
    if (proof.length !== 32) throw bad("proof is not 32 bytes");
  }
  if (raw.v !== ENVELOPE_VERSION) throw new EnvelopeError("Version", `version ${vText} is not 1`);
  if (!(KINDS as readonly string[]).includes(raw.kind)) throw new EnvelopeError("UnknownKind", `unknown kind ${JSON.stringify(raw.kind)}`);
  let from: Link;
  try {
    from = decodeReply(raw.from);
  } catch (e) {
    if (e instanceof LinkError) throw new EnvelopeError("From", `from: ${e.message}`);
    throw e;
  }
  if (!from.key.verify(utf8(`${headerB64}.${payloadB64}`), signature)) throw new EnvelopeError("BadSignature", "the signature does not verify");
  return { kind: raw.kind as Kind, to, from, ts: Number(tsText), proof, body: raw.body ?? null };
}

/** Opens a sealed envelope with the recipient's key at `nowMs` (§6.7 steps 1–18). */
export async function openEnvelope(recipient: SecretKey, sealed: Uint8Array, nowMs: number): Promise<Envelope> {
  let plaintext: Uint8Array;
  try {
    plaintext = await openMessage(recipient, sealed);
  } catch (e) {
    if (e instanceof OpenError) throw new EnvelopeError(`Open::${e.kind}`, e.message);
    throw e;
  }
  const text = fromUtf8(plaintext);
  if (text === null) throw new EnvelopeError("Jws", "not UTF-8");
  const e = verifyJws(text);
  if (!e.to.equals(recipient.publicKey())) throw new EnvelopeError("WrongRecipient", "the envelope is addressed to another mailbox");
  if (e.ts + ENVELOPE_MAX_AGE_MS < nowMs) throw new EnvelopeError("Expired", `ts ${e.ts} is too old at ${nowMs}`);
  if (e.ts > nowMs + ENVELOPE_MAX_SKEW_MS) throw new EnvelopeError("FromFuture", `ts ${e.ts} is in the future at ${nowMs}`);
  return e;
}

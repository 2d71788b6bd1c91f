/**
 * The peer link wire format (spec/protocol.md §15): the `{"quic": {...}}`
 * body of the `offer` and `answer` envelopes, certificate fingerprints, the
 * 4-byte length framing of the link's one stream, and the challenge-response
 * that authenticates the link with the peers' mailbox keys (signing input,
 * ES384 sign and verify through `keys.ts`).
 *
 * It only encodes, decodes, signs and verifies: no sockets, no QUIC, no
 * randomness (challenges and session ids come from the caller), and no
 * decisions about connections or key rotation. Errors carry the stable
 * codes of `spec/vectors/peer.json`.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { b64decode, b64encode, concat, utf8 } from "./b64.js";
import { KeyError, PublicKey, SecretKey, SIGNATURE_LEN } from "./keys.js";

/** The 23 ASCII bytes that start every signing input. */
export const AUTH_LABEL = "connectoid/v1 peer link";
/** Length of a challenge, bytes. */
export const CHALLENGE_LEN = 32;
/** Length of a certificate fingerprint (SHA-256), bytes. */
export const FINGERPRINT_LEN = 32;
/** Length of a frame header (the big-endian message length), bytes. */
export const FRAME_HEADER_LEN = 4;
/** Longest message one frame carries: 16 MiB (16 777 216 bytes). */
export const MAX_FRAME_LEN = 16 * 1024 * 1024;
/** Most candidate addresses an offer or answer may carry. */
export const MAX_CANDIDATES = 16;
/** Longest session id, bytes of UTF-8. */
export const MAX_SESSION_LEN = 64;

/** Codes of {@link FrameError}, as `peer.json` writes them. */
export type FrameErrorCode = "too-long" | "truncated";

/** A frame could not be made or read. */
export class FrameError extends Error {
  override name = "FrameError";
  /** Creates the error; `code` is the stable code of the fault. */
  constructor(readonly code: FrameErrorCode, message: string) {
    super(message);
  }
}

/** Codes of {@link OfferError}, as `peer.json` writes them (§15.1's table). */
export type OfferErrorCode = "no-quic" | "malformed" | "too-many-candidates" | "session" | "fingerprint";

/** An offer or answer body is not a valid QUIC offer. */
export class OfferError extends Error {
  override name = "OfferError";
  /** Creates the error; `code` is the stable code of the fault. */
  constructor(readonly code: OfferErrorCode, message: string) {
    super(message);
  }
}

/** Codes of {@link AuthMessageError}, as `peer.json` writes them. */
export type AuthMessageErrorCode = "malformed" | "challenge" | "signature" | "key";

/** A challenge-response message could not be read. */
export class AuthMessageError extends Error {
  override name = "AuthMessageError";
  /** Creates the error; `code` is the stable code of the fault. */
  constructor(readonly code: AuthMessageErrorCode, message: string) {
    super(message);
  }
}

// ---- framing (§15.2) ----

/** The header of a frame of `len` bytes: `len` as 4 big-endian bytes; `too-long` over {@link MAX_FRAME_LEN}. */
export function frameHeader(len: number): Uint8Array {
  if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`frame length ${len} is not a byte count`);
  if (len > MAX_FRAME_LEN) throw new FrameError("too-long", `frame of ${len} bytes is over the limit of ${MAX_FRAME_LEN}`);
  const out = new Uint8Array(FRAME_HEADER_LEN);
  new DataView(out.buffer).setUint32(0, len);
  return out;
}

/** The message length a 4-byte header announces; `too-long` over {@link MAX_FRAME_LEN}, `truncated` if shorter than 4 bytes. */
export function decodeFrameHeader(header: Uint8Array): number {
  if (header.length < FRAME_HEADER_LEN) throw new FrameError("truncated", `frame header of ${header.length} bytes, ${FRAME_HEADER_LEN} needed`);
  const len = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_LEN).getUint32(0);
  if (len > MAX_FRAME_LEN) throw new FrameError("too-long", `frame of ${len} bytes is over the limit of ${MAX_FRAME_LEN}`);
  return len;
}

/** One frame: the header, then the message. */
export function encodeFrame(message: Uint8Array): Uint8Array {
  return concat(frameHeader(message.length), message);
}

/**
 * Reads the first frame of `bytes`: its message and the bytes after it
 * (both views into `bytes`). Total: every input gives a result or a
 * {@link FrameError}; the length is checked before the message is awaited.
 */
export function decodeFrame(bytes: Uint8Array): { message: Uint8Array; rest: Uint8Array } {
  const len = decodeFrameHeader(bytes);
  const end = FRAME_HEADER_LEN + len;
  if (bytes.length < end) throw new FrameError("truncated", `frame truncated: ${end} bytes needed, ${bytes.length} available`);
  return { message: bytes.subarray(FRAME_HEADER_LEN, end), rest: bytes.subarray(end) };
}

// ---- fingerprints and candidates (§15.1) ----

/** The SHA-256 fingerprint (32 bytes) of a DER-encoded certificate. */
export function certificateFingerprint(der: Uint8Array): Uint8Array {
  return sha256(der);
}

/** Parses a fingerprint's base64url text (canonical, 32 bytes); throws `fingerprint`. */
export function parseFingerprint(text: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = b64decode(text);
  } catch {
    throw new OfferError("fingerprint", "the fingerprint is not base64url");
  }
  if (bytes.length !== FINGERPRINT_LEN) throw new OfferError("fingerprint", `the fingerprint is ${bytes.length} bytes, expected ${FINGERPRINT_LEN}`);
  return bytes;
}

/** A candidate address: an IP address and a UDP port. */
export interface Candidate {
  /** IPv4 (4 bytes) or IPv6 (16 bytes). */
  ip: Uint8Array;
  /** The UDP port, 0 to 65535. */
  port: number;
}

const DEC_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const HEXTET = /^[0-9a-fA-F]{1,4}$/;
const PORT = /^[0-9]{1,5}$/;

function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!DEC_OCTET.test(parts[i]!)) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseIpv6(text: string): Uint8Array | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (!v4) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (HEXTET.test(p)) out.push(parseInt(p, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const given = head.length + tail.length;
  if (halves.length === 2 ? given > 7 : given !== 8) return null;
  const all = [...head, ...Array<number>(8 - given).fill(0), ...tail];
  return Uint8Array.from(all.flatMap((g) => [g >> 8, g & 255]));
}

/**
 * Parses a candidate `ip:port`: a dotted-quad IPv4 address or a bracketed
 * IPv6 address, then a decimal port. No host names, no zone ids. Throws
 * `malformed`.
 */
export function parseCandidate(text: string): Candidate {
  const bad = () => new OfferError("malformed", `candidate ${JSON.stringify(text)} is not ip:port`);
  const colon = text.lastIndexOf(":");
  if (colon < 0) throw bad();
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (!PORT.test(portText) || Number(portText) > 65535) throw bad();
  const ip = host.startsWith("[") && host.endsWith("]") ? parseIpv6(host.slice(1, -1)) : parseIpv4(host);
  if (!ip) throw bad();
  return { ip, port: Number(portText) };
}

function formatIpv6(ip: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((ip[i]! << 8) | ip[i + 1]!);
  // IPv4-mapped addresses keep the dotted form (RFC 5952 §5).
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `::ffff:${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
  // The longest run of two or more zero groups, the first on a tie, becomes "::" (RFC 5952 §4.2).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** The canonical text of a candidate (`1.2.3.4:5`, `[2001:db8::7]:5`, RFC 5952 for IPv6). */
export function formatCandidate(c: Candidate): string {
  if (c.ip.length === 4) return `${c.ip.join(".")}:${c.port}`;
  if (c.ip.length === 16) return `[${formatIpv6(c.ip)}]:${c.port}`;
  throw new RangeError(`an IP address is 4 or 16 bytes, not ${c.ip.length}`);
}

// ---- offer and answer bodies (§15.1) ----

/** The `quic` member of an offer or answer body. */
export interface QuicOffer {
  /** The session id (the offerer's base64url of 16 random bytes); the answer repeats it. 1 to 64 bytes. */
  session: string;
  /** SHA-256 of the sender's certificate DER (32 bytes). */
  fingerprint: Uint8Array;
  /** Where the sender listens, at most {@link MAX_CANDIDATES}. */
  candidates: Candidate[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Reads the `quic` member of an envelope body (already parsed JSON), with
 * the checks of §15.1 in their order; other members are ignored. Throws
 * {@link OfferError}.
 */
export function offerFromBody(body: unknown): QuicOffer {
  if (!isObject(body) || !Object.hasOwn(body, "quic")) throw new OfferError("no-quic", 'no "quic" member');
  const quic = body.quic;
  if (!isObject(quic)) throw new OfferError("malformed", "quic is not an object");
  const { session, fingerprint, candidates } = quic;
  if (typeof session !== "string") throw new OfferError("malformed", "quic.session is not a string");
  if (typeof fingerprint !== "string") throw new OfferError("malformed", "quic.fingerprint is not a string");
  if (!Array.isArray(candidates)) throw new OfferError("malformed", "quic.candidates is not an array");
  const parsed = candidates.map((c) => {
    if (typeof c !== "string") throw new OfferError("malformed", "a candidate is not a string");
    return parseCandidate(c);
  });
  if (parsed.length > MAX_CANDIDATES) throw new OfferError("too-many-candidates", `${parsed.length} candidates, the maximum is ${MAX_CANDIDATES}`);
  const sessionLen = utf8(session).length;
  if (sessionLen === 0 || sessionLen > MAX_SESSION_LEN) throw new OfferError("session", `the session id must be 1 to ${MAX_SESSION_LEN} bytes`);
  return { session, fingerprint: parseFingerprint(fingerprint), candidates: parsed };
}

/** An offer as an envelope body: `{"quic": {"session", "fingerprint", "candidates"}}`; checks the limits it reads with. */
export function offerToBody(offer: QuicOffer): { quic: { session: string; fingerprint: string; candidates: string[] } } {
  const body = {
    quic: {
      session: offer.session,
      fingerprint: b64encode(offer.fingerprint),
      candidates: offer.candidates.map(formatCandidate),
    },
  };
  offerFromBody(body);
  return body;
}

// ---- challenge-response (§15.3) ----

/**
 * What a peer's current mailbox key signs: the label, the verifier's
 * `challenge`, the signer's and the verifier's fingerprints, then `0x00`,
 * or `0x01` and the new key (49 bytes) when the signer rotates.
 */
export function signingInput(challenge: Uint8Array, signer: Uint8Array, verifier: Uint8Array, newKey: PublicKey | null): Uint8Array {
  if (challenge.length !== CHALLENGE_LEN) throw new RangeError(`a challenge is ${CHALLENGE_LEN} bytes, not ${challenge.length}`);
  if (signer.length !== FINGERPRINT_LEN || verifier.length !== FINGERPRINT_LEN) throw new RangeError(`a fingerprint is ${FINGERPRINT_LEN} bytes`);
  const tail = newKey ? concat(Uint8Array.of(1), newKey.bytes) : Uint8Array.of(0);
  return concat(utf8(AUTH_LABEL), challenge, signer, verifier, tail);
}

function parseMessage(bytes: Uint8Array | string): Record<string, unknown> {
  let value: unknown;
  try {
    const text = typeof bytes === "string" ? bytes : new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    value = JSON.parse(text);
  } catch {
    throw new AuthMessageError("malformed", "not JSON");
  }
  if (!isObject(value)) throw new AuthMessageError("malformed", "not a JSON object");
  return value;
}

/** The JSON text of the first message, `{"challenge": C}` (C: 32 bytes). */
export function challengeJson(challenge: Uint8Array): string {
  if (challenge.length !== CHALLENGE_LEN) throw new RangeError(`a challenge is ${CHALLENGE_LEN} bytes, not ${challenge.length}`);
  return JSON.stringify({ challenge: b64encode(challenge) });
}

/** Reads the first message (JSON text or its UTF-8 bytes); unknown members are ignored. Returns the 32-byte challenge. */
export function parseChallenge(message: Uint8Array | string): Uint8Array {
  const v = parseMessage(message);
  if (typeof v.challenge !== "string") throw new AuthMessageError("malformed", "challenge is not a string");
  let bytes: Uint8Array;
  try {
    bytes = b64decode(v.challenge);
  } catch {
    throw new AuthMessageError("challenge", "the challenge is not base64url");
  }
  if (bytes.length !== CHALLENGE_LEN) throw new AuthMessageError("challenge", `the challenge is ${bytes.length} bytes, expected ${CHALLENGE_LEN}`);
  return bytes;
}

/** The second message: the signature over {@link signingInput} and, when the signer rotates, its new mailbox key. */
export interface ProofMessage {
  /** ES384 signature `r || s` (96 bytes). */
  signature: Uint8Array;
  /** The signer's new mailbox public key, or null. */
  key: PublicKey | null;
}

/** Signs the verifier's `challenge` with the signer's current mailbox key (RFC 6979, so deterministic). */
export function signProof(signerKey: SecretKey, challenge: Uint8Array, signer: Uint8Array, verifier: Uint8Array, newKey: PublicKey | null): ProofMessage {
  return { signature: signerKey.sign(signingInput(challenge, signer, verifier, newKey)), key: newKey };
}

/** Whether a proof verifies with the signer's pinned `key` over our `challenge`, the signer's and our fingerprints; high S is accepted. */
export function verifyProof(proof: ProofMessage, key: PublicKey, challenge: Uint8Array, signer: Uint8Array, verifier: Uint8Array): boolean {
  return key.verify(signingInput(challenge, signer, verifier, proof.key), proof.signature);
}

/** The JSON text of the second message, `{"signature": S, "key": K}` (`key` left out when null). */
export function proofJson(proof: ProofMessage): string {
  const out: Record<string, string> = { signature: b64encode(proof.signature) };
  if (proof.key) out.key = proof.key.toString();
  return JSON.stringify(out);
}

/** Reads the second message; unknown members are ignored, `"key": null` is no key. Throws {@link AuthMessageError}. */
export function parseProof(message: Uint8Array | string): ProofMessage {
  const v = parseMessage(message);
  if (typeof v.signature !== "string") throw new AuthMessageError("malformed", "signature is not a string");
  if (v.key !== undefined && v.key !== null && typeof v.key !== "string") throw new AuthMessageError("malformed", "key is not a string");
  let signature: Uint8Array;
  try {
    signature = b64decode(v.signature);
  } catch {
    throw new AuthMessageError("signature", "the signature is not base64url");
  }
  if (signature.length !== SIGNATURE_LEN) throw new AuthMessageError("signature", `the signature is ${signature.length} bytes, expected ${SIGNATURE_LEN}`);
  let key: PublicKey | null = null;
  if (typeof v.key === "string") {
    try {
      key = PublicKey.parse(v.key);
    } catch (e) {
      if (e instanceof KeyError) throw new AuthMessageError("key", `new key: ${e.message}`);
      throw e;
    }
  }
  return { signature, key };
}


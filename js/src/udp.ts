/**
 * UDP check datagrams (spec/protocol.md §8): "CNID", version 1, type, then
 * the postcard body of a check request or response. Encoding and strict
 * decoding only (no sockets: browsers have no UDP; a Node app can send the
 * bytes with `node:dgram`). The client in `client.ts` polls over HTTP.
 */
import { fromUtf8, utf8 } from "./b64.js";

/** Largest datagram, bytes. */
export const MAX_DATAGRAM_LEN = 1200;
/** Most mailboxes in one request. */
export const MAX_CHECKS_PER_DATAGRAM = 16;
/** Longest request ext, bytes. */
export const MAX_DATAGRAM_EXT_LEN = 128;
const MAGIC = [0x43, 0x4e, 0x49, 0x44];

/** One mailbox to check. */
export interface MailboxCheck {
  /** The compressed key (49 bytes; not checked to be on the curve). */
  key: Uint8Array;
  /** The cursor. */
  at: bigint;
}

/** A check request. */
export interface CheckRequest {
  /** 16 random bytes. */
  nonce: Uint8Array;
  /** App data (an API key), at most 128 bytes. */
  ext: string | null;
  /** 1 to 16 mailboxes. */
  checks: MailboxCheck[];
}

/** A mailbox's status in a response. */
export type CheckStatus = "not-found" | "found" | "too-often" | "forbidden";
const STATUSES: CheckStatus[] = ["not-found", "found", "too-often", "forbidden"];

/** The source address the relay saw. */
export interface ObservedAddr {
  /** IPv4 (4 bytes) or IPv6 (16 bytes). */
  ip: Uint8Array;
  /** Port. */
  port: number;
}

/** A check response. */
export interface CheckResponse {
  /** The request's nonce. */
  nonce: Uint8Array;
  /** One per request mailbox. */
  statuses: CheckStatus[];
  /** The observed source address, if any. */
  observed: ObservedAddr | null;
}

/** Names as `udp.json` writes them. */
export type DatagramErrorKind = "TooLong" | "BadMagic" | "Version" | "Type" | "Body" | "Trailing" | "CheckCount" | "ExtTooLong";

/** A datagram was rejected. */
export class DatagramError extends Error {
  override name = "DatagramError";
  /** Creates the error. */
  constructor(readonly kind: DatagramErrorKind) {
    super(`datagram: ${kind}`);
  }
}

function varint(out: number[], value: bigint | number): void {
  let v = BigInt(value);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

class Reader {
  i = 0;
  constructor(readonly b: Uint8Array) {}
  byte(): number {
    if (this.i >= this.b.length) throw new DatagramError("Body");
    return this.b[this.i++]!;
  }
  bytes(n: number): Uint8Array {
    if (this.i + n > this.b.length) throw new DatagramError("Body");
    const out = this.b.slice(this.i, this.i + n);
    this.i += n;
    return out;
  }
  varint(maxBytes: number, max: bigint): bigint {
    let v = 0n;
    for (let k = 0; k < maxBytes; k++) {
      const byte = this.byte();
      v |= BigInt(byte & 0x7f) << BigInt(7 * k);
      if (!(byte & 0x80)) {
        if (v > max) throw new DatagramError("Body");
        return v;
      }
    }
    throw new DatagramError("Body");
  }
  len(): number {
    const v = this.varint(10, 0xffffffffffffffffn);
    if (v > BigInt(this.b.length)) throw new DatagramError("Body");
    return Number(v);
  }
}

function header(type: number): number[] {
  return [...MAGIC, 1, type];
}

/** Encodes a request datagram. */
export function encodeRequest(r: CheckRequest): Uint8Array {
  const out = header(1);
  out.push(...r.nonce);
  if (r.ext === null) out.push(0);
  else {
    const e = utf8(r.ext);
    out.push(1);
    varint(out, e.length);
    out.push(...e);
  }
  varint(out, r.checks.length);
  for (const c of r.checks) {
    out.push(...c.key);
    varint(out, c.at);
  }
  return Uint8Array.from(out);
}

function encodeResponseWith(r: CheckResponse, observed: ObservedAddr | null): Uint8Array {
  const out = header(2);
  out.push(...r.nonce);
  varint(out, r.statuses.length);
  for (const s of r.statuses) out.push(STATUSES.indexOf(s));
  if (!observed) out.push(0);
  else {
    out.push(1, observed.ip.length === 4 ? 0 : 1, ...observed.ip);
    varint(out, observed.port);
  }
  return Uint8Array.from(out);
}

/** Encodes a response datagram. */
export function encodeResponse(r: CheckResponse): Uint8Array {
  return encodeResponseWith(r, r.observed);
}

/** The relay's answer to a request of `requestLen` bytes: never larger (§8.6); null = no answer. */
export function encodeWithin(r: CheckResponse, requestLen: number): Uint8Array | null {
  const full = encodeResponse(r);
  if (full.length <= requestLen) return full;
  const bare = encodeResponseWith(r, null);
  return bare.length <= requestLen ? bare : null;
}

function open(b: Uint8Array, type: number): Reader {
  if (b.length > MAX_DATAGRAM_LEN) throw new DatagramError("TooLong");
  if (b.length < 6 || MAGIC.some((m, i) => b[i] !== m)) throw new DatagramError("BadMagic");
  if (b[4] !== 1) throw new DatagramError("Version");
  if (b[5] !== type) throw new DatagramError("Type");
  const r = new Reader(b);
  r.i = 6;
  return r;
}

function option(r: Reader): boolean {
  const tag = r.byte();
  if (tag > 1) throw new DatagramError("Body");
  return tag === 1;
}

/** Decodes a request datagram, with the checks of §8.2. */
export function decodeRequest(b: Uint8Array): CheckRequest {
  const r = open(b, 1);
  const nonce = r.bytes(16);
  let ext: string | null = null;
  if (option(r)) {
    const text = fromUtf8(r.bytes(r.len()));
    if (text === null) throw new DatagramError("Body");
    ext = text;
  }
  const n = r.len();
  const checks: MailboxCheck[] = [];
  for (let i = 0; i < n; i++) checks.push({ key: r.bytes(49), at: r.varint(10, 0xffffffffffffffffn) });
  if (r.i !== b.length) throw new DatagramError("Trailing");
  if (checks.length < 1 || checks.length > MAX_CHECKS_PER_DATAGRAM) throw new DatagramError("CheckCount");
  if (ext !== null && utf8(ext).length > MAX_DATAGRAM_EXT_LEN) throw new DatagramError("ExtTooLong");
  return { nonce, ext, checks };
}

/** Decodes a response datagram. */
export function decodeResponse(b: Uint8Array): CheckResponse {
  const r = open(b, 2);
  const nonce = r.bytes(16);
  const n = r.len();
  const statuses: CheckStatus[] = [];
  for (let i = 0; i < n; i++) {
    const s = STATUSES[Number(r.varint(10, 3n))];
    if (!s) throw new DatagramError("Body");
    statuses.push(s);
  }
  let observed: ObservedAddr | null = null;
  if (option(r)) {
    const tag = Number(r.varint(10, 1n));
    const ip = r.bytes(tag === 0 ? 4 : 16);
    observed = { ip, port: Number(r.varint(3, 0xffffn)) };
  }
  if (r.i !== b.length) throw new DatagramError("Trailing");
  return { nonce, statuses, observed };
}

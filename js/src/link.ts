/**
 * Links (spec/protocol.md §4): the `connectoid` value a user shares
 * (`pub.relays[.ext[.secret]]`, the four-part form ending in a checksum), the
 * reply value every envelope carries, app URLs, the cleaning of pasted links,
 * and relay URL normalization (WHATWG URL, IDNA UTS #46
 * non-transitional). Decoding is strict and total: every fault is a
 * {@link LinkError} with the same stable code as the Rust implementation.
 * This module does not check whether relays are reachable.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { b64decode, b64encode, fromUtf8, utf8 } from "./b64.js";
import { KeyError, PublicKey } from "./keys.js";

/** Longest link value, bytes. */
export const MAX_LINK_LEN = 2048;
/** Bytes an app URL may add around a value. */
export const MAX_APP_URL_OVERHEAD = 2048;
/** Most relays in a link. */
export const MAX_RELAYS_PER_LINK = 8;
/** Longest relay URL, bytes, before and after normalization. */
export const MAX_RELAY_URL_LEN = 256;
/** Longest ext (link-wide or per relay), bytes of UTF-8. */
export const MAX_EXT_LEN = 256;
/** Bytes of a link secret. */
export const LINK_SECRET_LEN = 16;
/** Bytes of the checksum after the secret in a four-part value's last part. */
export const LINK_CHECK_LEN = 4;
/** Characters of a complete last part of a four-part value (27). */
export const SECRET_PART_LEN = Math.ceil(((LINK_SECRET_LEN + LINK_CHECK_LEN) * 4) / 3);

/** The stable codes of §4.7. */
export type LinkErrorCode =
  | "empty"
  | "too-long"
  | "no-connectoid-parameter"
  | "part-count"
  | "pub-base64"
  | "pub-key"
  | "relays-base64"
  | "relays-utf8"
  | "ext-base64"
  | "ext-utf8"
  | "secret-base64"
  | "no-relays"
  | "too-many-relays"
  | "bad-relay"
  | "duplicate-relay"
  | "ext-too-long"
  | "secret-length"
  | "unexpected-secret"
  | "empty-ext"
  | "damaged"
  | "truncated";

/** A link or reply value could not be decoded (or built). */
export class LinkError extends Error {
  override name = "LinkError";
  /** Creates the error; `code` is the stable code, `message` names the part. */
  constructor(readonly code: LinkErrorCode, message: string) {
    super(message);
  }
}

/** One relay of a link with its own app data (such as its API key). */
export interface RelayEntry {
  /** The normalized relay URL. */
  url: string;
  /** App data for this relay only; replaces the link-wide ext. */
  ext?: string | null;
}

/** A decoded link or reply value. */
export interface Link {
  /** The mailbox key that the link's user sends to. */
  key: PublicKey;
  /** 1 to 8 relays, in the owner's order. */
  relays: RelayEntry[];
  /** App data for every relay without its own (the seed's ext). */
  ext?: string | null;
  /** The one-time link secret (16 bytes); absent in reply values. */
  secret?: Uint8Array | null;
}

// Unicode White_Space, as Rust's char::is_whitespace and str::trim use it.
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const HAS_WS_OR_BAR = new RegExp(`[${WS}|]`, "u");

const byteLen = (s: string): number => utf8(s).length;

/**
 * Parses and normalizes a relay URL (§4.5); returns the normalized text or
 * throws an Error whose message says why it is not a relay URL.
 */
export function parseRelayUrl(text: string): string {
  if (byteLen(text) > MAX_RELAY_URL_LEN) throw new Error(`URL is ${byteLen(text)} bytes long, the maximum is ${MAX_RELAY_URL_LEN}`);
  const bad = HAS_WS_OR_BAR.exec(text);
  if (bad) throw new Error(`URL contains ${JSON.stringify(bad[0])}`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error("not a URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`scheme ${url.protocol} is not http or https`);
  if (!url.host) throw new Error("URL has no host");
  if (url.username || url.password) throw new Error("URL carries credentials; put an API key in ext instead");
  const normalized = url.href;
  if (normalized.includes("#")) throw new Error("URL has a fragment");
  if (byteLen(normalized) > MAX_RELAY_URL_LEN || normalized.includes("|")) throw new Error("URL does not normalize to a valid relay URL");
  return normalized;
}

/** Encodes a link (§4.3). Call {@link validateLink} first for untrusted input. */
export function encodeLink(link: Link): string {
  const relays = link.relays.map((e) => (e.ext != null ? `${e.url}|${b64encode(utf8(e.ext))}` : e.url)).join(" ");
  let out = `${link.key.toString()}.${b64encode(utf8(relays))}`;
  const ext = link.ext != null ? b64encode(utf8(link.ext)) : null;
  if (link.secret) {
    out += `.${ext ?? ""}.`;
    out += b64encode(concatBytes(link.secret, linkCheck(out, link.secret)));
  }
  else if (ext !== null) out += `.${ext}`;
  return out;
}

/** Checks that a link would decode once encoded (1–8 distinct relays, ext sizes, length). */
export function validateLink(link: Link): void {
  if (link.relays.length === 0) throw new LinkError("no-relays", "relays: no relay given");
  if (link.relays.length > MAX_RELAYS_PER_LINK) throw new LinkError("too-many-relays", `relays: ${link.relays.length} relays given, the maximum is 8`);
  link.relays.forEach((entry, index) => {
    if (link.relays.slice(0, index).some((e) => e.url === entry.url)) throw new LinkError("duplicate-relay", `relays: entry ${index} repeats an earlier relay`);
    if (entry.ext === "") throw new LinkError("bad-relay", `relays: entry ${index}: ext: empty (use no ext instead)`);
    checkExt("relays", entry.ext);
  });
  if (link.ext === "") throw new LinkError("empty-ext", "ext: empty (use no ext instead)");
  checkExt("ext", link.ext);
  if (link.secret && link.secret.length !== LINK_SECRET_LEN) throw new LinkError("secret-length", `secret: expected 16 bytes, got ${link.secret.length}`);
  const len = encodeLink(link).length;
  if (len > MAX_LINK_LEN) throw new LinkError("too-long", `link is ${len} bytes long, the maximum is ${MAX_LINK_LEN}`);
}

function checkExt(part: string, ext: string | null | undefined): void {
  if (ext != null && byteLen(ext) > MAX_EXT_LEN) throw new LinkError("ext-too-long", `${part}: ext is ${byteLen(ext)} bytes, the maximum is ${MAX_EXT_LEN}`);
}

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The checksum of a four-part value: SHA-256 of its text up to its third `.`, then the secret; first 4 bytes (§4.3). */
function linkCheck(head: string, secret: Uint8Array): Uint8Array {
  return sha256(concatBytes(utf8(head), secret)).slice(0, LINK_CHECK_LEN);
}

const PASTE_OPENERS = "\"'`<([\u201c\u2018\u00ab";
const PASTE_CLOSERS = "\"'`>)],.\u201d\u2019\u00bb";
const ALL_WS = new RegExp(`[${WS}]`, "gu");
const B64_ALPHABET = /^[A-Za-z0-9_-]*$/;

/**
 * Removes what pasting adds (§4.6): all white space (line breaks inside
 * too), then opening quotes or brackets at the start and closing ones or
 * trailing `,` `.` at the end; a `.` only while another `.` stays before it.
 */
export function cleanPasted(input: string): string {
  let text = input.replace(ALL_WS, "");
  for (;;) {
    const before = text.length;
    if (text !== "" && PASTE_OPENERS.includes(text[0]!)) text = text.slice(1);
    const last = text.slice(-1);
    if (last !== "" && PASTE_CLOSERS.includes(last) && (last !== "." || text.slice(0, -1).includes("."))) text = text.slice(0, -1);
    if (text.length === before) return text;
  }
}

/** Decodes a shared link: a bare value, a `connectoid=` pair or an app URL (§4.6), once cleaned. */
export function decodeLink(input: string): Link {
  const cleaned = cleanPasted(input);
  if (cleaned === "") throw new LinkError("empty", "link is empty");
  return decodeValue(extractValue(cleaned));
}

/** Decodes a reply value (an envelope's `from`): no trimming, no URL, no secret. */
export function decodeReply(value: string): Link {
  const link = decodeValue(value);
  if (link.secret) throw new LinkError("unexpected-secret", "secret: a reply value must not carry a link secret");
  return link;
}

function extractValue(input: string): string {
  if (input.startsWith("connectoid=")) return input.slice("connectoid=".length);
  if (!input.includes(":")) return input;
  const max = MAX_LINK_LEN + MAX_APP_URL_OVERHEAD;
  const len = byteLen(input);
  if (len > max) throw new LinkError("too-long", `link is ${len} bytes long, the maximum is ${max}`);
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new LinkError("no-connectoid-parameter", "the URL has no connectoid parameter");
  }
  const value = new URLSearchParams(url.search).get("connectoid");
  if (value === null) throw new LinkError("no-connectoid-parameter", "the URL has no connectoid parameter");
  return value;
}

function decodePart(code: LinkErrorCode, part: string, text: string): Uint8Array {
  try {
    return b64decode(text);
  } catch (e) {
    throw new LinkError(code, `${part}: ${(e as Error).message}`);
  }
}

function decodeValue(value: string): Link {
  if (value === "") throw new LinkError("empty", "link is empty");
  const len = byteLen(value);
  if (len > MAX_LINK_LEN) throw new LinkError("too-long", `link is ${len} bytes long, the maximum is ${MAX_LINK_LEN}`);
  const parts = value.split(".");
  if (parts.length < 2 || parts.length > 4) throw new LinkError("part-count", `link has ${parts.length} parts, expected 2 to 4 (pub.relays[.ext[.secret]])`);
  // The checksum first: a changed character anywhere is "damaged".
  const secret = parts.length === 4 ? checkSecretPart(value, parts[3]!) : null;
  const keyBytes = decodePart("pub-base64", "pub", parts[0]!);
  let key: PublicKey;
  try {
    key = PublicKey.fromBytes(keyBytes);
  } catch (e) {
    if (e instanceof KeyError) throw new LinkError("pub-key", `pub: ${e.message}`);
    throw e;
  }
  if (parts.length === 2 && looksCut(parts[1]!)) throw truncated("relays");
  const relays = decodeRelays(parts[1]!);
  let ext: string | null = null;
  if (parts[2]) {
    if (parts.length === 3 && looksCut(parts[2])) throw truncated("ext");
    const text = fromUtf8(decodePart("ext-base64", "ext", parts[2]));
    if (text === null) throw new LinkError("ext-utf8", "ext: not UTF-8 text");
    ext = text;
  }
  checkExt("ext", ext);
  const link: Link = { key, relays, ext, secret };
  const again = encodeLink(link).length;
  if (again > MAX_LINK_LEN) throw new LinkError("too-long", `link is ${again} bytes long, the maximum is ${MAX_LINK_LEN}`);
  return link;
}

function truncated(part: string): LinkError {
  return new LinkError("truncated", `this link looks truncated (${part} ends early); copy the whole link again`);
}

const DAMAGED = "this link is damaged or incomplete (its checksum does not match); copy the whole link again";

/** Whether a seed-form value's last part was cut: base64url characters only, but not canonical. */
function looksCut(text: string): boolean {
  if (!B64_ALPHABET.test(text)) return false;
  try {
    b64decode(text);
    return false;
  } catch {
    return true;
  }
}

/** Reads a four-part value's last part (secret and checksum) and verifies the checksum. */
function checkSecretPart(value: string, part: string): Uint8Array {
  if (!B64_ALPHABET.test(part)) decodePart("secret-base64", "secret", part);
  if (part.length < SECRET_PART_LEN) throw truncated("secret");
  if (part.length > SECRET_PART_LEN) {
    const len = decodePart("secret-base64", "secret", part).length - LINK_CHECK_LEN;
    throw new LinkError("secret-length", `secret: expected 16 bytes and a checksum, got ${len} bytes and a checksum`);
  }
  let bytes: Uint8Array;
  try {
    bytes = b64decode(part);
  } catch {
    throw new LinkError("damaged", DAMAGED);
  }
  const secret = bytes.slice(0, LINK_SECRET_LEN);
  const expected = linkCheck(value.slice(0, value.length - part.length), secret);
  let diff = 0;
  for (let i = 0; i < LINK_CHECK_LEN; i++) diff |= expected[i]! ^ bytes[LINK_SECRET_LEN + i]!;
  if (diff !== 0) throw new LinkError("damaged", DAMAGED);
  return secret;
}

function decodeRelays(part: string): RelayEntry[] {
  const text = fromUtf8(decodePart("relays-base64", "relays", part));
  if (text === null) throw new LinkError("relays-utf8", "relays: not UTF-8 text");
  if (text === "") throw new LinkError("no-relays", "relays: no relay given");
  const entries = text.split(" ");
  if (entries.length > MAX_RELAYS_PER_LINK) throw new LinkError("too-many-relays", `relays: ${entries.length} relays given, the maximum is 8`);
  const out: RelayEntry[] = [];
  entries.forEach((entry, index) => {
    const bad = (reason: string) => new LinkError("bad-relay", `relays: entry ${index}: ${reason}`);
    if (entry === "") throw bad("empty entry (relays are separated by one space)");
    let urlText = entry;
    let ext: string | null = null;
    const bar = entry.indexOf("|");
    if (bar >= 0) {
      urlText = entry.slice(0, bar);
      let bytes: Uint8Array;
      try {
        bytes = b64decode(entry.slice(bar + 1));
      } catch (e) {
        throw bad(`ext: ${(e as Error).message}`);
      }
      ext = fromUtf8(bytes);
      if (ext === null) throw bad("ext: not UTF-8 text");
      if (ext === "") throw bad("ext: empty (omit the '|' instead)");
    }
    checkExt("relays", ext);
    let url: string;
    try {
      url = parseRelayUrl(urlText);
    } catch (e) {
      throw bad((e as Error).message);
    }
    if (out.some((r) => r.url === url)) throw new LinkError("duplicate-relay", `relays: entry ${index} repeats an earlier relay`);
    out.push({ url, ext });
  });
  return out;
}

/**
 * The app URL carrying `link` as its one `connectoid` parameter (§4.3):
 * other query pieces are kept byte for byte, an existing `connectoid`
 * parameter is replaced, the fragment stays.
 */
export function toAppUrl(link: Link, appUrl: string): string {
  const url = new URL(appUrl);
  const query = url.search.startsWith("?") ? url.search.slice(1) : url.search;
  const pieces = query.split("&").filter((piece) => piece !== "" && !isConnectoidPair(piece));
  pieces.push(`connectoid=${encodeLink(link)}`);
  url.search = `?${pieces.join("&")}`;
  return url.href;
}

function isConnectoidPair(piece: string): boolean {
  const name = piece.split("=", 1)[0]!;
  for (const [n] of new URLSearchParams(`${name}=`)) return n === "connectoid";
  return false;
}

/** The ext to send to `relay` of a mailbox (§4.4): per-relay, link-wide, or null. */
export function extFor(link: Link, relay: RelayEntry): string | null {
  return relay.ext ?? link.ext ?? null;
}

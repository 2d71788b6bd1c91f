/**
 * HPKE sealing (spec/protocol.md §5): RFC 9180 base mode with
 * DHKEM(P-384, HKDF-SHA384) / HKDF-SHA384 / AES-256-GCM through `@hpke/core`,
 * the two purposes (message, question) with their info strings, the padding
 * buckets, message ids and relay-bound answers (§7.6). No I/O.
 */
import { Aes256Gcm, CipherSuite, DhkemP384HkdfSha384, HkdfSha384 } from "@hpke/core";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, utf8 } from "./b64.js";
import { PublicKey, SecretKey } from "./keys.js";

/** Length of HPKE's `enc` (uncompressed ephemeral key), bytes. */
export const ENC_LEN = 97;
/** AES-GCM tag length, bytes. */
export const TAG_LEN = 16;
/** Smallest sealed value: `enc` and a tag. */
export const MIN_SEALED_LEN = ENC_LEN + TAG_LEN;
/** Largest padded plaintext (bytes). */
export const MAX_PADDED_LEN = 65423;
/** Largest plaintext (bytes). */
export const MAX_PLAINTEXT_LEN = 65422;
/** Largest sealed message (bytes). */
export const MAX_MESSAGE_BYTES = 65536;
/** Bytes of a question's secret. */
export const QUESTION_SECRET_LEN = 32;

/** What a sealed value is for; each has its HPKE info (§5.2). */
export type Purpose = "message" | "question";

/** The HPKE info string of a purpose. */
export function purposeInfo(purpose: Purpose): Uint8Array {
  return utf8(purpose === "message" ? "connectoid/v1 message" : "connectoid/v1 question");
}

/** Why a sealed value did not open; names as in the vectors (`Open::...`). */
export type OpenErrorKind = "TooShort" | "BadEncappedKey" | "Decrypt" | "Padding" | "WrongLength";

/** A sealed value could not be opened. */
export class OpenError extends Error {
  override name = "OpenError";
  /** Creates the error. */
  constructor(readonly kind: OpenErrorKind, message: string) {
    super(message);
  }
}

/** A plaintext is too large to seal. */
export class SealError extends Error {
  override name = "SealError";
}

let suiteCache: CipherSuite | undefined;
function suite(): CipherSuite {
  suiteCache ??= new CipherSuite({ kem: new DhkemP384HkdfSha384(), kdf: new HkdfSha384(), aead: new Aes256Gcm() });
  return suiteCache;
}

/** The padded length for a plaintext of `len` bytes (§5.4). */
export function paddedLen(len: number): number {
  if (len > MAX_PLAINTEXT_LEN) throw new SealError(`plaintext is ${len} bytes, the maximum is ${MAX_PLAINTEXT_LEN}`);
  let n = 256;
  while (n < len + 1) n *= 2;
  return Math.min(n, MAX_PADDED_LEN);
}

/** ISO/IEC 7816-4 padding to the bucket. */
export function pad(plaintext: Uint8Array): Uint8Array {
  const out = new Uint8Array(paddedLen(plaintext.length));
  out.set(plaintext);
  out[plaintext.length] = 0x80;
  return out;
}

/** Removes padding: the last non-zero byte must be 0x80. */
export function unpad(padded: Uint8Array): Uint8Array {
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0 || padded[i] !== 0x80) throw new OpenError("Padding", "bad padding");
  return padded.subarray(0, i);
}

/**
 * Seals `plaintext` (already padded for messages) to `recipient`. `ikmE`
 * fixes the ephemeral key (vectors only); by default it is 48 random bytes.
 */
export async function seal(recipient: PublicKey, purpose: Purpose, plaintext: Uint8Array, ikmE?: Uint8Array): Promise<Uint8Array> {
  const s = suite();
  const pk = await s.kem.importKey("raw", ab(recipient.uncompressed()), true);
  const ctx = await s.createSenderContext({
    recipientPublicKey: pk,
    info: purposeInfo(purpose),
    ...(ikmE ? { ekm: ikmE } : {}),
  });
  const ct = new Uint8Array(await ctx.seal(plaintext));
  return concat(new Uint8Array(ctx.enc), ct);
}

/** Opens a sealed value (checks §6.7 steps 1–3). */
export async function open(recipient: SecretKey, purpose: Purpose, sealed: Uint8Array): Promise<Uint8Array> {
  if (sealed.length < MIN_SEALED_LEN) throw new OpenError("TooShort", `sealed value is ${sealed.length} bytes`);
  const enc = sealed.slice(0, ENC_LEN);
  try {
    PublicKey.fromBytes(uncompressedToCompressed(enc));
  } catch {
    throw new OpenError("BadEncappedKey", "enc is not a point on P-384");
  }
  const s = suite();
  try {
    const sk = await s.kem.importKey("raw", ab(recipient.toBytes()), false);
    const ctx = await s.createRecipientContext({ recipientKey: sk, enc, info: purposeInfo(purpose) });
    return new Uint8Array(await ctx.open(sealed.slice(ENC_LEN)));
  } catch {
    throw new OpenError("Decrypt", "could not decrypt");
  }
}

/** A fresh ArrayBuffer with the bytes (WebCrypto-style APIs want one). */
function ab(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer as ArrayBuffer;
}

function uncompressedToCompressed(enc: Uint8Array): Uint8Array {
  if (enc.length !== ENC_LEN || enc[0] !== 4) return new Uint8Array(0);
  const out = new Uint8Array(49);
  out[0] = 2 | (enc[96]! & 1);
  out.set(enc.subarray(1, 49), 1);
  // the y of the compressed form must be the y given: check on decompression
  const again = PublicKey.fromBytes(out).uncompressed();
  for (let i = 0; i < ENC_LEN; i++) if (again[i] !== enc[i]) return new Uint8Array(0);
  return out;
}

/** Pads and seals an envelope's JWS text (§6.5). */
export async function sealMessage(recipient: PublicKey, plaintext: Uint8Array, ikmE?: Uint8Array): Promise<Uint8Array> {
  return seal(recipient, "message", pad(plaintext), ikmE);
}

/** Opens and unpads a message. */
export async function openMessage(recipient: SecretKey, sealed: Uint8Array): Promise<Uint8Array> {
  return unpad(await open(recipient, "message", sealed));
}

/** Opens a relay's question: exactly 32 bytes. */
export async function openQuestion(recipient: SecretKey, sealed: Uint8Array): Promise<Uint8Array> {
  const secret = await open(recipient, "question", sealed);
  if (secret.length !== QUESTION_SECRET_LEN) throw new OpenError("WrongLength", `question is ${secret.length} bytes`);
  return secret;
}

/** The id of a sealed message: SHA-256 of its bytes (§6.9). */
export function messageId(sealed: Uint8Array): Uint8Array {
  return sha256(sealed);
}

/** The answer for a question's secret sent to `relayUrl` (normalized, §7.6). */
export function answerFor(secret: Uint8Array, relayUrl: string): Uint8Array {
  return hmac(sha256, secret, concat(utf8("connectoid/v1 answer"), new Uint8Array([0]), utf8(relayUrl)));
}

/**
 * P-384 keys (spec/protocol.md §3.2–§3.4): public keys as 49-byte SEC1
 * compressed points (66 base64url characters), secret keys as 48-byte
 * scalars, and ES384 signatures (r || s, 96 bytes). Signing is RFC 6979
 * deterministic through `@noble/curves`, so envelopes match the vectors byte
 * for byte; verification accepts high-S signatures as the spec requires.
 * No I/O, no hand-written curve arithmetic.
 */
import { p384 } from "@noble/curves/nist.js";
import { b64decode, b64encode, Base64Error, randomBytes } from "./b64.js";

/** Length of a compressed public key, in bytes. */
export const PUBLIC_KEY_LEN = 49;
/** Length of a secret scalar, in bytes. */
export const SECRET_KEY_LEN = 48;
/** Length of an ES384 signature (r || s), in bytes. */
export const SIGNATURE_LEN = 96;

/** The fault of a rejected key; names as in `keys.json`. */
export type KeyErrorKind = "WrongLength" | "Base64" | "NotCompressed" | "NotOnCurve" | "InvalidScalar";

/** A public or secret key was rejected. */
export class KeyError extends Error {
  override name = "KeyError";
  /** Creates the error; `kind` is the stable name of the fault. */
  constructor(readonly kind: KeyErrorKind, message: string) {
    super(message);
  }
}

/** A P-384 public key, kept in its 49-byte compressed form. */
export class PublicKey {
  private constructor(
    /** The compressed point (49 bytes). */
    readonly bytes: Uint8Array,
  ) {}

  /** Parses the compressed point; rejects anything else (§3.2). */
  static fromBytes(bytes: Uint8Array): PublicKey {
    if (bytes.length !== PUBLIC_KEY_LEN) throw new KeyError("WrongLength", `key is ${bytes.length} bytes, expected 49`);
    if (bytes[0] !== 2 && bytes[0] !== 3) throw new KeyError("NotCompressed", "key is not a compressed point");
    try {
      p384.Point.fromBytes(bytes).assertValidity();
    } catch {
      throw new KeyError("NotOnCurve", "key is not a point on P-384");
    }
    return new PublicKey(Uint8Array.from(bytes));
  }

  /** Parses the 66-character base64url text. */
  static parse(text: string): PublicKey {
    if (text.length !== 66) throw new KeyError("WrongLength", `key text is ${text.length} characters, expected 66`);
    let bytes: Uint8Array;
    try {
      bytes = b64decode(text);
    } catch (e) {
      if (e instanceof Base64Error) throw new KeyError("Base64", `key: ${e.message}`);
      throw e;
    }
    return PublicKey.fromBytes(bytes);
  }

  /** The uncompressed point `0x04 || x || y` (97 bytes), as HPKE and WebCrypto want. */
  uncompressed(): Uint8Array {
    return p384.Point.fromBytes(this.bytes).toBytes(false);
  }

  /** Verifies an ES384 signature (r || s) over `message`; high S is accepted. */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    if (signature.length !== SIGNATURE_LEN) return false;
    try {
      return p384.verify(signature, message, this.bytes, { lowS: false, prehash: true });
    } catch {
      return false;
    }
  }

  /** Whether two keys are the same point. */
  equals(other: PublicKey): boolean {
    return this.toString() === other.toString();
  }

  /** The base64url text (66 characters). */
  toString(): string {
    return b64encode(this.bytes);
  }

  /** JSON form: the text. */
  toJSON(): string {
    return this.toString();
  }
}

/** A P-384 secret key (the 48-byte scalar). Never leaves the device. */
export class SecretKey {
  private constructor(private readonly scalar: Uint8Array) {}

  /** A fresh key from WebCrypto's random generator. */
  static generate(): SecretKey {
    for (;;) {
      try {
        return SecretKey.fromBytes(randomBytes(SECRET_KEY_LEN));
      } catch {
        // a scalar of zero or ≥ n: draw again (probability 2^-190)
      }
    }
  }

  /** Parses the 48-byte big-endian scalar `1 ≤ d < n` (§3.3). */
  static fromBytes(bytes: Uint8Array): SecretKey {
    if (bytes.length !== SECRET_KEY_LEN) throw new KeyError("WrongLength", `secret is ${bytes.length} bytes, expected 48`);
    if (!p384.utils.isValidSecretKey(bytes)) throw new KeyError("InvalidScalar", "secret is zero or not below the group order");
    return new SecretKey(Uint8Array.from(bytes));
  }

  /** The scalar bytes (for the keystore only). */
  toBytes(): Uint8Array {
    return Uint8Array.from(this.scalar);
  }

  /** The public key. */
  publicKey(): PublicKey {
    return PublicKey.fromBytes(p384.getPublicKey(this.scalar, true));
  }

  /** Signs with ES384, RFC 6979 deterministic `k`, S not normalized (§3.4). */
  sign(message: Uint8Array): Uint8Array {
    return p384.sign(message, this.scalar, { lowS: false, prehash: true, format: "compact" });
  }
}

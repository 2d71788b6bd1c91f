/**
 * Safety codes (spec/protocol.md §9): twelve symbols from SHA-384 over the
 * two current mailbox keys, the same on both sides. No I/O.
 */
import { sha384 } from "@noble/hashes/sha2.js";
import { compareBytes, concat, utf8 } from "./b64.js";
import type { PublicKey } from "./keys.js";

/** The 64 symbols, by index: emoji. */
export const EMOJI = [..."🐶🐱🐭🐰🦊🐻🐼🐨🐯🦁🐮🐷🐸🐵🐔🐧🐦🦆🦉🐺🐴🦄🐝🐛🦋🐌🐞🐢🐍🐙🦀🐬🐳🦈🐊🦒🐘🦔🌵🌲🍀🍁🍄🌻🌙⭐🔥🌈🍎🍌🍇🍓🍒🍍🥕🌽🍕🎈🎁🔑⚓🚲🚀🔔"];
/** The 64 symbols, by index: words. */
export const WORDS =
  "dog cat mouse rabbit fox bear panda koala tiger lion cow pig frog monkey chicken penguin bird duck owl wolf horse unicorn bee worm butterfly snail ladybug turtle snake octopus crab dolphin whale shark crocodile giraffe elephant hedgehog cactus tree clover leaf mushroom sunflower moon star fire rainbow apple banana grapes strawberry cherry pineapple carrot corn pizza balloon gift key anchor bicycle rocket bell".split(
    " ",
  );

/** A safety code. */
export interface SafetyCode {
  /** The twelve indices (0–63). */
  indices: number[];
  /** The emoji, separated by single spaces. */
  emoji: string;
  /** The words, separated by single spaces. */
  words: string;
}

/** The SHA-384 digest a code is taken from. */
export function safetyDigest(a: PublicKey, b: PublicKey): Uint8Array {
  const [lo, hi] = compareBytes(a.bytes, b.bytes) <= 0 ? [a.bytes, b.bytes] : [b.bytes, a.bytes];
  return sha384(concat(utf8("connectoid/v1 safety code"), new Uint8Array([0]), lo, hi));
}

/** The safety code of two keys (order does not matter). */
export function safetyCode(a: PublicKey, b: PublicKey): SafetyCode {
  const d = safetyDigest(a, b);
  let bits = 0n;
  for (let i = 0; i < 9; i++) bits = (bits << 8n) | BigInt(d[i]!);
  const indices = Array.from({ length: 12 }, (_, i) => Number((bits >> BigInt(66 - 6 * i)) & 63n));
  return { indices, emoji: indices.map((i) => EMOJI[i]).join(" "), words: indices.map((i) => WORDS[i]).join(" ") };
}

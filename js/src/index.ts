/**
 * connectoid: the Connectoid client for browsers and Node (ESM), a second
 * implementation of `spec/protocol.md` and `spec/client.md`. Wire formats
 * (links, keys, HPKE, envelopes, the relay API, safety codes, the peer
 * link's frames, offers and challenge-response) are sans-I/O
 * modules; `client.ts` adds fan-out over relays and the profile kept in a
 * {@link Store}. Node-only parts (the file store) are in `connectoid/node`.
 */
export * from "./b64.js";
export * from "./keys.js";
export * from "./seal.js";
export * from "./link.js";
export * from "./envelope.js";
export * from "./api.js";
export * from "./safety.js";
export * from "./store.js";
export * from "./client.js";
export * from "./peer.js";
export * as udp from "./udp.js";

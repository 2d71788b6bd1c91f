/**
 * The client of spec/client.md: a profile of peers (keys, pinned keys,
 * cursors per mailbox and relay, seen message ids) kept in a {@link Store},
 * and the operations share, accept, send, poll (with explicit
 * acknowledgement), unshare and safety codes. Every relay request fans out
 * to all relays concurrently, each with its own timeout, and reports per
 * relay. Polling is HTTP only (browsers have no UDP).
 */
import { b64encode, fromHex, randomBytes, toHex } from "./b64.js";
import { DEFAULT_TIMEOUT_MS, Message, RelayClient, RelayError } from "./api.js";
import { checkProof, Envelope, ENVELOPE_MAX_AGE_MS, ENVELOPE_MAX_SKEW_MS, EnvelopeError, Kind, linkProof, openEnvelope, sealEnvelope } from "./envelope.js";
import { PublicKey, SecretKey } from "./keys.js";
import { decodeLink, decodeReply, encodeLink, extFor, Link, LINK_SECRET_LEN, parseRelayUrl, RelayEntry, toAppUrl, validateLink } from "./link.js";
import { answerFor, messageId, openQuestion } from "./seal.js";
import { safetyCode, SafetyCode } from "./safety.js";
import type { Store } from "./store.js";

/** The error text of a second use of a one-time link (spec/client.md §6). */
export const LINK_ALREADY_USED = "this link was already used (intercepted?)";
/** How long a processed message id is remembered, ms. */
export const SEEN_TTL_MS = ENVELOPE_MAX_AGE_MS + ENVELOPE_MAX_SKEW_MS;
const RECEIVE_LIMIT = 20;
const MAX_PAGES = 10;

/** Where a peer relationship stands. */
export type PeerStatus = "waiting" | "accepted" | "connected" | "link-used";

interface PeerData {
  nickname: string;
  sharedByUs: boolean;
  ourSecret: string; // hex
  ourRelays: RelayEntry[];
  ourExt: string | null;
  linkSecret: string | null; // hex, owner only
  theirKey: string | null; // pinned key
  theirFrom: string | null; // reply value
  theirTs: number;
  status: PeerStatus;
  cursors: Record<string, number>;
  link: string | null;
}

interface ProfileData {
  version: 1;
  relays: RelayEntry[];
  peers: Record<string, PeerData>;
  seen: Record<string, number>;
}

/** What happened at one relay. */
export interface RelayOutcome {
  /** The relay URL. */
  relay: string;
  /** Whether it accepted. */
  ok: boolean;
  /** Why not. */
  error?: string;
}

/** The per-relay result of a fan-out send. */
export interface SendReport {
  /** One outcome per relay, in the relays' order. */
  relays: RelayOutcome[];
}

/** Something the app is told about. */
export type Event =
  | { event: "peer-connected"; nickname: string; key: string; safety_code: string; body: unknown }
  | { event: "message"; nickname: string; kind: Kind; body: unknown }
  | { event: "relays-changed"; nickname: string; relays: string[] }
  | { event: "peer-unshared"; nickname: string }
  | { event: "link-already-used"; nickname: string; error: string }
  | { event: "link-reuse-refused"; nickname: string; connected: string; refused: string };

/** An event with the id of the message that carried it; acknowledge it with {@link Client.ack}. */
export interface Delivery {
  /** The message id, base64url of SHA-256 of the sealed bytes. */
  id: string;
  /** The event. */
  event: Event;
}

/** A peer as the app sees it (no secrets). */
export interface PeerInfo {
  /** The app's name for the peer. */
  nickname: string;
  /** Status. */
  status: PeerStatus;
  /** Whether we made the link. */
  shared_by_us: boolean;
  /** Our mailbox key for this peer. */
  our_key: string;
  /** The pinned peer key. */
  their_key: string | null;
  /** Our relays. */
  our_relays: string[];
  /** The peer's relays. */
  their_relays: string[];
  /** The safety code (words), once the peer is known. */
  safety_code: string | null;
  /** The link we shared, while it matters. */
  link: string | null;
}

/** A client-level failure. */
export class ClientError extends Error {
  override name = "ClientError";
  /** Creates the error; `code` is a stable identifier. */
  constructor(
    readonly code: "unknown-peer" | "nickname-taken" | "no-relays" | "all-relays-failed" | "link-already-used" | "no-peer-yet",
    message: string,
    readonly report?: SendReport,
  ) {
    super(message);
  }
}

/** Options of {@link Client.open}. */
export interface ClientOptions {
  /** Per-request timeout, ms (default 5000). */
  timeoutMs?: number;
  /** The clock, ms since the epoch (default Date.now). */
  now?: () => number;
  /** Log of rejected messages (default: none). */
  log?: (line: string) => void;
}

interface Fetched {
  nickname: string;
  relay: string;
  at: number;
  data: Uint8Array;
  id: string;
}

/** A Connectoid client over a {@link Store}. */
export class Client {
  private pending = new Map<string, Fetched[]>();

  private constructor(
    private readonly store: Store,
    private data: ProfileData,
    private readonly timeoutMs: number,
    private readonly now: () => number,
    private readonly log: (line: string) => void,
  ) {}

  /** Opens the profile in `store` (an empty one when nothing was saved). */
  static async open(store: Store, options: ClientOptions = {}): Promise<Client> {
    const text = await store.load();
    const data: ProfileData = text ? (JSON.parse(text) as ProfileData) : { version: 1, relays: [], peers: {}, seen: {} };
    return new Client(store, data, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, options.now ?? Date.now, options.log ?? (() => {}));
  }

  private async persist(): Promise<void> {
    const now = this.now();
    for (const [id, until] of Object.entries(this.data.seen)) if (until < now) delete this.data.seen[id];
    await this.store.save(JSON.stringify(this.data));
  }

  /** The profile's default relays. */
  get relays(): RelayEntry[] {
    return this.data.relays.map((r) => ({ ...r }));
  }

  /** Replaces the default relays (URLs are normalized). */
  async setRelays(relays: RelayEntry[]): Promise<void> {
    this.data.relays = relays.map((r) => ({ url: parseRelayUrl(r.url), ext: r.ext ?? null }));
    await this.persist();
  }

  private peer(nickname: string): PeerData {
    const p = this.data.peers[nickname];
    if (!p) throw new ClientError("unknown-peer", `no peer named ${nickname}`);
    return p;
  }

  private relaysOr(relays?: RelayEntry[]): RelayEntry[] {
    const list = (relays && relays.length > 0 ? relays : this.data.relays).map((r) => ({ url: parseRelayUrl(r.url), ext: r.ext ?? null }));
    if (list.length === 0) throw new ClientError("no-relays", "no relays: give some or set the profile's relays");
    return list;
  }

  /** Makes a one-time link for a new peer (spec/client.md §3); returns the link text (or app URL). */
  async share(nickname: string, options: { relays?: RelayEntry[]; ext?: string | null; appUrl?: string } = {}): Promise<{ link: Link; text: string }> {
    if (this.data.peers[nickname]) throw new ClientError("nickname-taken", `a peer named ${nickname} exists`);
    const key = SecretKey.generate();
    const secret = randomBytes(LINK_SECRET_LEN);
    const link: Link = { key: key.publicKey(), relays: this.relaysOr(options.relays), ext: options.ext || null, secret };
    validateLink(link);
    const value = encodeLink(link);
    this.data.peers[nickname] = {
      nickname,
      sharedByUs: true,
      ourSecret: toHex(key.toBytes()),
      ourRelays: link.relays,
      ourExt: link.ext ?? null,
      linkSecret: toHex(secret),
      theirKey: null,
      theirFrom: null,
      theirTs: 0,
      status: "waiting",
      cursors: {},
      link: value,
    };
    await this.persist();
    return { link, text: options.appUrl ? toAppUrl(link, options.appUrl) : value };
  }

  /** Uses a link (spec/client.md §4): a fresh key, the hello to every relay of the link. */
  async accept(linkText: string, nickname: string, body: unknown = null, options: { relays?: RelayEntry[] } = {}): Promise<SendReport> {
    if (this.data.peers[nickname]) throw new ClientError("nickname-taken", `a peer named ${nickname} exists`);
    const link = decodeLink(linkText);
    const key = SecretKey.generate();
    const ourRelays =
      options.relays && options.relays.length > 0
        ? options.relays.map((r) => ({ url: parseRelayUrl(r.url), ext: r.ext ?? null }))
        : link.relays.map((r) => ({ url: r.url, ext: extFor(link, r) }));
    const from: Link = { key: key.publicKey(), relays: ourRelays };
    validateLink(from);
    const peer: PeerData = {
      nickname,
      sharedByUs: false,
      ourSecret: toHex(key.toBytes()),
      ourRelays,
      ourExt: null,
      linkSecret: null,
      theirKey: link.key.toString(),
      theirFrom: encodeLink({ key: link.key, relays: link.relays, ext: link.ext ?? null }),
      theirTs: 0,
      status: "accepted",
      cursors: {},
      link: null,
    };
    this.data.peers[nickname] = peer;
    await this.persist();
    const envelope: Envelope = {
      kind: "hello",
      to: link.key,
      from,
      ts: this.now(),
      proof: link.secret ? linkProof(link.secret, link.key, key.publicKey()) : null,
      body,
    };
    const report = await this.fanOutSend(link, key, envelope);
    if (!report.relays.some((r) => r.ok)) {
      delete this.data.peers[nickname];
      await this.persist();
      throw new ClientError("all-relays-failed", `no relay took the hello: ${report.relays.map((r) => r.error).join("; ")}`, report);
    }
    return report;
  }

  private async fanOutSend(to: Link, sender: SecretKey, envelope: Envelope): Promise<SendReport> {
    const sealed = await sealEnvelope(sender, envelope);
    const outcomes = await Promise.all(
      to.relays.map(async (relay): Promise<RelayOutcome> => {
        try {
          await new RelayClient(relay.url, this.timeoutMs).request({ action: "send", pub: to.key, ext: extFor(to, relay), data: sealed });
          return { relay: relay.url, ok: true };
        } catch (e) {
          return { relay: relay.url, ok: false, error: (e as Error).message };
        }
      }),
    );
    return { relays: outcomes };
  }

  private ourLink(p: PeerData): Link {
    return { key: SecretKey.fromBytes(fromHex(p.ourSecret)).publicKey(), relays: p.ourRelays };
  }

  /** Sends an envelope of `kind` to a peer's relays (all of them, concurrently). */
  async send(nickname: string, kind: Kind, body: unknown = null): Promise<SendReport> {
    const p = this.peer(nickname);
    if (p.status === "link-used") throw new ClientError("link-already-used", LINK_ALREADY_USED);
    if (!p.theirFrom || !p.theirKey) throw new ClientError("no-peer-yet", `${nickname} has not used the link yet`);
    const to = decodeReply(p.theirFrom);
    const sender = SecretKey.fromBytes(fromHex(p.ourSecret));
    const envelope: Envelope = { kind, to: PublicKey.parse(p.theirKey), from: this.ourLink(p), ts: this.now(), body };
    const report = await this.fanOutSend({ ...to, key: PublicKey.parse(p.theirKey) }, sender, envelope);
    if (!report.relays.some((r) => r.ok)) throw new ClientError("all-relays-failed", `no relay took the message: ${report.relays.map((r) => r.error).join("; ")}`, report);
    return report;
  }

  /** Fetches new messages of one mailbox at one relay after its cursor. */
  private async fetchRelay(p: PeerData, relay: RelayEntry): Promise<Fetched[]> {
    const secret = SecretKey.fromBytes(fromHex(p.ourSecret));
    const pub = secret.publicKey();
    const ext = relay.ext ?? p.ourExt ?? null;
    const rc = new RelayClient(relay.url, this.timeoutMs);
    const out: Fetched[] = [];
    let at = p.cursors[relay.url] ?? 0;
    let answer: Uint8Array | null = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      if (!answer) {
        const check = await rc.request({ action: "check", pub, ext, at });
        if (check.type !== "found") break;
        answer = answerFor(await openQuestion(secret, check.question), relay.url);
      }
      let res;
      try {
        res = await rc.request({ action: "receive", pub, ext, at, answer, limit: RECEIVE_LIMIT });
      } catch (e) {
        if (e instanceof RelayError && e.api === "No question" && page === 0) {
          answer = null;
          continue;
        }
        throw e;
      }
      const messages: Message[] = res.type === "many" ? res.messages : res.type === "one" ? [{ at: res.at, data: res.data }] : [];
      for (const m of messages) {
        if (m.at <= at) continue;
        out.push({ nickname: p.nickname, relay: relay.url, at: m.at, data: m.data, id: b64encode(messageId(m.data)) });
        at = m.at;
      }
      if (res.type !== "many" || messages.length < RECEIVE_LIMIT) break;
    }
    return out;
  }

  /**
   * Polls every mailbox on every relay once (concurrently) and returns the
   * new events, oldest first. Cursors move over rejected and duplicate
   * messages at once, over delivered ones when the app calls {@link ack}.
   * Per-relay failures are returned in `errors`.
   */
  async poll(): Promise<{ deliveries: Delivery[]; errors: RelayOutcome[] }> {
    const errors: RelayOutcome[] = [];
    const jobs: Promise<Fetched[]>[] = [];
    for (const p of Object.values(this.data.peers)) {
      for (const relay of p.ourRelays) {
        jobs.push(
          this.fetchRelay(p, relay).catch((e: Error) => {
            errors.push({ relay: relay.url, ok: false, error: e.message });
            return [];
          }),
        );
      }
    }
    const fetched = (await Promise.all(jobs)).flat().sort((a, b) => a.at - b.at);
    const deliveries: Delivery[] = [];
    const delivering = new Set<string>();
    for (const m of fetched) {
      const key = `${m.nickname} ${m.relay}`;
      const list = this.pending.get(key) ?? [];
      list.push(m);
      this.pending.set(key, list);
      if (this.data.seen[m.id] !== undefined || delivering.has(m.id)) continue;
      const p = this.data.peers[m.nickname];
      if (!p) continue;
      const event = await this.judge(p, m);
      if (event) {
        delivering.add(m.id);
        deliveries.push({ id: m.id, event });
      } else {
        this.data.seen[m.id] = this.now() + SEEN_TTL_MS;
      }
    }
    this.advanceCursors();
    await this.persist();
    return { deliveries, errors };
  }

  /** Marks a delivery processed: its id is remembered and cursors move past it. */
  async ack(delivery: Delivery): Promise<void> {
    this.data.seen[delivery.id] = this.now() + SEEN_TTL_MS;
    this.advanceCursors();
    await this.persist();
  }

  private advanceCursors(): void {
    for (const [key, list] of this.pending) {
      const [nickname, relay] = key.split(" ") as [string, string];
      const p = this.data.peers[nickname];
      if (!p) {
        this.pending.delete(key);
        continue;
      }
      while (list.length > 0 && this.data.seen[list[0]!.id] !== undefined) {
        p.cursors[relay] = Math.max(p.cursors[relay] ?? 0, list[0]!.at);
        list.shift();
      }
    }
  }

  /** Decides what a fetched message means (spec/client.md §5, §6); null = rejected. */
  private async judge(p: PeerData, m: Fetched): Promise<Event | null> {
    const ours = SecretKey.fromBytes(fromHex(p.ourSecret));
    let e: Envelope;
    try {
      e = await openEnvelope(ours, m.data, this.now());
    } catch (err) {
      this.log(`${p.nickname}: rejected a message from ${m.relay}: ${(err as EnvelopeError).message}`);
      return null;
    }
    const sender = e.from.key.toString();
    if (p.sharedByUs && sender !== p.theirKey) {
      if (e.kind !== "hello" || !p.linkSecret) return this.reject(p, "not from the peer");
      try {
        checkProof(e, fromHex(p.linkSecret));
      } catch (err) {
        return this.reject(p, (err as Error).message);
      }
      if (p.status === "waiting") {
        p.theirKey = sender;
        p.theirFrom = encodeLink(e.from);
        p.theirTs = e.ts;
        p.status = "connected";
        p.link = null;
        return { event: "peer-connected", nickname: p.nickname, key: sender, safety_code: safetyCode(ours.publicKey(), e.from.key).words, body: e.body ?? null };
      }
      const notice: Envelope = { kind: "link-used", to: e.from.key, from: this.ourLink(p), ts: this.now(), body: { error: LINK_ALREADY_USED } };
      await this.fanOutSend(e.from, ours, notice);
      this.log(`${p.nickname}: refused a second use of the link by ${sender}`);
      return { event: "link-reuse-refused", nickname: p.nickname, connected: p.theirKey ?? "", refused: sender };
    }
    if (sender !== p.theirKey) return this.reject(p, "not from the peer");
    if (e.kind === "link-used") {
      if (p.sharedByUs) return this.reject(p, "link-used sent to a link owner");
      p.status = "link-used";
      return { event: "link-already-used", nickname: p.nickname, error: LINK_ALREADY_USED };
    }
    let relaysChanged = false;
    if (e.ts > p.theirTs) {
      const from = encodeLink(e.from);
      relaysChanged = p.theirFrom !== null && from !== p.theirFrom && decodeReply(p.theirFrom).relays.map((r) => r.url).join(" ") !== e.from.relays.map((r) => r.url).join(" ");
      p.theirFrom = from;
      p.theirTs = e.ts;
    }
    if (!p.sharedByUs && p.status === "accepted") p.status = "connected";
    if (e.kind === "unshare") {
      await this.deleteMailboxes(p);
      delete this.data.peers[p.nickname];
      return { event: "peer-unshared", nickname: p.nickname };
    }
    if (e.kind === "hello" && p.sharedByUs) {
      return { event: "peer-connected", nickname: p.nickname, key: sender, safety_code: safetyCode(ours.publicKey(), e.from.key).words, body: e.body ?? null };
    }
    if (e.kind === "relays" || relaysChanged) {
      if (e.kind === "relays") return { event: "relays-changed", nickname: p.nickname, relays: e.from.relays.map((r) => r.url) };
    }
    return { event: "message", nickname: p.nickname, kind: e.kind, body: e.body ?? null };
  }

  private reject(p: PeerData, why: string): null {
    this.log(`${p.nickname}: rejected a message: ${why}`);
    return null;
  }

  /** Deletes our mailbox for a peer at each of its relays (spec/client.md §10 step 2). */
  private async deleteMailboxes(p: PeerData): Promise<RelayOutcome[]> {
    const secret = SecretKey.fromBytes(fromHex(p.ourSecret));
    const pub = secret.publicKey();
    return Promise.all(
      p.ourRelays.map(async (relay): Promise<RelayOutcome> => {
        const rc = new RelayClient(relay.url, this.timeoutMs);
        const ext = relay.ext ?? p.ourExt ?? null;
        try {
          for (let attempt = 0; ; attempt++) {
            const check = await rc.request({ action: "check", pub, ext, at: 0 });
            const answer = check.type === "found" ? answerFor(await openQuestion(secret, check.question), relay.url) : null;
            try {
              await rc.request({ action: "delete", pub, ext, answer });
              return { relay: relay.url, ok: true };
            } catch (e) {
              const again = e instanceof RelayError && (e.api === "Answer required" || e.api === "No question");
              if (!again || attempt > 0) throw e;
            }
          }
        } catch (e) {
          return { relay: relay.url, ok: false, error: (e as Error).message };
        }
      }),
    );
  }

  /** Ends a share (spec/client.md §10): tells the peer, deletes our mailbox, forgets the keys. */
  async unshare(nickname: string): Promise<{ notified: SendReport | null; deleted: RelayOutcome[] }> {
    const p = this.peer(nickname);
    let notified: SendReport | null = null;
    if (p.theirKey && p.theirFrom && p.status !== "link-used" && p.status !== "waiting") {
      notified = await this.send(nickname, "unshare", null).catch((e: ClientError) => e.report ?? null);
    }
    const deleted = await this.deleteMailboxes(p);
    delete this.data.peers[nickname];
    await this.persist();
    return { notified, deleted };
  }

  /** The safety code with a peer (spec/protocol.md §9), once the peer is known. */
  safetyCode(nickname: string): SafetyCode {
    const p = this.peer(nickname);
    if (!p.theirKey) throw new ClientError("no-peer-yet", `${nickname} has not used the link yet`);
    return safetyCode(SecretKey.fromBytes(fromHex(p.ourSecret)).publicKey(), PublicKey.parse(p.theirKey));
  }

  /** The peers, for display. */
  peers(): PeerInfo[] {
    return Object.values(this.data.peers).map((p) => ({
      nickname: p.nickname,
      status: p.status,
      shared_by_us: p.sharedByUs,
      our_key: SecretKey.fromBytes(fromHex(p.ourSecret)).publicKey().toString(),
      their_key: p.theirKey,
      our_relays: p.ourRelays.map((r) => r.url),
      their_relays: p.theirFrom ? decodeReply(p.theirFrom).relays.map((r) => r.url) : [],
      safety_code: p.theirKey && p.status !== "waiting" ? this.safetyCode(p.nickname).words : null,
      link: p.link,
    }));
  }
}

/**
 * The relay HTTP API (spec/protocol.md §7) from the client side: request
 * bodies, answers, and {@link RelayClient}, which POSTs them with `fetch`
 * under a per-request timeout and turns every failure into a typed
 * {@link RelayError}. It does not poll or fan out (see `client.ts`).
 */
import { b64decode, b64encode, utf8 } from "./b64.js";
import { isU64, scanArray, scanTop } from "./json.js";
import { PublicKey } from "./keys.js";

/** Largest `limit` of a receive. */
export const MAX_RECEIVE_LIMIT = 100;

/** Most mailboxes one held check names (`pub` and up to 15 in `also`), §7.10. */
export const MAX_MAILBOXES_PER_HELD_CHECK = 16;

/** One more mailbox of a held check (`also`), with its cursor. */
export interface MailboxCursor {
  pub: PublicKey;
  at?: number | bigint | null;
}

/** A request of §7.2. */
export type Request =
  | { action: "send"; pub: PublicKey; ext?: string | null; data: Uint8Array }
  | {
      action: "check";
      pub: PublicKey;
      ext?: string | null;
      at?: number | bigint | null;
      /** Held check (§7.10): seconds to wait for a message; 0 or absent answers at once. */
      wait?: number | bigint | null;
      /** Held check (§7.10): up to 15 more mailboxes. */
      also?: MailboxCursor[] | null;
    }
  | { action: "receive"; pub: PublicKey; ext?: string | null; at?: number | bigint | null; answer: Uint8Array; limit?: number | null }
  | { action: "delete"; pub: PublicKey; ext?: string | null; answer?: Uint8Array | null };

/** One stored message. */
export interface Message {
  /** Its position in the mailbox (µs since the epoch). */
  at: number;
  /** The sealed bytes. */
  data: Uint8Array;
}

/** A decoded answer of §7.4. */
export type Response =
  | { type: "done" }
  | { type: "not-found" }
  | { type: "found"; question: Uint8Array }
  | { type: "found-many"; checks: { pub: string; question: Uint8Array }[] }
  | { type: "one"; at: number; data: Uint8Array }
  | { type: "many"; messages: Message[] }
  | { type: "error"; error: string; detail: string | null };

/** The fixed error strings of §7.5 with their HTTP status. */
export const ERROR_STATUS: Record<string, number> = {
  "Too often": 429,
  "Too big": 413,
  Forbidden: 403,
  "Malformed JSON": 400,
  "Missing field": 400,
  "Unknown action": 400,
  "Bad public key": 400,
  "Bad base64": 400,
  "Bad value": 400,
  "No question": 403,
  "Wrong answer": 403,
  "Answer required": 403,
  "Mailbox full": 429,
  "Relay full": 503,
  Unavailable: 503,
  "Internal error": 500,
  "Not found": 404,
  "Method not allowed": 405,
};

/**
 * The error strings only `push` requests get (spec/protocol.md §7.11), with
 * their HTTP status. This client does not send `push` requests yet.
 */
export const PUSH_ERROR_STATUS: Record<string, number> = {
  "Push disabled": 501,
  "Endpoint refused": 403,
};

/** The request's JSON body, members sorted by name as the reference writes them. */
export function requestJson(r: Request): string {
  const m: Record<string, unknown> = { action: r.action, ext: r.ext ?? null, pub: r.pub.toString() };
  if (r.action === "send") m.data = b64encode(r.data);
  if (r.action === "check" || r.action === "receive") m.at = r.at ?? 0;
  if (r.action === "receive") {
    m.answer = b64encode(r.answer);
    m.limit = r.limit ?? 1;
  }
  if (r.action === "delete" && r.answer) m.answer = b64encode(r.answer);
  if (r.action === "check") {
    if (r.wait !== undefined && r.wait !== null && BigInt(r.wait) > 0n) m.wait = r.wait;
    if (r.also && r.also.length > 0) {
      m.also = new RawJson(`[${r.also.map((c) => `{"at":${(c.at ?? 0).toString()},"pub":${JSON.stringify(c.pub.toString())}}`).join(",")}]`);
    }
  }
  const keys = Object.keys(m).sort();
  const value = (x: unknown) => (x instanceof RawJson ? x.text : typeof x === "bigint" ? x.toString() : JSON.stringify(x));
  return `{${keys.map((k) => `${JSON.stringify(k)}:${value(m[k])}`).join(",")}}`;
}

/** JSON text written as it is. */
class RawJson {
  constructor(readonly text: string) {}
}

/** Largest `data` text of a send (base64url of 64 KiB). */
export const MAX_DATA_CHARS = 87382;

/** A request body a relay refuses (§7.3): the fixed error string, its status, a detail. */
export class ApiError extends Error {
  override name = "ApiError";
  /** Creates the error; `status` is the HTTP status of `error` (§7.5). */
  constructor(
    readonly error: string,
    readonly detail: string | null = null,
  ) {
    super(detail ? `${error}: ${detail}` : error);
  }
  /** The HTTP status. */
  get status(): number {
    return ERROR_STATUS[this.error] ?? 500;
  }
}

const KNOWN_MEMBERS = ["pub", "ext", "action", "data", "at", "answer", "limit", "wait", "also"];
const ACTIONS = ["send", "check", "receive", "delete"];

/**
 * Decodes a request body as a relay does (§7.3), in the spec's order; the
 * first failure is thrown as an {@link ApiError}. `at` is a bigint (it may
 * exceed 2^53). For relays and tests written in TypeScript; a client only
 * encodes requests.
 */
export function decodeRequest(body: string): Request & { at?: bigint | null } {
  if (!/^[ \t\n\r]*\{/.test(body)) throw new ApiError("Malformed JSON");
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(body) as Record<string, unknown>;
  } catch {
    throw new ApiError("Malformed JSON");
  }
  const { members } = scanTop(body);
  for (const name of KNOWN_MEMBERS) if ((members.get(name)?.length ?? 0) > 1) throw new ApiError("Malformed JSON", `duplicate ${name}`);
  const present = (name: string) => v[name] !== undefined && v[name] !== null;
  const raw = (name: string) => members.get(name)?.[0] ?? "null";
  if (!present("action")) throw new ApiError("Missing field", "action");
  if (typeof v.action !== "string") throw new ApiError("Bad value", "action");
  if (!ACTIONS.includes(v.action)) throw new ApiError("Unknown action");
  const action = v.action as Request["action"];
  if (!present("pub")) throw new ApiError("Missing field", "pub");
  if (typeof v.pub !== "string") throw new ApiError("Bad value", "pub");
  let pub: PublicKey;
  try {
    pub = PublicKey.parse(v.pub);
  } catch {
    throw new ApiError("Bad public key");
  }
  if (present("ext") && (typeof v.ext !== "string" || utf8(v.ext).length > 256)) throw new ApiError("Bad value", "ext");
  const ext = (v.ext as string | undefined) ?? null;
  if (action === "send") {
    if (!present("data")) throw new ApiError("Missing field", "data");
    if (typeof v.data !== "string") throw new ApiError("Bad value", "data");
    if (v.data.length > MAX_DATA_CHARS) throw new ApiError("Too big", "data");
    let data: Uint8Array;
    try {
      data = b64decode(v.data);
    } catch {
      throw new ApiError("Bad base64", "data");
    }
    if (data.length < 113) throw new ApiError("Bad value", "data: shorter than 113 bytes");
    return { action, pub, ext, data };
  }
  let at: bigint | null = null;
  if ((action === "check" || action === "receive") && present("at")) {
    if (!isU64(raw("at"))) throw new ApiError("Bad value", "at");
    at = BigInt(raw("at"));
  }
  let answer: Uint8Array | null = null;
  if ((action === "receive" || action === "delete") && present("answer")) {
    if (typeof v.answer !== "string") throw new ApiError("Bad value", "answer");
    try {
      answer = b64decode(v.answer);
    } catch {
      throw new ApiError("Bad base64", "answer");
    }
    if (answer.length !== 32) throw new ApiError("Bad value", "answer: not 32 bytes");
  }
  if (action === "check") {
    let wait: bigint | null = null;
    if (present("wait")) {
      if (!isU64(raw("wait"))) throw new ApiError("Bad value", "wait: expected a non-negative integer below 2^64");
      wait = BigInt(raw("wait"));
    }
    const also = present("also") ? decodeAlso(v.pub, raw("also")) : [];
    if ((wait ?? 0n) > 0n || also.length > 0) return { action, pub, ext, at, wait: wait ?? 0n, also };
    return { action, pub, ext, at };
  }
  if (action === "delete") return { action, pub, ext, answer };
  if (!answer) throw new ApiError("Missing field", "answer");
  let limit: number | null = null;
  if (present("limit")) {
    if (!isU64(raw("limit")) || BigInt(raw("limit")) < 1n || BigInt(raw("limit")) > BigInt(MAX_RECEIVE_LIMIT)) throw new ApiError("Bad value", "limit");
    limit = Number(raw("limit"));
  }
  return { action, pub, ext, at, answer, limit };
}

/** Decodes `also` (§7.3 rows 22 to 28) from its raw text; `own` is the request's `pub`. */
function decodeAlso(own: string, text: string): { pub: PublicKey; at: bigint }[] {
  if (!text.startsWith("[")) throw new ApiError("Bad value", "also: expected an array of objects");
  const elements = scanArray(text);
  const max = MAX_MAILBOXES_PER_HELD_CHECK - 1;
  if (elements.length > max) throw new ApiError("Bad value", `also: ${elements.length} mailboxes, the maximum is ${max}`);
  const seen = new Set([own]);
  return elements.map((element, i) => {
    if (!element.startsWith("{")) throw new ApiError("Bad value", `also[${i}]: expected an object`);
    const { members } = scanTop(element);
    for (const name of ["pub", "at"]) if ((members.get(name)?.length ?? 0) > 1) throw new ApiError("Bad value", `also[${i}]: a member twice`);
    const e = JSON.parse(element) as Record<string, unknown>;
    if (e.pub === undefined || e.pub === null) throw new ApiError("Missing field", `also[${i}].pub`);
    if (typeof e.pub !== "string") throw new ApiError("Bad value", `also[${i}].pub: expected a string`);
    let pub: PublicKey;
    try {
      pub = PublicKey.parse(e.pub);
    } catch {
      throw new ApiError("Bad public key", `also[${i}].pub`);
    }
    const rawAt = members.get("at")?.[0] ?? "null";
    if (rawAt !== "null" && !isU64(rawAt)) throw new ApiError("Bad value", `also[${i}].at: expected a non-negative integer below 2^64`);
    if (seen.has(e.pub)) throw new ApiError("Bad value", `also[${i}].pub: the mailbox is named twice`);
    seen.add(e.pub);
    return { pub, at: rawAt === "null" ? 0n : BigInt(rawAt) };
  });
}

/** A relay answer that is not a valid §7.4 shape. */
export class ResponseError extends Error {
  override name = "ResponseError";
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Decodes a relay's answer to `action` (any receive shape is accepted for any limit). */
export function decodeResponse(action: Request["action"], text: string): Response {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new ResponseError("the answer is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ResponseError("the answer is not an object");
  if (v.ok === false) {
    if (typeof v.error !== "string") throw new ResponseError("an error answer without error");
    return { type: "error", error: v.error, detail: typeof v.detail === "string" ? v.detail : null };
  }
  if (v.ok !== true) throw new ResponseError("the answer has no ok");
  const data = (x: unknown) => {
    if (typeof x !== "string") throw new ResponseError("data is not a string");
    try {
      return b64decode(x);
    } catch {
      throw new ResponseError("data is not base64url");
    }
  };
  switch (action) {
    case "send":
    case "delete":
      return { type: "done" };
    case "check":
      if (v.found === true && Array.isArray(v.checks) && v.checks.length > 0) {
        return {
          type: "found-many",
          checks: v.checks.map((c: Record<string, unknown>) => {
            if (typeof c.pub !== "string") throw new ResponseError("a checks entry without pub");
            return { pub: c.pub, question: data(c.question) };
          }),
        };
      }
      if (v.found === true) return { type: "found", question: data(v.question) };
      if (v.found === false) return { type: "not-found" };
      throw new ResponseError("a check answer without found");
    case "receive":
      if (Array.isArray(v.messages)) {
        return {
          type: "many",
          messages: v.messages.map((m: Record<string, unknown>) => {
            if (!isInt(m.at)) throw new ResponseError("at is not an integer");
            return { at: m.at, data: data(m.data) };
          }),
        };
      }
      if (v.found === false) return { type: "not-found" };
      if (isInt(v.at)) return { type: "one", at: v.at, data: data(v.data) };
      throw new ResponseError("a receive answer of no known shape");
  }
}

/** What went wrong with one relay. */
export type RelayErrorKind = "timeout" | "unreachable" | "api" | "malformed";

/** A request to one relay failed. */
export class RelayError extends Error {
  override name = "RelayError";
  /** Creates the error; `api` is the relay's error string for kind `api`. */
  constructor(
    readonly kind: RelayErrorKind,
    message: string,
    readonly api?: string,
  ) {
    super(message);
  }
}

/** The relay information document (§7.9), as far as a client uses it. */
export interface RelayInfo {
  /** Software name. */
  software?: string;
  /** Protocol version, 1. */
  protocol: number;
  /** Limits. */
  limits?: { max_message_bytes?: number; max_receive_limit?: number };
  /** Whether an API key is required. */
  api_key_required?: boolean;
}

/** Default per-request timeout, milliseconds. */
export const DEFAULT_TIMEOUT_MS = 5000;

/** Talks to one relay (its normalized URL) with a timeout per request. */
export class RelayClient {
  /** `url` is the normalized relay URL; `timeoutMs` bounds each request (default 5000). */
  constructor(
    readonly url: string,
    readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {}

  private async fetchText(url: string, init: RequestInit): Promise<{ status: number; text: string }> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.timeoutMs);
    try {
      const res = await fetch(url, { ...init, signal: ctl.signal });
      return { status: res.status, text: await res.text() };
    } catch (e) {
      if (ctl.signal.aborted) throw new RelayError("timeout", `${this.url}: no answer within ${this.timeoutMs} ms`);
      throw new RelayError("unreachable", `${this.url}: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends one request; an `{"ok":false}` answer throws a RelayError of kind `api`. */
  async request(r: Request): Promise<Exclude<Response, { type: "error" }>> {
    const { text } = await this.fetchText(this.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: requestJson(r),
    });
    let res: Response;
    try {
      res = decodeResponse(r.action, text);
    } catch (e) {
      throw new RelayError("malformed", `${this.url}: ${(e as Error).message}`);
    }
    if (res.type === "error") throw new RelayError("api", `${this.url}: ${res.error}${res.detail ? ` (${res.detail})` : ""}`, res.error);
    return res;
  }

  /** Fetches the information document. */
  async info(): Promise<RelayInfo> {
    const { status, text } = await this.fetchText(new URL(".well-known/connectoid", this.url).href, { method: "GET" });
    if (status !== 200) throw new RelayError("malformed", `${this.url}: information document status ${status}`);
    try {
      const info = JSON.parse(text) as RelayInfo;
      if (typeof info.protocol !== "number") throw new Error("no protocol");
      return info;
    } catch (e) {
      throw new RelayError("malformed", `${this.url}: ${(e as Error).message}`);
    }
  }
}

/**
 * The shopping list as a web app: the seed's story in a browser. Alice's
 * page makes a link (copy button, QR code); Bob opens the link URL (the page
 * reads `?connectoid=`); the pages exchange the WebRTC offer, answer and ICE
 * candidates (trickled, one envelope each) through Connectoid; an
 * RTCDataChannel opens, the lists sync (list.ts), the channel closes, and the
 * next change opens it again. The relay list is a setting (also `?relays=`).
 * State: the Connectoid profile in IndexedDB, the list in localStorage.
 */
import { Client, Delivery, IndexedDbStore, LINK_ALREADY_USED, toAppUrl } from "../src/index.js";
import { renderSVG } from "uqr";
import { Item, merge, SyncMessage, visible } from "./list.js";

const PEER = "peer";
/** How long an offer waits for its connection before it is made again. */
const ANSWER_WAIT_MS = 15_000;
/** How often a list not yet acked is sent again over an open channel. */
const RESEND_MS = 1_000;
/** How long an open channel may take to finish its sync before it is closed. */
const SYNC_WAIT_MS = 15_000;
/** Longest time one delivery may take to handle before the poll loop goes on. */
const HANDLE_WAIT_MS = 10_000;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface State {
  items: Item[];
  replica: string;
  role: "owner" | "guest" | null;
  access: "read-only" | "read-write";
  readOnlyHere: boolean;
}

const stored = localStorage.getItem("state");
const state: State = stored
  ? (JSON.parse(stored) as State)
  : { items: [], replica: crypto.randomUUID(), role: null, access: "read-write", readOnlyHere: false };
const save = () => localStorage.setItem("state", JSON.stringify(state));

/** Test and debugging hooks. */
const demo = {
  channelOpens: [] as number[],
  syncs: 0,
  log: [] as string[],
};
(window as unknown as { demo: typeof demo }).demo = demo;

function status(text: string) {
  $("status").textContent = text;
  demo.log.push(text);
}
function error(text: string) {
  $("error").textContent = text;
}

const params = new URLSearchParams(location.search);
if (params.get("relays")) localStorage.setItem("relays", params.get("relays")!.split(",").join("\n"));
const relays = () =>
  (localStorage.getItem("relays") ?? "")
    .split(/\s+/)
    .filter(Boolean)
    .map((url) => ({ url }));
($("relays") as HTMLTextAreaElement).value = relays()
  .map((r) => r.url)
  .join("\n");

const client = await Client.open(new IndexedDbStore("connectoid-shopping-list"), { timeoutMs: 4000, log: (l) => demo.log.push(l) });

// ---------------------------------------------------------------- list UI

function render() {
  const ul = $("items");
  ul.replaceChildren(
    ...visible(state.items).map((item) => {
      const li = document.createElement("li");
      li.textContent = item.text;
      const rm = document.createElement("button");
      rm.textContent = "remove";
      rm.onclick = () => edit(() => Object.assign(item, { deleted: true, updatedAt: Date.now(), by: state.replica }));
      li.append(rm);
      return li;
    }),
  );
  const peer = client.peers().find((p) => p.nickname === PEER);
  $("peer").textContent = peer ? `${peer.status}${state.access === "read-only" && state.role === "owner" ? " (read-only share)" : ""}` : "no peer";
}

let dirty = false;
function edit(change: () => void) {
  if (state.readOnlyHere) {
    error("this list is shared with you read-only: changes are not allowed");
    return;
  }
  change();
  save();
  render();
  dirty = true;
  void syncSoon();
}

$("add").onsubmit = (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("item");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  edit(() => state.items.push({ id: crypto.randomUUID(), text, updatedAt: Date.now(), deleted: false, by: state.replica }));
};

// ---------------------------------------------------------------- WebRTC

let pc: RTCPeerConnection | null = null;

/** The WebRTC session a candidate belongs to (candidates of older sessions are dropped). */
let session = "";
/** Candidates that arrived before the remote description. */
let early: RTCIceCandidateInit[] = [];
/**
 * Candidates of a session whose offer has not been seen yet: the offer and
 * its candidates travel as separate envelopes, possibly through different
 * relays, so a candidate can arrive first. Kept for a few sessions.
 */
const ahead = new Map<string, RTCIceCandidateInit[]>();
/** Our candidates gathered before our offer or answer is out; sent after it, so they never overtake it. */
let outbox: RTCIceCandidateInit[] | null = null;

function sendCandidate(candidate: RTCIceCandidateInit) {
  if (outbox) outbox.push(candidate);
  else client.send(PEER, "app", { ice: { session, candidate } }).catch((e: Error) => error(e.message));
}

function flushOutbox() {
  const queued = outbox ?? [];
  outbox = null;
  queued.forEach(sendCandidate);
}

async function addCandidate(s: string, candidate: RTCIceCandidateInit) {
  if (s !== session) {
    if (!ahead.has(s)) {
      if (ahead.size >= 4) ahead.delete(ahead.keys().next().value!);
      ahead.set(s, []);
    }
    ahead.get(s)!.push(candidate);
    return;
  }
  if (!pc) return;
  if (!pc.remoteDescription) early.push(candidate);
  else await pc.addIceCandidate(candidate);
}

async function flushEarly() {
  for (const c of early.splice(0)) await pc?.addIceCandidate(c);
}

function newConnection(): RTCPeerConnection {
  pc?.close();
  const conn = new RTCPeerConnection({ iceServers: [] });
  conn.ondatachannel = (e) => channel(e.channel, conn);
  early = [];
  // Trickle ICE: every candidate travels as its own Connectoid envelope.
  conn.onicecandidate = (e) => {
    if (e.candidate && conn === pc) sendCandidate(e.candidate.toJSON());
  };
  pc = conn;
  return conn;
}

/**
 * Runs one sync over a data channel of `conn`: each side sends its list when
 * the channel opens, resends it every second until the other side acks it,
 * acks what it receives, and closes once it has both received the other's
 * list and had its own acked (closing any earlier could drop a list still in
 * flight when the connection goes). A side whose list was never acked stays
 * dirty and syncs again. Events of a channel whose connection was replaced
 * (an offer answered while the last channel was still closing) do not touch
 * the current connection.
 */
function channel(dc: RTCDataChannel, conn: RTCPeerConnection) {
  let received = false;
  let acked = false;
  let resend: ReturnType<typeof setInterval> | undefined;
  const finish = () => {
    if (!received || !acked) return;
    clearInterval(resend);
    const close = () => (dc.bufferedAmount > 0 ? setTimeout(close, 20) : dc.close());
    close();
  };
  dc.onopen = () => {
    demo.channelOpens.push(performance.now());
    status("channel open");
    const msg: SyncMessage = { items: state.items, ...(state.role === "owner" ? { access: state.access } : {}) };
    dirty = false;
    const text = JSON.stringify(msg);
    dc.send(text);
    resend = setInterval(() => dc.readyState === "open" && dc.send(text), RESEND_MS);
    // A channel that does not finish its sync is given up (and the sync
    // made again if something is left to send).
    setTimeout(() => dc.readyState !== "closed" && !(received && acked) && dc.close(), SYNC_WAIT_MS);
  };
  dc.onmessage = (e) => {
    const msg = JSON.parse(String(e.data)) as SyncMessage | { ack: true };
    if ("ack" in msg) {
      acked = true;
      finish();
      return;
    }
    dc.send(JSON.stringify({ ack: true }));
    if (received) return; // a resent copy
    if (state.role === "guest") {
      state.readOnlyHere = msg.access === "read-only";
    }
    const ignore = state.role === "owner" && state.access === "read-only";
    if (!ignore) state.items = merge(state.items, msg.items ?? []).items;
    save();
    render();
    received = true;
    demo.syncs++;
    finish();
  };
  dc.onclose = () => {
    clearInterval(resend);
    conn.close();
    if (!acked) dirty = true;
    if (conn !== pc) return;
    status(received ? "synced; channel closed" : "channel closed");
    pc = null;
    if (dirty) void syncSoon();
  };
}

/** Opens a channel by sending an offer (the guest's first one rides on the hello). */
async function startSession(linkText?: string) {
  session = crypto.randomUUID();
  outbox = [];
  const conn = newConnection();
  channel(conn.createDataChannel("list"), conn);
  await conn.setLocalDescription(await conn.createOffer());
  const d = conn.localDescription!;
  const sdpOffer = { type: d.type, sdp: d.sdp };
  if (linkText !== undefined) {
    status("using the link…");
    await client.accept(linkText, PEER, { sdpOffer, session });
    state.role = "guest";
    save();
    history.replaceState(null, "", location.pathname);
    status("link used; waiting for the answer");
  } else {
    await client.send(PEER, "offer", { sdpOffer, session });
    status("offer sent");
  }
  flushOutbox();
  render();
  // An offer that is never answered (lost, or the other side's offer won a
  // glare) must not hold the page's one connection for good: give up on it
  // and offer again if there is still something to sync.
  setTimeout(() => {
    if (pc !== conn || conn.connectionState === "connected") return;
    conn.close();
    pc = null;
    status("no answer to the offer; trying again");
    if (dirty) void syncSoon();
  }, ANSWER_WAIT_MS);
}

async function answer(offer: RTCSessionDescriptionInit, offerSession: string) {
  if (pc && pc.signalingState === "have-local-offer") {
    if (state.role === "owner") return; // glare: the owner's offer wins
  }
  session = offerSession;
  outbox = [];
  const conn = newConnection();
  early = ahead.get(offerSession) ?? [];
  ahead.delete(offerSession);
  await conn.setRemoteDescription(offer);
  await flushEarly();
  await conn.setLocalDescription(await conn.createAnswer());
  const d = conn.localDescription!;
  await client.send(PEER, "answer", { sdpAnswer: { type: d.type, sdp: d.sdp }, session });
  flushOutbox();
  status("answer sent");
}

let syncing = false;
async function syncSoon() {
  const peer = client.peers().find((p) => p.nickname === PEER);
  if (syncing || pc || !peer || peer.status !== "connected") return;
  syncing = true;
  try {
    await startSession();
  } catch (e) {
    error((e as Error).message);
  } finally {
    syncing = false;
  }
}

// ---------------------------------------------------------------- Connectoid

async function handle(d: Delivery) {
  const e = d.event;
  switch (e.event) {
    case "peer-connected": {
      status("peer connected");
      const body = e.body as { sdpOffer?: RTCSessionDescriptionInit; session?: string };
      if (body?.sdpOffer) await answer(body.sdpOffer, String(body.session));
      break;
    }
    case "message": {
      const body = e.body as {
        sdpOffer?: RTCSessionDescriptionInit;
        sdpAnswer?: RTCSessionDescriptionInit;
        session?: string;
        ice?: { session: string; candidate: RTCIceCandidateInit };
      };
      if (e.kind === "offer" && body?.sdpOffer) await answer(body.sdpOffer, String(body.session));
      if (e.kind === "answer" && body?.sdpAnswer && body.session === session && pc?.signalingState === "have-local-offer") {
        await pc.setRemoteDescription(body.sdpAnswer);
        await flushEarly();
      }
      if (e.kind === "app" && body?.ice) await addCandidate(body.ice.session, body.ice.candidate);
      break;
    }
    case "link-already-used":
      error(LINK_ALREADY_USED);
      status("link already used");
      break;
    case "link-reuse-refused":
      status(`refused a second use of the link by ${e.refused.slice(0, 8)}…`);
      break;
    case "peer-unshared":
      pc?.close();
      pc = null;
      state.role = null;
      save();
      status("the peer unshared");
      break;
    default:
      break;
  }
}

async function pollLoop() {
  for (;;) {
    if (client.peers().length > 0) {
      try {
        const { deliveries } = await client.poll();
        for (const d of deliveries) {
          try {
            // A WebRTC call that never settles must not stop the loop.
            await Promise.race([
              handle(d),
              new Promise((_, fail) => setTimeout(() => fail(new Error(`handling a ${d.event.event} took over ${HANDLE_WAIT_MS} ms`)), HANDLE_WAIT_MS)),
            ]);
          } catch (e) {
            error((e as Error).message);
          }
          await client.ack(d);
        }
        render();
      } catch (e) {
        error((e as Error).message);
      }
    }
    await new Promise((r) => setTimeout(r, Number(localStorage.getItem("pollMs") ?? 500)));
  }
}

// ---------------------------------------------------------------- buttons

$("share").onclick = async () => {
  try {
    if (client.peers().some((p) => p.nickname === PEER)) await client.unshare(PEER);
    state.role = "owner";
    state.access = $<HTMLInputElement>("readonly").checked ? "read-only" : "read-write";
    save();
    const { link } = await client.share(PEER, { relays: relays() });
    const url = toAppUrl(link, location.origin + location.pathname);
    $("link").textContent = url;
    $("qr").innerHTML = renderSVG(url);
    $("shared").hidden = false;
    status("link made; waiting for the peer");
    render();
  } catch (e) {
    error((e as Error).message);
  }
};
$("copy").onclick = () => void navigator.clipboard?.writeText($("link").textContent ?? "");
$("safety").onclick = () => {
  try {
    const code = client.safetyCode(PEER);
    $("code").textContent = `${code.emoji} (${code.words})`;
  } catch (e) {
    error((e as Error).message);
  }
};
$("unshare").onclick = async () => {
  try {
    await client.unshare(PEER);
    pc?.close();
    pc = null;
    state.role = null;
    save();
    status("unshared");
    render();
  } catch (e) {
    error((e as Error).message);
  }
};
$("save-relays").onclick = () => {
  localStorage.setItem("relays", $<HTMLTextAreaElement>("relays").value);
  status("relays saved");
};

// ---------------------------------------------------------------- start

render();
status("ready");
const linkText = params.get("connectoid");
if (linkText && !client.peers().some((p) => p.nickname === PEER)) {
  startSession(location.href).catch((e: Error) => error(e.message));
}
void pollLoop();

#!/usr/bin/env python3
"""An independent check of the Connectoid test vectors, written from spec/protocol.md.

It shares no code with the Rust implementation: HPKE (RFC 9180), ES384, the
link proof, the safety code and the UDP datagrams are re-implemented here with
the Python `cryptography` package (44 or newer, for deterministic ECDSA), so a
vector that passes here and in `cargo test -p connectoid-protocol` is what the
spec says, not only what the library does. The URLs of clarified.json (app
URLs, relay URL normalization with IDNA UTS #46 non-transitional, answers
bound to URLs, lengths in bytes) need the `idna` package; what is not
re-derived is printed.

Usage: python3 spec/vectors/check.py   (exit status 0 when every vector passes)
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
P = 2**384 - 2**128 - 2**96 + 2**32 - 1
B = 0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF
B64_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return json.load(f)


# --- base64url without padding, strict ------------------------------------


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    if not B64_RE.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64e(data) != text:
        raise ValueError("non-canonical trailing bits")
    return data


# --- keys ----------------------------------------------------------------


def decompress(point: bytes) -> ec.EllipticCurvePublicKey:
    if len(point) != 49:
        raise ValueError("WrongLength")
    if point[0] not in (2, 3):
        raise ValueError("NotCompressed")
    x = int.from_bytes(point[1:], "big")
    if x >= P:
        raise ValueError("NotOnCurve")
    y2 = (pow(x, 3, P) - 3 * x + B) % P
    y = pow(y2, (P + 1) // 4, P)
    if y * y % P != y2:
        raise ValueError("NotOnCurve")
    if y % 2 != point[0] % 2:
        y = P - y
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()


def compress(key: ec.EllipticCurvePublicKey) -> bytes:
    n = key.public_numbers()
    return bytes([2 + (n.y & 1)]) + n.x.to_bytes(48, "big")


def uncompressed(key: ec.EllipticCurvePublicKey) -> bytes:
    n = key.public_numbers()
    return b"\x04" + n.x.to_bytes(48, "big") + n.y.to_bytes(48, "big")


def secret_key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    if len(scalar) != 48:
        raise ValueError("WrongLength")
    d = int.from_bytes(scalar, "big")
    if not 0 < d < N:
        raise ValueError("InvalidScalar")
    return ec.derive_private_key(d, ec.SECP384R1())


def parse_public_text(text: str) -> bytes:
    if len(text) != 66:
        raise ValueError("WrongLength")
    try:
        raw = b64d(text)
    except ValueError:
        raise ValueError("Base64")
    decompress(raw)
    return raw


def sign(secret: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    der = secret.sign(message, ec.ECDSA(hashes.SHA384(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != 96:
        return False
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        decompress(public).verify(
            encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384())
        )
        return True
    except Exception:
        return False


# --- HPKE (RFC 9180), DHKEM(P-384, HKDF-SHA384), HKDF-SHA384, AES-256-GCM --

KEM_ID, KDF_ID, AEAD_ID = 0x0011, 0x0002, 0x0002
KEM_SUITE = b"KEM" + KEM_ID.to_bytes(2, "big")
HPKE_SUITE = b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")


def extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\x00" * 48, ikm, hashlib.sha384).digest()


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha384).digest()
        out += block
        i += 1
    return out[:length]


def labeled_extract(suite, salt, label, ikm):
    return extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite, prk, label, info, length):
    return expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)


def derive_key_pair(ikm: bytes) -> ec.EllipticCurvePrivateKey:
    prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm)
    for counter in range(256):
        candidate = labeled_expand(KEM_SUITE, prk, b"candidate", bytes([counter]), 48)
        d = int.from_bytes(candidate, "big")
        if 0 < d < N:
            return ec.derive_private_key(d, ec.SECP384R1())
    raise ValueError("DeriveKeyPairError")


def key_schedule(shared_secret: bytes, info: bytes):
    psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"")
    key = labeled_expand(HPKE_SUITE, secret, b"key", context, 32)
    nonce = labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12)
    return key, nonce


def kem_shared_secret(dh: bytes, enc: bytes, pk_rm: bytes) -> bytes:
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    return labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_rm, 48)


def hpke_seal(recipient_compressed: bytes, info: bytes, plaintext: bytes, ikm_e: bytes) -> bytes:
    recipient = decompress(recipient_compressed)
    eph = derive_key_pair(ikm_e)
    enc = uncompressed(eph.public_key())
    dh = eph.exchange(ec.ECDH(), recipient)
    shared = kem_shared_secret(dh, enc, uncompressed(recipient))
    key, nonce = key_schedule(shared, info)
    return enc + AESGCM(key).encrypt(nonce, plaintext, b"")


def hpke_open(secret: ec.EllipticCurvePrivateKey, info: bytes, sealed: bytes) -> bytes:
    if len(sealed) < 113:
        raise ValueError("Open::TooShort")
    enc, ct = sealed[:97], sealed[97:]
    try:
        eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), enc)
        if enc[0] != 4:
            raise ValueError
    except ValueError:
        raise ValueError("Open::BadEncappedKey")
    dh = secret.exchange(ec.ECDH(), eph)
    shared = kem_shared_secret(dh, enc, uncompressed(secret.public_key()))
    key, nonce = key_schedule(shared, info)
    try:
        return AESGCM(key).decrypt(nonce, ct, b"")
    except Exception:
        raise ValueError("Open::Decrypt")


INFO = {"message": b"connectoid/v1 message", "question": b"connectoid/v1 question"}
MAX_PADDED = 65536 - 113


def padded_len(n: int) -> int:
    if n > MAX_PADDED - 1:
        raise ValueError("too big")
    bucket = 256
    while bucket < n + 1:
        bucket *= 2
    return min(bucket, MAX_PADDED)


def pad(plaintext: bytes) -> bytes:
    return plaintext + b"\x80" + b"\x00" * (padded_len(len(plaintext)) - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        raise ValueError("Open::Padding")
    return stripped[:-1]


# --- checks ---------------------------------------------------------------


def check_keys():
    v = load("keys.json")
    for k in v["valid"]:
        sk = secret_key(bytes.fromhex(k["secret_hex"]))
        pub = compress(sk.public_key())
        assert pub.hex() == k["public_hex"], k["name"]
        assert b64e(pub) == k["public_b64"]
        assert parse_public_text(k["public_b64"]) == pub
    for s in v["signatures"]:
        sk = secret_key(bytes.fromhex(s["secret_hex"]))
        sig = sign(sk, s["message"].encode())
        assert sig.hex() == s["signature_hex"], s
        assert verify(compress(sk.public_key()), s["message"].encode(), sig)
    for k in v["invalid_public"]:
        try:
            parse_public_text(k["text"])
            raise AssertionError(k["name"] + " parsed")
        except ValueError as e:
            assert str(e) == k["error"], (k["name"], e)
    for k in v["invalid_secret"]:
        try:
            secret_key(bytes.fromhex(k["secret_hex"]))
            raise AssertionError(k["name"] + " parsed")
        except ValueError as e:
            assert str(e) == k["error"], (k["name"], e)
    return len(v["valid"]) + len(v["signatures"]) + len(v["invalid_public"]) + len(v["invalid_secret"])


def check_hpke():
    v = load("hpke.json")
    assert v["suite"] == {"mode": 0, "kem_id": KEM_ID, "kdf_id": KDF_ID, "aead_id": AEAD_ID}
    for p in v["padding"]:
        assert padded_len(p["plaintext_len"]) == p["padded_len"], p
    for t in v["vectors"]:
        sk = secret_key(bytes.fromhex(t["recipient_secret_hex"]))
        pub = compress(sk.public_key())
        assert b64e(pub) == t["recipient_public_b64"]
        info = INFO[t["purpose"]]
        assert info == t["info"].encode()
        ikm = bytes.fromhex(t["ikm_e_hex"])
        eph = derive_key_pair(ikm)
        assert eph.private_numbers().private_value.to_bytes(48, "big").hex() == t["eph_secret_hex"]
        assert uncompressed(eph.public_key()).hex() == t["enc_hex"]
        plaintext = bytes.fromhex(t["plaintext_hex"])
        padded = pad(plaintext) if t["purpose"] == "message" else plaintext
        assert padded.hex() == t["padded_hex"], t["name"]
        sealed = hpke_seal(pub, info, padded, ikm)
        assert sealed.hex() == t["sealed_hex"], t["name"]
        assert b64e(sealed) == t["sealed_b64"]
        assert hashlib.sha256(sealed).hexdigest() == t["id_hex"]
        assert hpke_open(sk, info, sealed) == padded
        if t["purpose"] == "question":
            secret = hpke_open(sk, info, sealed)
            answer = hmac.new(secret, b"connectoid/v1 answer\x00" + t["relay_url"].encode(), hashlib.sha256).digest()
            assert b64e(answer) == t["answer_b64"]
    return len(v["vectors"]) + len(v["padding"])


def check_envelopes():
    v = load("envelopes.json")
    header = v["header"].encode()
    for t in v["valid"]:
        sender = secret_key(bytes.fromhex(t["sender_secret_hex"]))
        recipient = secret_key(bytes.fromhex(t["recipient_secret_hex"]))
        env = t["envelope"]
        payload = t["payload_json"].encode()
        parsed = json.loads(payload)
        assert list(parsed)[:5] == ["v", "kind", "to", "from", "ts"], list(parsed)
        assert parsed["v"] == 1 and parsed["kind"] == env["kind"] and parsed["to"] == env["to"]
        assert parsed["from"] == env["from"] and parsed["ts"] == env["ts"]
        assert parsed.get("proof") == env["proof_b64"] and parsed["body"] == env["body"]
        signing_input = b64e(header) + "." + b64e(payload)
        assert signing_input == t["signing_input"]
        sig = sign(sender, signing_input.encode())
        assert sig.hex() == t["signature_hex"], t["name"]
        jws = signing_input + "." + b64e(sig)
        assert jws == t["jws"]
        from_key = b64d(env["from"].split(".")[0])
        assert from_key == compress(sender.public_key())
        assert verify(from_key, signing_input.encode(), sig)
        if t["link_secret_hex"]:
            proof_input = b"connectoid/v1 link proof\x00" + b64d(env["to"]) + from_key
            assert proof_input.hex() == t["proof_input_hex"]
            proof = hmac.new(bytes.fromhex(t["link_secret_hex"]), proof_input, hashlib.sha256).digest()
            assert proof.hex() == t["proof_hex"] and b64e(proof) == env["proof_b64"]
        sealed = hpke_seal(b64d(env["to"]), INFO["message"], pad(jws.encode()), bytes.fromhex(t["ikm_e_hex"]))
        assert sealed.hex() == t["sealed_hex"], t["name"]
        assert len(sealed) == 113 + t["padded_len"]
        assert unpad(hpke_open(recipient, INFO["message"], sealed)) == jws.encode()
    for t in v["rejected"]:
        recipient = secret_key(bytes.fromhex(t["recipient_secret_hex"]))
        sealed = bytes.fromhex(t["sealed_hex"])
        if "ikm_e_hex" in t:
            resealed = hpke_seal(
                b64d(t["sealed_to_b64"]), INFO[t["purpose"]], bytes.fromhex(t["padded_hex"]), bytes.fromhex(t["ikm_e_hex"])
            )
            assert resealed == sealed, t["name"]
        if t["error"].startswith("Open::"):
            try:
                unpad(hpke_open(recipient, INFO["message"], sealed))
                raise AssertionError(t["name"] + " opened")
            except ValueError as e:
                assert str(e) == t["error"], (t["name"], e)
    return len(v["valid"]) + len(v["rejected"])


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def option_str(text) -> bytes:
    if text is None:
        return b"\x00"
    raw = text.encode()
    return b"\x01" + varint(len(raw)) + raw


STATUS = {"not-found": 0, "found": 1, "too-often": 2, "forbidden": 3}


def encode_request(r) -> bytes:
    out = b"CNID\x01\x01" + bytes.fromhex(r["nonce_hex"]) + option_str(r["ext"]) + varint(len(r["checks"]))
    for c in r["checks"]:
        out += bytes.fromhex(c["key_hex"]) + varint(c["at"])
    return out


def encode_response(r) -> bytes:
    out = b"CNID\x01\x02" + bytes.fromhex(r["nonce_hex"]) + varint(len(r["statuses"]))
    out += b"".join(varint(STATUS[s]) for s in r["statuses"])
    observed = r["observed"]
    if observed is None:
        return out + b"\x00"
    import ipaddress

    ip = ipaddress.ip_address(observed["ip"])
    tag = b"\x00" if ip.version == 4 else b"\x01"
    return out + b"\x01" + tag + ip.packed + varint(observed["port"])


def check_udp():
    v = load("udp.json")
    for t in v["requests"]:
        assert encode_request(t["value"]).hex() == t["hex"], t["name"]
    for t in v["responses"]:
        assert encode_response(t["value"]).hex() == t["hex"], t["name"]
    for t in v["encode_within"]:
        full = encode_response(t["response"])
        bare = encode_response(dict(t["response"], observed=None))
        expected = full if len(full) <= t["request_len"] else bare if len(bare) <= t["request_len"] else None
        assert (expected.hex() if expected else None) == t["hex"], t["name"]
    return len(v["requests"]) + len(v["responses"]) + len(v["encode_within"])


def check_wait():
    """wait.json: an independent decoder of a held check's members (§7.3 rows
    20 to 27), for bodies whose other members are valid."""
    v = load("wait.json")
    known = {"pub", "ext", "action", "data", "at", "answer", "limit", "wait", "also"}

    class Obj(list):
        """A JSON object as its (name, value) pairs, duplicates kept."""

    def parse(body):
        def hook(items):
            return Obj(items)
        return json.loads(body, object_pairs_hook=hook, parse_float=lambda s: ("float", s),
                          parse_constant=lambda s: ("float", s))

    def uint(value):
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64

    def decode(body):
        items = parse(body)
        names = [k for k, _ in items if k in known]
        if len(names) != len(set(names)):
            return ("Malformed JSON", None)
        m = {k: val for k, val in items}
        if m["action"] != "check":
            return ("ok", {"pub": m["pub"], "action": m["action"]})
        at = m.get("at")
        if at is not None and not uint(at):
            return ("Bad value", "at: expected a non-negative integer below 2^64")
        wait = m.get("wait")
        if wait is not None and not uint(wait):
            return ("Bad value", "wait: expected a non-negative integer below 2^64")
        also_raw = m.get("also")
        also = []
        if also_raw is not None:
            if not isinstance(also_raw, list) or isinstance(also_raw, Obj):
                return ("Bad value", "also: expected an array of objects")
            if len(also_raw) > 15:
                return ("Bad value", f"also: {len(also_raw)} mailboxes, the maximum is 15")
            seen = {m["pub"]}
            for i, element in enumerate(also_raw):
                if not isinstance(element, Obj):
                    return ("Bad value", f"also[{i}]: expected an object")
                names = [k for k, _ in element if k in ("pub", "at")]
                if len(names) != len(set(names)):
                    return ("Bad value", f"also[{i}]: a member twice")
                e = {k: val for k, val in element}
                key = e.get("pub")
                if key is None:
                    return ("Missing field", f"also[{i}].pub")
                if not isinstance(key, str):
                    return ("Bad value", f"also[{i}].pub: expected a string")
                try:
                    parse_public_text(key)
                except ValueError:
                    return ("Bad public key", None)
                cursor = e.get("at")
                if cursor is not None and not uint(cursor):
                    return ("Bad value", f"also[{i}].at: expected a non-negative integer below 2^64")
                if key in seen:
                    return ("Bad value", f"also[{i}].pub: the mailbox is named twice")
                seen.add(key)
                also.append({"pub": key, "at": cursor or 0})
        decoded = {"pub": m["pub"], "action": "check", "at": at or 0}
        if (wait or 0) > 0 or also:
            decoded.update(wait=wait or 0, also=also)
        return ("ok", decoded)

    for t in v["requests"]:
        outcome, value = decode(t["body"])
        if outcome == "ok":
            assert "decoded" in t, (t["name"], outcome, value)
            for member, expected in value.items():
                assert t["decoded"][member] == expected, (t["name"], member)
            assert set(t["decoded"]) - {"ext", "answer_hex"} == set(value), t["name"]
        else:
            assert t.get("error") == outcome, (t["name"], outcome, t.get("error"))
            if outcome in ("Bad value", "Missing field"):
                assert t["detail"] == value, (t["name"], value, t["detail"])
    for t in v["responses"]:
        value = t["value"]
        if value["type"] == "not-found":
            expected = {"ok": True, "found": False}
        else:
            expected = {"ok": True, "found": True, "checks": [
                {"pub": c["pub"], "question": b64e(bytes.fromhex(c["question_hex"]))} for c in value["checks"]
            ]}
        assert json.loads(t["json"]) == expected, t["name"]
        assert t["status"] == 200
    return len(v["requests"]) + len(v["responses"])


def check_safety():
    v = load("safety.json")
    symbols = v["symbols"]
    assert len(symbols) == 64
    for t in v["vectors"]:
        a, b = b64d(t["a_b64"]), b64d(t["b_b64"])
        low, high = sorted([a, b])
        digest = hashlib.sha384(v["label"].encode() + b"\x00" + low + high).digest()
        assert digest.hex() == t["digest_hex"]
        bits = int.from_bytes(digest[:9], "big")
        indices = [(bits >> (66 - 6 * i)) & 0x3F for i in range(12)]
        assert indices == t["indices"]
        assert " ".join(symbols[i][0] for i in indices) == t["emoji"]
        assert " ".join(symbols[i][1] for i in indices) == t["words"]
    return len(v["vectors"])


# Unicode White_Space (Rust's char::is_whitespace); str.isspace() differs.
WHITE_SPACE = set("\t\n\v\f\r \u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
PASTE_OPENERS = "\"'`<([\u201c\u2018\u00ab"
PASTE_CLOSERS = "\"'`>)],.\u201d\u2019\u00bb"
B64_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
SECRET_PART_LEN = 27  # base64url of 16 secret bytes and a 4-byte checksum


def clean_pasted(text):
    """§4.6: white space out everywhere, then openers at the start and
    closers at the end (a '.' only while another '.' stays before it)."""
    text = "".join(ch for ch in text if ch not in WHITE_SPACE)
    while True:
        before = len(text)
        if text and text[0] in PASTE_OPENERS:
            text = text[1:]
        if text and text[-1] in PASTE_CLOSERS and (text[-1] != "." or "." in text[:-1]):
            text = text[:-1]
        if len(text) == before:
            return text


def link_check(head: str, secret: bytes) -> bytes:
    """§4.3: the first 4 bytes of SHA-256 of the value up to its third '.', then the secret."""
    return hashlib.sha256(head.encode() + secret).digest()[:4]


def canonical_b64(text):
    try:
        return b64e(b64d(text)) == text
    except Exception:
        return False


def link_shape_code(text):
    """The code §4.6 gives the checks this project added (cleaning, the
    four-part checksum, truncation), or None when they pass."""
    text = clean_pasted(text)
    if text.startswith("connectoid="):
        text = text[len("connectoid="):]
    elif ":" in text:
        return None  # app URLs: the valid vectors cover them
    parts = text.split(".")
    if len(parts) == 4:
        last = parts[3]
        if set(last) - B64_ALPHABET:
            return "secret-base64"
        if len(last) < SECRET_PART_LEN:
            return "truncated"
        if len(last) > SECRET_PART_LEN:
            return "secret-length"
        if not canonical_b64(last):
            return "damaged"
        raw = b64d(last)
        if link_check(text[: len(text) - len(last)], raw[:16]) != raw[16:]:
            return "damaged"
    elif len(parts) in (2, 3) and not set(parts[-1]) - B64_ALPHABET and not canonical_b64(parts[-1]):
        return "truncated"
    return None


def check_links():
    """The base64url and key parts of the valid links (URL normalization is
    WHATWG's), the four-part checksum, and the codes of damaged, truncated
    and pasted links."""
    v = load("links.json")
    for t in v["valid"]:
        parts = t["encoded"].split(".")
        link = t["link"]
        assert parts[0] == link["pub"] and parse_public_text(parts[0])
        entries = []
        for r in link["relays"]:
            entries.append(r["url"] + ("|" + b64e(r["ext"].encode()) if r["ext"] else ""))
        assert b64d(parts[1]).decode() == " ".join(entries), t["name"]
        expected_ext = b64e(link["ext"].encode()) if link["ext"] else ""
        if link["secret_hex"]:
            assert len(parts) == 4 and parts[2] == expected_ext
            secret = bytes.fromhex(link["secret_hex"])
            head = t["encoded"][: len(t["encoded"]) - len(parts[3])]
            assert b64d(parts[3]) == secret + link_check(head, secret), t["name"]
        elif link["ext"]:
            assert len(parts) == 3 and parts[2] == expected_ext
        else:
            assert len(parts) == 2
        if t["mode"] == "link":
            assert link_shape_code(t["input"]) is None, t["name"]
            if t["name"].startswith("pasted:") and ":" not in clean_pasted(t["input"]):
                assert clean_pasted(t["input"]) == t["encoded"], t["name"]
    shape_codes = {"truncated", "damaged", "secret-length", "secret-base64"}
    checked = 0
    for t in v["invalid"]:
        if t["code"] in shape_codes:
            assert link_shape_code(t["input"]) == t["code"], t["name"]
            checked += 1
    assert checked >= 10
    return len(v["valid"]) + checked


def parse_candidate(text):
    """`ip:port` as Rust's SocketAddr reads it: a dotted IPv4 address or a
    bracketed IPv6 one, then a decimal port."""
    import ipaddress
    if not isinstance(text, str):
        raise ValueError("malformed")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([0-9.]+):([0-9]{1,5})", text)
    if not m:
        raise ValueError("malformed")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("malformed")
    if int(port) > 65535:
        raise ValueError("malformed")
    return text


def read_offer(body, limits):
    """The checks of spec/protocol.md §15.1, in order; returns the error code."""
    if not isinstance(body, dict) or "quic" not in body:
        raise ValueError("no-quic")
    quic = body["quic"]
    if not isinstance(quic, dict):
        raise ValueError("malformed")
    for member, kind in (("session", str), ("fingerprint", str), ("candidates", list)):
        if not isinstance(quic.get(member), kind):
            raise ValueError("malformed")
    for c in quic["candidates"]:
        parse_candidate(c)
    if len(quic["candidates"]) > limits["max_candidates"]:
        raise ValueError("too-many-candidates")
    if not 0 < len(quic["session"].encode()) <= limits["max_session_len"]:
        raise ValueError("session")
    try:
        fingerprint = b64d(quic["fingerprint"])
    except ValueError:
        raise ValueError("fingerprint")
    if len(fingerprint) != limits["fingerprint_len"]:
        raise ValueError("fingerprint")
    return quic["session"], fingerprint, quic["candidates"]


def read_frame(data: bytes, limits):
    if len(data) < 4:
        raise ValueError("truncated")
    n = int.from_bytes(data[:4], "big")
    if n > limits["max_frame_len"]:
        raise ValueError("too-long")
    if len(data) < 4 + n:
        raise ValueError("truncated")
    return data[4 : 4 + n], data[4 + n :]


def read_auth_message(kind, text):
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("malformed")
    if not isinstance(value, dict):
        raise ValueError("malformed")
    member, length = ("challenge", 32) if kind == "challenge" else ("signature", 96)
    if not isinstance(value.get(member), str):
        raise ValueError("malformed")
    key = value.get("key")
    if kind == "proof" and key is not None and not isinstance(key, str):
        raise ValueError("malformed")
    try:
        raw = b64d(value[member])
    except ValueError:
        raise ValueError(member)
    if len(raw) != length:
        raise ValueError(member)
    if kind == "proof" and key is not None:
        try:
            parse_public_text(key)
        except ValueError:
            raise ValueError("key")
    return raw, key


def check_peer():
    v = load("peer.json")
    limits = v["limits"]
    label = limits["auth_label"].encode()
    assert label == b"connectoid/v1 peer link"
    count = 0
    for f in v["frames"]:
        message = bytes.fromhex(f["message_hex"])
        frame = len(message).to_bytes(4, "big") + message
        assert frame.hex() == f["frame_hex"], f["name"]
        assert read_frame(frame, limits) == (message, b"")
        count += 1
    for f in v["invalid_frames"]:
        try:
            read_frame(bytes.fromhex(f["hex"]), limits)
            raise AssertionError(f["name"] + " read")
        except ValueError as e:
            assert str(e) == f["error"], (f["name"], e)
        count += 1
    for f in v["fingerprints"]:
        digest = hashlib.sha256(bytes.fromhex(f["certificate_hex"])).digest()
        assert digest.hex() == f["fingerprint_hex"] and b64e(digest) == f["fingerprint_b64"]
        count += 1
    for o in v["offers"]:
        session, fingerprint, candidates = read_offer(o["body"], limits)
        expected = o["offer"]
        assert session == expected["session"] and fingerprint.hex() == expected["fingerprint_hex"]
        assert candidates == expected["candidates"], o["name"]
        count += 1
    for o in v["invalid_offers"]:
        try:
            read_offer(o["body"], limits)
            raise AssertionError(o["name"] + " read")
        except ValueError as e:
            assert str(e) == o["error"], (o["name"], e)
        count += 1
    eve = compress(secret_key(hashlib.sha384(b"connectoid test vector key eve").digest()).public_key())
    for p in v["proofs"]:
        sk = secret_key(bytes.fromhex(p["signer_secret_hex"]))
        public = compress(sk.public_key())
        assert b64e(public) == p["signer_public_b64"]
        new_key = p["new_key_b64"]
        signing_input = (
            label
            + bytes.fromhex(p["challenge_hex"])
            + bytes.fromhex(p["signer_fingerprint_hex"])
            + bytes.fromhex(p["verifier_fingerprint_hex"])
            + (b"\x00" if new_key is None else b"\x01" + parse_public_text(new_key))
        )
        assert signing_input.hex() == p["signing_input_hex"], p["name"]
        signature = sign(sk, signing_input)
        assert signature.hex() == p["signature_hex"], p["name"]
        assert verify(public, signing_input, signature)
        assert not verify(eve, signing_input, signature)
        challenge = json.dumps({"challenge": b64e(bytes.fromhex(p["challenge_hex"]))}, separators=(",", ":"))
        assert challenge == p["challenge_json"]
        proof = {"signature": b64e(signature)}
        if new_key is not None:
            proof["key"] = new_key
        assert json.dumps(proof, separators=(",", ":")) == p["proof_json"], p["name"]
        assert read_auth_message("proof", p["proof_json"]) == (signature, new_key)
        count += 1
    for m in v["invalid_messages"]:
        try:
            read_auth_message(m["message"], m["json"])
            raise AssertionError(m["name"] + " read")
        except ValueError as e:
            assert str(e) == m["error"], (m["name"], e)
        count += 1
    return count


# --- clarified.json: URLs (a restricted WHATWG URL parser), IDNA, lengths ---
#
# Only what the vectors need is re-implemented: http(s) URLs with a host,
# optional port, path and query, and app URLs of other schemes kept as
# text. IDNA is UTS #46 non-transitional through the `idna` package (the
# stdlib `encodings.idna` is IDNA 2003, which maps "ß" to "ss"). Not
# re-derived: the Bidi rule of RFC 5893 and "." / ".." path segments.

DEFAULT_PORTS = {"http": "80", "https": "443"}
C0_AND_SPACE = {chr(i) for i in range(0x21)} | {"\x7f"}
PATH_SET = C0_AND_SPACE | set('"#<>?`{}')
QUERY_SET = C0_AND_SPACE | set("\"#<>'")
FRAGMENT_SET = C0_AND_SPACE | set('"<>`')


def percent_encode(text, encode_set):
    out = []
    for ch in text:
        if ch in encode_set or ord(ch) > 0x7E:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def ipv4_number(part):
    if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
        return int(part[2:] or "0", 16)
    if re.fullmatch(r"0[0-7]+", part):
        return int(part, 8)
    if re.fullmatch(r"[0-9]+", part):
        return int(part)
    return None


def parse_ipv4(host):
    """WHATWG's IPv4 parser: None when the host is not an IPv4 address,
    ValueError when it ends in a number but is not a valid one."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]
    if ipv4_number(parts[-1]) is None:
        return None
    numbers = [ipv4_number(p) for p in parts]
    if len(numbers) > 4 or None in numbers or any(n > 255 for n in numbers[:-1]):
        raise ValueError("bad IPv4")
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError("bad IPv4")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ".".join(str((value >> (8 * k)) & 255) for k in (3, 2, 1, 0))


def domain_to_ascii(domain):
    """UTS #46 ToASCII, non-transitional, CheckHyphens false, no STD3 rules."""
    import unicodedata

    import idna

    mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False)
    labels = []
    for label in mapped.split("."):
        if label.startswith("xn--"):
            decoded = idna.ulabel(label)  # raises on invalid punycode
            if idna.uts46_remap(decoded, std3_rules=False, transitional=False) != decoded:
                raise ValueError("A-label decodes to unmapped text")
            labels.append(label)
        elif label.isascii():
            labels.append(label)
        else:
            if unicodedata.normalize("NFC", label) != label:
                raise ValueError("not NFC")
            for i, ch in enumerate(label):
                if ch in "\u200c\u200d" and not idna.core.valid_contextj(label, i):
                    raise ValueError("joiner out of context")
            labels.append("xn--" + label.encode("punycode").decode())
    return ".".join(labels)


def normalize_url(text, relay=True):
    """The normalized form of an http(s) URL without its fragment, or None
    when it is rejected. With relay=False, other schemes are kept too
    (lower-cased scheme, the rest percent-encoded as an opaque path)."""
    import ipaddress
    import urllib.parse

    if relay and len(text.encode()) > load("links.json")["limits"]["max_relay_url_len"]:
        return None
    if any(ch.isspace() for ch in text) or (relay and "|" in text):
        return None
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", text, re.S)
    if not m:
        return None
    scheme, rest = m.group(1).lower(), m.group(2)
    rest, hash_sign, _ = rest.partition("#")
    if relay and hash_sign:
        return None
    if scheme not in DEFAULT_PORTS:
        if relay:
            return None
        rest, q, query = rest.partition("?")
        return scheme + ":" + percent_encode(rest, PATH_SET - {"?"}) + (q + percent_encode(query, QUERY_SET) if q else "")
    if not rest.startswith("//"):
        return None
    rest = rest[2:]
    rest, q, query = rest.partition("?")
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        return None
    if authority.startswith("["):
        end = authority.find("]")
        host_text, port = authority[: end + 1], authority[end + 1 :]
        try:
            host = "[" + ipaddress.IPv6Address(host_text[1:-1]).compressed + "]"
        except ValueError:
            return None
    else:
        host_text, _, port = authority.partition(":")
        port = ":" + port if ":" in authority else ""
        try:
            raw = urllib.parse.unquote_to_bytes(host_text).decode("utf-8")
            host = domain_to_ascii(raw)
            host = parse_ipv4(host) or host
        except Exception:
            return None
        if not host or re.search(r"[\x00-\x20#%/:<>?@\[\\\]^|]", host):
            return None
    if port:
        if not re.fullmatch(r":[0-9]*", port) or (len(port) > 1 and int(port[1:]) > 65535):
            return None
        if port == ":" or port[1:].lstrip("0") == DEFAULT_PORTS[scheme].lstrip("0"):
            port = ""
        else:
            port = ":" + str(int(port[1:]))
    url = scheme + "://" + host + port + percent_encode(path, PATH_SET)
    if q:
        url += "?" + percent_encode(query, QUERY_SET)
    if relay and len(url.encode()) > load("links.json")["limits"]["max_relay_url_len"]:
        return None
    return url


def query_pieces(url):
    """The `&`-separated pieces of a URL's query (before any fragment)."""
    base, _, query = url.partition("#")[0].partition("?")
    return base, [p for p in query.split("&") if p]


def piece_name(piece):
    import urllib.parse

    return urllib.parse.unquote_plus(piece.split("=", 1)[0])


def link_from_input(mode, text, limits):
    """The value of a shared link (spec §4.6 step 2; a reply value is taken
    as it is); raises ValueError(code). Lengths are bytes of UTF-8."""
    import urllib.parse

    if mode == "link":
        text = text.strip()
        if text.startswith("connectoid="):
            text = text[len("connectoid=") :]
        elif ":" in text:
            if len(text.encode()) > limits["max_link_len"] + limits["max_app_url_overhead"]:
                raise ValueError("too-long")
            for p in query_pieces(text)[1]:
                if piece_name(p) == "connectoid":
                    return urllib.parse.unquote_plus(p.split("=", 1)[1] if "=" in p else "")
            raise ValueError("no-connectoid-parameter")
    if len(text.encode()) > limits["max_link_len"]:
        raise ValueError("too-long")
    return text


def read_relays(part):
    """The normalized relay entries of a link's relays part; raises ValueError(code)."""
    entries = []
    for item in b64d(part).decode().split(" "):
        url, bar, ext = item.partition("|")
        normalized = normalize_url(url)
        if normalized is None:
            raise ValueError("bad-relay")
        if normalized in [e["url"] for e in entries]:
            raise ValueError("duplicate-relay")
        entries.append({"url": normalized, "ext": b64d(ext).decode() if bar else None})
    return entries


def check_clarified():
    try:
        import idna  # noqa: F401
    except ImportError:
        sys.exit("clarified.json needs the Python package idna (python3 -m pip install idna)")
    print(
        "check_clarified: not re-derived here: the Bidi rule (RFC 5893) of IDNA,"
        " '.'/'..' path segments and the WHATWG URL parser beyond http(s) host,"
        " port, path and query (the vectors hold none of these)"
    )
    v = load("clarified.json")
    limits = load("links.json")["limits"]
    count = 0
    for t in v["relay_urls"]:
        assert normalize_url(t["input"]) == t["normalized"], (t["name"], normalize_url(t["input"]))
        count += 1
    for t in v["answers"]:
        assert normalize_url(t["relay_url_input"]) == t["relay_url"], t
        answer = hmac.new(bytes.fromhex(t["secret_hex"]), b"connectoid/v1 answer\x00" + t["relay_url"].encode(), hashlib.sha256).digest()
        assert b64e(answer) == t["answer_b64"], t
        count += 1
    for t in v["app_urls"]:
        without_fragment, hash_sign, fragment = t["app_url"].partition("#")
        app = normalize_url(without_fragment, relay=False)
        base, pieces = query_pieces(app)
        pieces = [p for p in pieces if piece_name(p) != "connectoid"]
        result = base + "?" + "&".join(pieces + ["connectoid=" + t["link"]])
        result += hash_sign + percent_encode(fragment, FRAGMENT_SET)
        assert result == t["result"], (t["name"], result)
        assert link_from_input("link", result, limits) == t["link"], t["name"]
        count += 1
    for t in v["links_valid"]:
        text = link_from_input(t["mode"], t["input"], limits)
        parts = text.split(".")
        link = t["link"]
        assert parts[0] == link["pub"] and parse_public_text(parts[0])
        assert read_relays(parts[1]) == link["relays"], t["name"]
        entries = [r["url"] + ("|" + b64e(r["ext"].encode()) if r["ext"] else "") for r in link["relays"]]
        encoded = t["encoded"].split(".")
        assert b64d(encoded[1]).decode() == " ".join(entries) and encoded[0] == parts[0], t["name"]
        assert encoded[2:] == parts[2:], t["name"]
        count += 1
    for t in v["links_invalid"]:
        try:
            text = link_from_input(t["mode"], t["input"], limits)
            read_relays(text.split(".")[1])
            raise AssertionError(t["name"] + " decoded")
        except ValueError as e:
            assert str(e) == t["code"], (t["name"], e)
        if t["code"] == "too-long":
            assert len(t["input"]) <= limits["max_link_len"] + limits["max_app_url_overhead"], t["name"]
        count += 1
    max_depth = 127
    for t in v["envelopes"]:
        recipient = secret_key(bytes.fromhex(t["recipient_secret_hex"]))
        sealed = bytes.fromhex(t["sealed_hex"])
        resealed = hpke_seal(b64d(t["sealed_to_b64"]), INFO[t["purpose"]], bytes.fromhex(t["padded_hex"]), bytes.fromhex(t["ikm_e_hex"]))
        assert resealed == sealed, t["name"]
        jws = unpad(hpke_open(recipient, INFO["message"], sealed)).decode()
        assert jws == t["jws"], t["name"]
        header, payload, sig = jws.split(".")
        text = b64d(payload).decode()
        parsed = json.loads(text)
        from_key = b64d(parsed["from"].split(".")[0])
        assert verify(from_key, (header + "." + payload).encode(), b64d(sig)), t["name"]
        depth = deepest = 0
        in_string = escaped = False
        for ch in text:
            if in_string:
                escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif ch in "]}":
                depth -= 1
        error = None
        if deepest > max_depth:
            error = "Payload"
        else:
            try:
                to = parse_public_text(parsed["to"]) if isinstance(parsed["to"], str) else None
            except ValueError:
                to = None
            if to is None:
                error = "Payload"
            elif to != compress(recipient.public_key()):
                error = "WrongRecipient"
        assert error == t["error"], (t["name"], error)
        count += 1
    return count


def check_push():
    """push.json: decodes each body's push members (spec/protocol.md 7.3,
    rows 20 to 27; pub and the common members are api.json's) and compares
    with the decoded fields or the error; checks each response's status."""
    import urllib.parse

    v = load("push.json")
    lim = v["limits"]
    count = 0

    def field(body, name):
        value = body.get(name)
        return value

    def fixed(value, name, length):
        if value is None:
            raise Decode("Missing field", name)
        if not isinstance(value, str):
            raise Decode("Bad value")
        try:
            raw = b64d(value)
        except Exception:
            raise Decode("Bad base64")
        if len(raw) != length:
            raise Decode("Bad value")
        return raw

    class Decode(Exception):
        def __init__(self, error, detail=None):
            self.error, self.detail = error, detail

    def decode(body):
        verb = field(body, "push")
        if verb is None:
            raise Decode("Missing field", "push")
        if not isinstance(verb, str) or verb not in ("register", "remove", "list"):
            raise Decode("Bad value")
        out = {"push": verb}
        if verb == "register":
            endpoint = field(body, "endpoint")
            if endpoint is None:
                raise Decode("Missing field", "endpoint")
            if not isinstance(endpoint, str) or len(endpoint.encode()) > lim["max_endpoint_len"]:
                raise Decode("Bad value")
            url = urllib.parse.urlsplit(endpoint)
            if url.scheme not in ("http", "https") or not url.hostname or url.username \
                    or url.password or url.fragment:
                raise Decode("Bad value")
            out["endpoint"] = endpoint
            keys = field(body, "keys")
            out["p256dh_hex"] = out["auth_hex"] = None
            if keys is not None:
                if not isinstance(keys, dict):
                    raise Decode("Bad value")
                p256dh = fixed(keys.get("p256dh"), "keys.p256dh", lim["p256dh_len"])
                if p256dh[0] != 4:
                    raise Decode("Bad value")
                out["p256dh_hex"] = p256dh.hex()
                out["auth_hex"] = fixed(keys.get("auth"), "keys.auth", lim["auth_len"]).hex()
        out["answer_hex"] = fixed(field(body, "answer"), "answer", 32).hex()
        return out

    for t in v["requests"]:
        body = json.loads(t["body"])
        try:
            got = decode(body)
        except Decode as e:
            assert "error" in t, (t["name"], e.error)
            assert e.error == t["error"], (t["name"], e.error)
            if "detail" in t:
                assert e.detail == t["detail"], (t["name"], e.detail)
        else:
            assert "decoded" in t, (t["name"], "decoded but should fail")
            for key, value in got.items():
                assert t["decoded"][key] == value, (t["name"], key)
        count += 1
    for t in v["responses"]:
        parsed = json.loads(t["json"])
        assert parsed["ok"] == (t["status"] == 200), t["name"]
        if "push" in parsed:
            for entry in parsed["push"]:
                assert entry["kind"] in ("unifiedpush", "webpush"), t["name"]
        count += 1
    return count


def main():
    total = 0
    for check in (
        check_keys, check_hpke, check_envelopes, check_udp, check_safety, check_links, check_peer,
        check_clarified, check_wait, check_push,
    ):
        count = check()
        print(f"{check.__name__}: {count} vectors ok")
        total += count
    print(f"all {total} vectors ok")


if __name__ == "__main__":
    sys.exit(main())

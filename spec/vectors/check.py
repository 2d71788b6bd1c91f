#!/usr/bin/env python3
"""An independent check of the Connectoid test vectors, written from spec/protocol.md.

It shares no code with the Rust implementation: HPKE (RFC 9180), ES384, the
link proof, the safety code and the UDP datagrams are re-implemented here with
the Python `cryptography` package (44 or newer, for deterministic ECDSA), so a
vector that passes here and in `cargo test -p connectoid-protocol` is what the
spec says, not only what the library does.

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


def check_links():
    """The base64url and key parts of the valid links (URL normalization is WHATWG's)."""
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
            assert b64d(parts[3]).hex() == link["secret_hex"]
        elif link["ext"]:
            assert len(parts) == 3 and parts[2] == expected_ext
        else:
            assert len(parts) == 2
    return len(v["valid"])


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


def main():
    total = 0
    for check in (
        check_keys, check_hpke, check_envelopes, check_udp, check_safety, check_links, check_peer
    ):
        count = check()
        print(f"{check.__name__}: {count} vectors ok")
        total += count
    print(f"all {total} vectors ok")


if __name__ == "__main__":
    sys.exit(main())

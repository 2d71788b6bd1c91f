//! `spec/vectors/envelopes.json`: its generator and its check.

use connectoid_protocol::envelope::{
    self, ENVELOPE_VERSION, Envelope, EnvelopeError, JWS_HEADER, Kind, LinkProof,
};
use connectoid_protocol::keys::{PublicKey, SecretKey};
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::seal::{self, Purpose};
use connectoid_protocol::{b64, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::hpke::{purpose_name, purpose_named};
use crate::util::{
    VectorRng, arr, get, hx, name, num, run, secret_from, st, vector_ikm, vector_key,
};

pub(crate) const TS: u64 = 1_700_000_000_000;
/// The relay URL that question vectors answer to.
pub(crate) const VECTOR_RELAY_URL: &str = "https://connecto.id/";

pub(crate) fn reply_value(key: &SecretKey, relays: &[(&str, Option<&str>)]) -> Link {
    Link {
        key: key.public_key(),
        relays: relays
            .iter()
            .map(|(url, ext)| RelayEntry {
                url: RelayUrl::parse(url).unwrap(),
                ext: ext.map(str::to_owned),
            })
            .collect(),
        ext: None,
        secret: None,
    }
}

pub(crate) fn envelope_json(e: &Envelope) -> Value {
    json!({
        "kind": e.kind.as_str(),
        "to": e.to.to_string(),
        "from": e.from.encode(),
        "ts": e.ts,
        "proof_b64": e.proof.map(|p| b64::encode(&p.0)),
        "body": e.body,
    })
}

pub(crate) fn envelope_from_json(v: &Value) -> Envelope {
    Envelope {
        kind: serde_json::from_value::<Kind>(get(v, "kind").clone()).unwrap(),
        to: st(v, "to").parse().unwrap(),
        from: Link::decode_reply(st(v, "from")).unwrap(),
        ts: num(v, "ts"),
        proof: get(v, "proof_b64")
            .as_str()
            .map(|p| LinkProof(b64::decode(p).unwrap().try_into().unwrap())),
        body: get(v, "body").clone(),
    }
}

pub(crate) struct ValidEnvelope<'a> {
    label: &'a str,
    sender: SecretKey,
    recipient: SecretKey,
    link_secret: Option<LinkSecret>,
    envelope: Envelope,
}

pub(crate) fn link_secret() -> LinkSecret {
    LinkSecret(
        sha2::Sha256::digest(b"connectoid test vector link secret")[..16]
            .try_into()
            .unwrap(),
    )
}

pub(crate) fn valid_envelope_vector(case: &ValidEnvelope<'_>) -> Value {
    let jws = case.envelope.sign(&case.sender).unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let payload = String::from_utf8(b64::decode(parts[1]).unwrap()).unwrap();
    let ikm = vector_ikm(case.label);
    let mut rng = VectorRng::new(&ikm);
    let sealed = envelope::seal_envelope(&mut rng, &case.sender, &case.envelope).unwrap();
    rng.assert_drained();
    let mut out = json!({
        "name": case.label,
        "sender_secret_hex": hex::encode(case.sender.to_bytes()),
        "recipient_secret_hex": hex::encode(case.recipient.to_bytes()),
        "link_secret_hex": case.link_secret.as_ref().map(|s| hex::encode(s.0)),
        "envelope": envelope_json(&case.envelope),
        "payload_json": payload,
        "signing_input": format!("{}.{}", parts[0], parts[1]),
        "signature_hex": hex::encode(b64::decode(parts[2]).unwrap()),
        "jws": jws,
        "ikm_e_hex": hex::encode(&ikm),
        "padded_len": seal::padded_len(jws.len()).unwrap(),
        "sealed_hex": hex::encode(&sealed),
        "open_at_ms": [
            case.envelope.ts - limits::ENVELOPE_MAX_SKEW_MS,
            case.envelope.ts + 1000,
            case.envelope.ts + limits::ENVELOPE_MAX_AGE_MS,
        ],
    });
    if let (Some(secret), Some(_)) = (&case.link_secret, case.envelope.proof) {
        let mut input = envelope::LINK_PROOF_LABEL.to_vec();
        input.push(0);
        input.extend_from_slice(case.envelope.to.as_bytes());
        input.extend_from_slice(case.envelope.from.key.as_bytes());
        out["proof_input_hex"] = hex::encode(&input).into();
        out["proof_hex"] =
            hex::encode(LinkProof::compute(secret, &case.envelope.to, &case.envelope.from.key).0)
                .into();
    }
    out
}

/// A rejected-envelope vector: `padded` sealed to `sealed_to` with `purpose`,
/// opened by `recipient` at `now_ms` (then `check_proof` if a link secret is given).
pub(crate) struct Rejected<'a> {
    label: &'a str,
    recipient: &'a SecretKey,
    sealed_to: PublicKey,
    purpose: Purpose,
    jws: Option<String>,
    padded: Vec<u8>,
    now_ms: u64,
    link_secret: Option<LinkSecret>,
}

pub(crate) fn rejected_vector(case: Rejected<'_>) -> Value {
    let ikm = vector_ikm(case.label);
    let mut rng = VectorRng::new(&ikm);
    let sealed = seal::seal(&mut rng, &case.sealed_to, case.purpose, &case.padded).unwrap();
    rng.assert_drained();
    let error = open_and_check(
        case.recipient,
        &sealed,
        case.now_ms,
        case.link_secret.as_ref(),
    )
    .expect_err(case.label);
    json!({
        "name": case.label,
        "recipient_secret_hex": hex::encode(case.recipient.to_bytes()),
        "sealed_to_b64": case.sealed_to.to_string(),
        "purpose": purpose_name(case.purpose),
        "jws": case.jws,
        "padded_hex": hex::encode(&case.padded),
        "ikm_e_hex": hex::encode(&ikm),
        "sealed_hex": hex::encode(&sealed),
        "now_ms": case.now_ms,
        "link_secret_hex": case.link_secret.as_ref().map(|s| hex::encode(s.0)),
        "error": error.code(),
    })
}

pub(crate) fn open_and_check(
    recipient: &SecretKey,
    sealed: &[u8],
    now_ms: u64,
    link_secret: Option<&LinkSecret>,
) -> Result<Envelope, EnvelopeError> {
    let envelope = envelope::open_envelope(recipient, sealed, now_ms)?;
    if let Some(secret) = link_secret {
        envelope.check_proof(secret)?;
    }
    Ok(envelope)
}

/// A JWS over arbitrary header and payload text, signed by `signer`.
pub(crate) fn forge(signer: &SecretKey, header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.as_bytes()),
        b64::encode(payload.as_bytes())
    );
    format!("{input}.{}", b64::encode(&signer.sign(input.as_bytes())))
}

pub(crate) fn build_envelopes() -> Value {
    let alice_link = vector_key("alice");
    let bob = vector_key("bob");
    let eve = vector_key("eve");
    let secret = link_secret();
    let bob_reply = reply_value(
        &bob,
        &[
            ("https://relay-a.example/", None),
            ("https://relay-b.example/", Some("key-b")),
        ],
    );
    // Alice answers from the link key itself: the only key Bob knows is hers.
    let alice_reply = reply_value(&alice_link, &[("https://connecto.id/", None)]);
    let hello = Envelope {
        kind: Kind::Hello,
        to: alice_link.public_key(),
        from: bob_reply.clone(),
        ts: TS,
        proof: Some(LinkProof::compute(
            &secret,
            &alice_link.public_key(),
            &bob.public_key(),
        )),
        body: json!({"sdpOffer": {"sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "type": "offer"}}),
    };
    let cases = [
        ValidEnvelope {
            label: "hello with link proof",
            sender: bob.clone(),
            recipient: alice_link.clone(),
            link_secret: Some(secret.clone()),
            envelope: hello.clone(),
        },
        ValidEnvelope {
            label: "answer signed by the link key",
            sender: alice_link.clone(),
            recipient: bob.clone(),
            link_secret: None,
            envelope: Envelope {
                kind: Kind::Answer,
                to: bob.public_key(),
                from: alice_reply.clone(),
                ts: TS + 2_500,
                proof: None,
                body: json!({"sdpAnswer": {"sdp": "v=0\r\n", "type": "answer"}}),
            },
        },
        ValidEnvelope {
            label: "link-used with null body",
            sender: alice_link.clone(),
            recipient: eve.clone(),
            link_secret: None,
            envelope: Envelope {
                kind: Kind::LinkUsed,
                to: eve.public_key(),
                from: reply_value(&alice_link, &[("https://connecto.id/", None)]),
                ts: TS + 60_000,
                proof: None,
                body: Value::Null,
            },
        },
        ValidEnvelope {
            label: "app with non-ASCII text",
            sender: bob.clone(),
            recipient: alice_link.clone(),
            link_secret: None,
            envelope: Envelope {
                kind: Kind::App,
                to: alice_link.public_key(),
                from: bob_reply.clone(),
                ts: TS + 90_000,
                proof: None,
                body: json!(["list", {"item": "Äpfel 🍎", "qty": 3}]),
            },
        },
    ];
    let valid: Vec<Value> = cases.iter().map(valid_envelope_vector).collect();

    let hello_jws = hello.sign(&bob).unwrap();
    let header_b64 = b64::encode(JWS_HEADER.as_bytes());
    let hello_payload =
        String::from_utf8(b64::decode(hello_jws.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let to = alice_link.public_key().to_string();
    let from = bob_reply.encode();
    let payload = |v: &str, kind: &str, to: &str, from: &str, ts: u64| {
        format!(r#"{{"v":{v},"kind":"{kind}","to":"{to}","from":"{from}","ts":{ts},"body":null}}"#)
    };
    let good_payload = payload("1", "offer", &to, &from, TS);
    let rejected_jws = |label, jws: String, now_ms, link_secret: Option<LinkSecret>| Rejected {
        label,
        recipient: &alice_link,
        sealed_to: alice_link.public_key(),
        purpose: Purpose::Message,
        padded: seal::pad(jws.as_bytes()).unwrap(),
        jws: Some(jws),
        now_ms,
        link_secret,
    };
    let tampered = {
        let parts: Vec<&str> = hello_jws.split('.').collect();
        let altered = hello_payload.replace(&format!("\"ts\":{TS}"), &format!("\"ts\":{}", TS + 1));
        format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(altered.as_bytes()),
            parts[2]
        )
    };
    let short_signature = {
        let parts: Vec<&str> = hello_jws.split('.').collect();
        let signature = b64::decode(parts[2]).unwrap();
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            b64::encode(&signature[..95])
        )
    };
    let without_proof = Envelope {
        proof: None,
        ..hello.clone()
    }
    .sign(&bob)
    .unwrap();
    let wrong_proof = Envelope {
        proof: Some(LinkProof::compute(
            &LinkSecret([0; 16]),
            &alice_link.public_key(),
            &bob.public_key(),
        )),
        ..hello.clone()
    }
    .sign(&bob)
    .unwrap();
    let to_eve = Envelope {
        to: eve.public_key(),
        ..hello.clone()
    }
    .sign(&bob)
    .unwrap();
    let from_with_secret = Link {
        secret: Some(secret.clone()),
        ..bob_reply.clone()
    }
    .encode();
    let now = TS + 1000;
    let mut rejected = vec![
        rejected_vector(Rejected {
            label: "sealed to another key",
            recipient: &alice_link,
            sealed_to: eve.public_key(),
            purpose: Purpose::Message,
            jws: Some(hello_jws.clone()),
            padded: seal::pad(hello_jws.as_bytes()).unwrap(),
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(Rejected {
            label: "sealed as a question",
            recipient: &alice_link,
            sealed_to: alice_link.public_key(),
            purpose: Purpose::Question,
            jws: Some(hello_jws.clone()),
            padded: seal::pad(hello_jws.as_bytes()).unwrap(),
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(Rejected {
            label: "no padding marker",
            recipient: &alice_link,
            sealed_to: alice_link.public_key(),
            purpose: Purpose::Message,
            jws: None,
            padded: vec![0; 256],
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(Rejected {
            label: "not UTF-8",
            recipient: &alice_link,
            sealed_to: alice_link.public_key(),
            purpose: Purpose::Message,
            jws: None,
            padded: seal::pad(&[0xff, 0xfe]).unwrap(),
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(rejected_jws(
            "two parts",
            format!("{header_b64}.e30"),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "alg none",
            forge(&bob, r#"{"alg":"none","typ":"connectoid"}"#, &good_payload),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "header with kid",
            forge(
                &bob,
                r#"{"alg":"ES384","typ":"connectoid","kid":"x"}"#,
                &good_payload,
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "header in another order",
            forge(&bob, r#"{"typ":"connectoid","alg":"ES384"}"#, &good_payload),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "payload is an array",
            forge(
                &bob,
                JWS_HEADER,
                &format!(r#"[1,"offer","{to}","{from}",{TS},null,null]"#),
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "payload without to",
            forge(
                &bob,
                JWS_HEADER,
                &format!(r#"{{"v":1,"kind":"offer","from":"{from}","ts":{TS}}}"#),
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "version 2",
            forge(&bob, JWS_HEADER, &payload("2", "offer", &to, &from, TS)),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "unknown kind",
            forge(&bob, JWS_HEADER, &payload("1", "greeting", &to, &from, TS)),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "from carries a link secret",
            forge(
                &bob,
                JWS_HEADER,
                &payload("1", "offer", &to, &from_with_secret, TS),
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "signed by another key",
            forge(&eve, JWS_HEADER, &good_payload),
            now,
            None,
        )),
        rejected_vector(rejected_jws("altered payload", tampered, now, None)),
        rejected_vector(rejected_jws(
            "95-byte signature",
            short_signature,
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "addressed to another mailbox",
            to_eve,
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "expired",
            hello_jws.clone(),
            TS + limits::ENVELOPE_MAX_AGE_MS + 1,
            None,
        )),
        rejected_vector(rejected_jws(
            "from the future",
            hello_jws.clone(),
            TS - limits::ENVELOPE_MAX_SKEW_MS - 1,
            None,
        )),
        rejected_vector(rejected_jws(
            "hello without proof",
            without_proof,
            now,
            Some(secret.clone()),
        )),
        rejected_vector(rejected_jws(
            "hello with a wrong proof",
            wrong_proof,
            now,
            Some(secret.clone()),
        )),
    ];
    // Hand-made sealed values that no seal produces.
    rejected.push(json!({
        "name": "shorter than enc and tag",
        "recipient_secret_hex": hex::encode(alice_link.to_bytes()),
        "sealed_hex": hex::encode([0u8; seal::SEAL_OVERHEAD - 1]),
        "now_ms": now,
        "error": "Open::TooShort",
    }));
    let mut bad_enc = vec![0u8; seal::SEAL_OVERHEAD + seal::MIN_PADDED_LEN];
    bad_enc[0] = 0x04;
    rejected.push(json!({
        "name": "enc not on the curve",
        "recipient_secret_hex": hex::encode(alice_link.to_bytes()),
        "sealed_hex": hex::encode(&bad_enc),
        "now_ms": now,
        "error": "Open::BadEncappedKey",
    }));
    json!({
        "description": "Envelopes: JWS compact (ES384) inside HPKE. valid: the envelope fields, the exact payload JSON, signing input, signature, JWS, link proof, and the sealed bytes for ikm_e; each opens at every open_at_ms. rejected: sealed = HPKE seal (purpose info) of padded_hex to sealed_to_b64 with ikm_e (when given); opening with the recipient key at now_ms, then checking the link proof when link_secret_hex is given, fails with error.",
        "header": JWS_HEADER,
        "version": ENVELOPE_VERSION,
        "max_age_ms": limits::ENVELOPE_MAX_AGE_MS,
        "max_skew_ms": limits::ENVELOPE_MAX_SKEW_MS,
        "valid": valid,
        "rejected": rejected,
    })
}

pub(crate) fn check_envelopes(v: &Value) {
    assert_eq!(st(v, "header"), JWS_HEADER);
    assert_eq!(num(v, "version"), ENVELOPE_VERSION);
    assert_eq!(num(v, "max_age_ms"), limits::ENVELOPE_MAX_AGE_MS);
    assert_eq!(num(v, "max_skew_ms"), limits::ENVELOPE_MAX_SKEW_MS);
    for vector in arr(v, "valid") {
        let label = name(vector);
        let sender = secret_from(vector, "sender_secret_hex");
        let recipient = secret_from(vector, "recipient_secret_hex");
        let envelope = envelope_from_json(get(vector, "envelope"));
        assert_eq!(
            envelope_json(&envelope),
            *get(vector, "envelope"),
            "{label}"
        );
        let jws = envelope.sign(&sender).unwrap();
        assert_eq!(jws, st(vector, "jws"), "{label}");
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(b64::decode(parts[0]).unwrap(), JWS_HEADER.as_bytes());
        assert_eq!(
            b64::decode(parts[1]).unwrap(),
            st(vector, "payload_json").as_bytes()
        );
        assert_eq!(
            format!("{}.{}", parts[0], parts[1]),
            st(vector, "signing_input")
        );
        let signature = hx(vector, "signature_hex");
        assert_eq!(b64::decode(parts[2]).unwrap(), signature);
        assert!(
            envelope
                .from
                .key
                .verify(st(vector, "signing_input").as_bytes(), &signature)
        );
        if let Some(secret_hex) = get(vector, "link_secret_hex").as_str() {
            let secret = LinkSecret(hex::decode(secret_hex).unwrap().try_into().unwrap());
            let proof = LinkProof::compute(&secret, &envelope.to, &envelope.from.key);
            assert_eq!(proof.0.to_vec(), hx(vector, "proof_hex"));
            assert_eq!(Some(proof), envelope.proof);
            let input = hx(vector, "proof_input_hex");
            let mut expected = envelope::LINK_PROOF_LABEL.to_vec();
            expected.push(0);
            expected.extend_from_slice(envelope.to.as_bytes());
            expected.extend_from_slice(envelope.from.key.as_bytes());
            assert_eq!(input, expected);
            envelope.check_proof(&secret).unwrap();
        }
        let ikm = hx(vector, "ikm_e_hex");
        let mut rng = VectorRng::new(&ikm);
        let sealed = envelope::seal_envelope(&mut rng, &sender, &envelope).unwrap();
        rng.assert_drained();
        assert_eq!(sealed, hx(vector, "sealed_hex"), "{label}");
        assert_eq!(
            sealed.len(),
            seal::SEAL_OVERHEAD + num(vector, "padded_len") as usize
        );
        for now in arr(vector, "open_at_ms") {
            let opened = envelope::open_envelope(&recipient, &sealed, now.as_u64().unwrap())
                .unwrap_or_else(|e| panic!("{label} at {now}: {e}"));
            assert_eq!(opened, envelope);
        }
    }
    let mut errors = std::collections::BTreeSet::new();
    for vector in arr(v, "rejected") {
        let label = name(vector);
        let recipient = secret_from(vector, "recipient_secret_hex");
        let sealed = hx(vector, "sealed_hex");
        if vector.get("ikm_e_hex").is_some() {
            let padded = hx(vector, "padded_hex");
            if let Some(jws) = get(vector, "jws").as_str() {
                assert_eq!(seal::pad(jws.as_bytes()).unwrap(), padded);
            }
            let sealed_to: PublicKey = st(vector, "sealed_to_b64").parse().unwrap();
            let mut rng = VectorRng::new(&hx(vector, "ikm_e_hex"));
            let purpose = purpose_named(st(vector, "purpose"));
            assert_eq!(
                seal::seal(&mut rng, &sealed_to, purpose, &padded).unwrap(),
                sealed
            );
            rng.assert_drained();
        }
        let secret = vector
            .get("link_secret_hex")
            .and_then(Value::as_str)
            .map(|s| LinkSecret(hex::decode(s).unwrap().try_into().unwrap()));
        let error = open_and_check(&recipient, &sealed, num(vector, "now_ms"), secret.as_ref())
            .expect_err(label);
        assert_eq!(error.code(), st(vector, "error"), "{label}: {error}");
        errors.insert(error.code());
    }
    for expected in [
        "Open::TooShort",
        "Open::BadEncappedKey",
        "Open::Decrypt",
        "Open::Padding",
        "Jws",
        "Header",
        "Payload",
        "Version",
        "UnknownKind",
        "From",
        "BadSignature",
        "WrongRecipient",
        "Expired",
        "FromFuture",
        "MissingProof",
        "BadProof",
    ] {
        assert!(
            errors.contains(expected),
            "no rejected vector for {expected}"
        );
    }
}

#[test]
fn envelopes() {
    run("envelopes.json", build_envelopes, check_envelopes);
}

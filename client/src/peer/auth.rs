//! The first messages on a peer link: length framing, the challenge-response
//! with the peers' Connectoid mailbox keys, and the one-time key rotation.
//!
//! Each side sends `{"challenge": C}` (32 random bytes), then
//! `{"signature": S, "key": K?}` where S is its current mailbox key's
//! ES384 signature over [`signing_input`] with the other side's challenge,
//! and K is its new mailbox public key when it rotates. A side verifies S
//! with the peer's pinned key from the profile, and only then has the core
//! apply the rotation (one profile read-modify-write). This module does not
//! choose or open connections.

use connectoid_protocol::keys::{PUBLIC_KEY_LEN, SIGNATURE_LEN};
use connectoid_protocol::{PublicKey, SecretKey, b64};
use rand_core::Rng as _;
use serde::{Deserialize, Serialize};

use super::{Fingerprint, MAX_MESSAGE_LEN, PeerError};
use crate::client::Client;
use crate::rng::system_rng;

/// The label that starts every signing input.
pub(crate) const AUTH_LABEL: &[u8] = b"connectoid/v1 peer link";
/// Length of a challenge in bytes.
pub(crate) const CHALLENGE_LEN: usize = 32;

/// What is signed: `AUTH_LABEL || challenge || signer fingerprint ||
/// verifier fingerprint || 0x00` without a new key, or
/// `... || 0x01 || new public key (49 bytes, SEC1 compressed)` with one.
pub(crate) fn signing_input(
    challenge: &[u8; CHALLENGE_LEN],
    signer: &Fingerprint,
    verifier: &Fingerprint,
    new_key: Option<&PublicKey>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_LABEL.len() + 32 * 3 + 1 + PUBLIC_KEY_LEN);
    out.extend_from_slice(AUTH_LABEL);
    out.extend_from_slice(challenge);
    out.extend_from_slice(&signer.0);
    out.extend_from_slice(&verifier.0);
    match new_key {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            out.extend_from_slice(key.as_bytes());
        }
    }
    out
}

#[derive(Serialize, Deserialize)]
struct Challenge {
    challenge: String,
}

#[derive(Serialize, Deserialize)]
struct Proof {
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// Writes one frame: a 4-byte big-endian length, then the bytes.
pub(crate) async fn write_frame(
    send: &mut quinn::SendStream,
    message: &[u8],
) -> Result<(), PeerError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(PeerError::Link(format!(
            "message of {} bytes is over the limit",
            message.len()
        )));
    }
    let len = u32::try_from(message.len()).map_err(|e| PeerError::Link(e.to_string()))?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| PeerError::Link(e.to_string()))?;
    send.write_all(message)
        .await
        .map_err(|e| PeerError::Link(e.to_string()))
}

/// Reads one frame; `None` at a clean end of the stream.
pub(crate) async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, PeerError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(PeerError::Link(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(PeerError::Link(format!(
            "frame of {len} bytes is over the limit"
        )));
    }
    let mut message = vec![0u8; len];
    recv.read_exact(&mut message)
        .await
        .map_err(|e| PeerError::Link(e.to_string()))?;
    Ok(Some(message))
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> Result<T, PeerError> {
    let frame = read_frame(recv)
        .await?
        .ok_or_else(|| PeerError::Link("the peer closed during authentication".to_owned()))?;
    serde_json::from_slice(&frame).map_err(|e| PeerError::Link(e.to_string()))
}

async fn write_json<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
) -> Result<(), PeerError> {
    let bytes = serde_json::to_vec(value).map_err(|e| PeerError::Link(e.to_string()))?;
    write_frame(send, &bytes).await
}

/// Runs the challenge-response and stores the rotation. Returns whether our
/// key was rotated.
pub(crate) async fn authenticate(
    client: &Client,
    nickname: &str,
    ours: Fingerprint,
    theirs: Fingerprint,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<bool, PeerError> {
    let auth_error = |reason: String| PeerError::Auth {
        nickname: nickname.to_owned(),
        reason,
    };
    let (our_key, their_key, rotated) = client
        .view(|book, _| book.link_keys(nickname))
        .await?
        .map_err(PeerError::Client)?;
    let mut challenge = [0u8; CHALLENGE_LEN];
    system_rng().fill_bytes(&mut challenge);
    write_json(
        send,
        &Challenge {
            challenge: b64::encode(&challenge),
        },
    )
    .await?;
    let their_challenge: Challenge = read_json(recv).await?;
    let their_challenge: [u8; CHALLENGE_LEN] = b64::decode(&their_challenge.challenge)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| auth_error("malformed challenge".to_owned()))?;
    let new_key = (!rotated).then(|| SecretKey::generate(&mut system_rng()));
    let new_public = new_key.as_ref().map(SecretKey::public_key);
    let signature = our_key.sign(&signing_input(
        &their_challenge,
        &ours,
        &theirs,
        new_public.as_ref(),
    ));
    write_json(
        send,
        &Proof {
            signature: b64::encode(&signature),
            key: new_public.map(|k| k.to_string()),
        },
    )
    .await?;
    let proof: Proof = read_json(recv).await?;
    let their_new = match &proof.key {
        None => None,
        Some(text) => Some(
            text.parse::<PublicKey>()
                .map_err(|e| auth_error(format!("new key: {e}")))?,
        ),
    };
    let signature = b64::decode(&proof.signature)
        .ok()
        .filter(|s| s.len() == SIGNATURE_LEN)
        .ok_or_else(|| auth_error("malformed signature".to_owned()))?;
    if !their_key.verify(
        &signing_input(&challenge, &theirs, &ours, their_new.as_ref()),
        &signature,
    ) {
        return Err(auth_error(
            "the signature does not verify with the pinned key".to_owned(),
        ));
    }
    let old = our_key.public_key();
    let committed = client
        .update::<_, PeerError>(|book, _| {
            Ok(book.commit_rotation(nickname, &old, new_key, their_new))
        })
        .await?;
    if !committed {
        return Err(PeerError::Link(
            "the peer changed during the link".to_owned(),
        ));
    }
    tracing::info!(nickname, "rotated peer keys over the direct link");
    Ok(!rotated)
}

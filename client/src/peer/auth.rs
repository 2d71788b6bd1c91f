//! The first messages on a peer link: length framing on a QUIC stream, the
//! challenge-response with the peers' Connectoid mailbox keys, and the
//! one-time key rotation.
//!
//! The bytes (frames, `{"challenge": C}`, `{"signature": S, "key": K?}` and
//! the signing input) are the protocol crate's `peer` module; this module
//! moves them over the stream, draws the challenge and the new key, checks
//! the peer's proof with its pinned key from the profile, and only then
//! has the core apply the rotation (one profile read-modify-write). It does
//! not choose or open connections.

use connectoid_protocol::SecretKey;
use connectoid_protocol::peer::{
    self, CHALLENGE_LEN, ChallengeMessage, Fingerprint, FrameError, ProofMessage,
};
use rand_core::Rng as _;

use super::PeerError;
use crate::client::Client;
use crate::rng::system_rng;

fn frame_error(error: FrameError) -> PeerError {
    PeerError::Link(error.to_string())
}

/// Writes one frame ([`peer::frame_header`], then the bytes).
pub(crate) async fn write_frame(
    send: &mut quinn::SendStream,
    message: &[u8],
) -> Result<(), PeerError> {
    let header = peer::frame_header(message.len()).map_err(frame_error)?;
    send.write_all(&header)
        .await
        .map_err(|e| PeerError::Link(e.to_string()))?;
    send.write_all(message)
        .await
        .map_err(|e| PeerError::Link(e.to_string()))
}

/// Reads one frame; `None` at a clean end of the stream.
pub(crate) async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, PeerError> {
    let mut header = [0u8; peer::FRAME_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(PeerError::Link(e.to_string())),
    }
    let len = peer::decode_frame_header(header).map_err(frame_error)?;
    let mut message = vec![0u8; len];
    recv.read_exact(&mut message)
        .await
        .map_err(|e| PeerError::Link(e.to_string()))?;
    Ok(Some(message))
}

async fn read_message(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, PeerError> {
    read_frame(recv)
        .await?
        .ok_or_else(|| PeerError::Link("the peer closed during authentication".to_owned()))
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
    write_frame(send, ChallengeMessage { challenge }.to_json().as_bytes()).await?;
    let their_challenge = ChallengeMessage::from_json(&read_message(recv).await?)
        .map_err(|e| auth_error(e.to_string()))?;
    let new_key = (!rotated).then(|| SecretKey::generate(&mut system_rng()));
    let new_public = new_key.as_ref().map(SecretKey::public_key);
    let proof = ProofMessage::sign(
        &our_key,
        &their_challenge.challenge,
        &ours,
        &theirs,
        new_public,
    );
    write_frame(send, proof.to_json().as_bytes()).await?;
    let proof = ProofMessage::from_json(&read_message(recv).await?)
        .map_err(|e| auth_error(e.to_string()))?;
    if !proof.verify(&their_key, &challenge, &theirs, &ours) {
        return Err(auth_error(
            "the signature does not verify with the pinned key".to_owned(),
        ));
    }
    let old = our_key.public_key();
    let their_new = proof.key;
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

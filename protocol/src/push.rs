//! The `push` request: a mailbox's owner registers, removes or lists the
//! endpoint the relay notifies when a message arrives (`spec/protocol.md`
//! §7.11).
//!
//! Two kinds of endpoint: UnifiedPush (the relay POSTs an empty body to the
//! URL) and Web Push (RFC 8030 delivery of an RFC 8291 `aes128gcm` payload
//! encrypted to the subscription's P-256 key `p256dh` with its `auth`
//! secret). The request's `keys` member has the shape of a browser's
//! `PushSubscription.toJSON().keys`, so a web app passes it on unchanged.
//!
//! This module only decodes and encodes the members. Whether the relay sends
//! pushes at all, and to which hosts (https only, no private addresses), is
//! the relay's decision, not the protocol crate's: it does no I/O.

use serde_json::value::RawValue;

use crate::api::{ApiError, ErrorCode, missing, present, string};
use crate::b64;

/// Longest `endpoint` in bytes.
pub const MAX_ENDPOINT_LEN: usize = 1024;
/// Length of a Web Push subscription's `p256dh` key: an uncompressed P-256
/// point (`0x04 || x || y`).
pub const P256DH_LEN: usize = 65;
/// Length of a Web Push subscription's `auth` secret (RFC 8291 §3.2).
pub const AUTH_LEN: usize = 16;

/// What a `push` request asks for (its `push` member).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushRequest {
    /// `"register"`: notify this endpoint from now on, replacing the
    /// mailbox's registration if it has one.
    Register(PushSubscription),
    /// `"remove"`: forget the mailbox's registration (idempotent).
    Remove,
    /// `"list"`: answer with the mailbox's registration, if any.
    List,
}

impl PushRequest {
    /// The wire name of the verb: `register`, `remove` or `list`.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Register(_) => "register",
            Self::Remove => "remove",
            Self::List => "list",
        }
    }
}

/// An endpoint to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    /// The absolute `http` or `https` URL the relay POSTs to, at most
    /// [`MAX_ENDPOINT_LEN`] bytes.
    pub endpoint: String,
    /// The Web Push keys; `None` for a UnifiedPush endpoint.
    pub web_push: Option<WebPushKeys>,
}

impl PushSubscription {
    /// The kind as the wire names it: `webpush` or `unifiedpush`.
    pub fn kind(&self) -> PushKind {
        if self.web_push.is_some() {
            PushKind::WebPush
        } else {
            PushKind::UnifiedPush
        }
    }
}

/// A Web Push subscription's keys (RFC 8291).
#[derive(Clone, PartialEq, Eq)]
pub struct WebPushKeys {
    /// The user agent's P-256 public key, uncompressed.
    pub p256dh: [u8; P256DH_LEN],
    /// The authentication secret. Never logged.
    pub auth: [u8; AUTH_LEN],
}

impl std::fmt::Debug for WebPushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebPushKeys(..)")
    }
}

/// The kind of a registered endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PushKind {
    /// A plain POST with an empty body.
    #[serde(rename = "unifiedpush")]
    UnifiedPush,
    /// RFC 8030 with an RFC 8291 encrypted body and RFC 8292 VAPID.
    #[serde(rename = "webpush")]
    WebPush,
}

/// One registration in the answer to a `list` (the keys are not repeated).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushListing {
    /// `unifiedpush` or `webpush`.
    pub kind: PushKind,
    /// The registered endpoint.
    pub endpoint: String,
}

/// Whether `endpoint` is a URL the protocol accepts: absolute, `http` or
/// `https`, with a host, no user name or password, no fragment, at most
/// [`MAX_ENDPOINT_LEN`] bytes. The detail of a refusal.
pub fn check_endpoint(endpoint: &str) -> Result<url::Url, String> {
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(format!(
            "endpoint: {} bytes, the maximum is {MAX_ENDPOINT_LEN}",
            endpoint.len()
        ));
    }
    let url = url::Url::parse(endpoint).map_err(|e| format!("endpoint: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("endpoint: expected an http or https URL".into());
    }
    if url.host().is_none() {
        return Err("endpoint: no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint: user names and passwords are not allowed".into());
    }
    if url.fragment().is_some() {
        return Err("endpoint: fragments are not allowed".into());
    }
    Ok(url)
}

#[derive(serde::Deserialize)]
struct RawKeys<'a> {
    #[serde(borrow)]
    p256dh: Option<&'a RawValue>,
    #[serde(borrow)]
    auth: Option<&'a RawValue>,
}

fn fixed<const N: usize>(field: &str, raw: Option<&RawValue>) -> Result<[u8; N], ApiError> {
    let value = present(field, raw)?.ok_or_else(|| missing(field))?;
    let bytes = b64::decode(string(field, &value)?)
        .map_err(|e| ApiError::new(ErrorCode::BadBase64, format!("{field}: {e}")))?;
    bytes.as_slice().try_into().map_err(|_| {
        ApiError::new(
            ErrorCode::BadValue,
            format!("{field}: expected {N} bytes, got {}", bytes.len()),
        )
    })
}

fn keys(raw: Option<&RawValue>) -> Result<Option<WebPushKeys>, ApiError> {
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        return Ok(None);
    };
    let keys: RawKeys = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::new(
            ErrorCode::BadValue,
            "keys: expected an object with p256dh and auth",
        )
    })?;
    let p256dh: [u8; P256DH_LEN] = fixed("keys.p256dh", keys.p256dh)?;
    if p256dh[0] != 4 {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            "keys.p256dh: expected an uncompressed point (first byte 4)",
        ));
    }
    let auth = fixed("keys.auth", keys.auth)?;
    Ok(Some(WebPushKeys { p256dh, auth }))
}

/// Decodes the members of a `push` request other than `answer`
/// (`spec/protocol.md` §7.3, rows 20 to 26).
pub(crate) fn push_request(
    push: Option<&RawValue>,
    endpoint: Option<&RawValue>,
    raw_keys: Option<&RawValue>,
) -> Result<PushRequest, ApiError> {
    let verb = present("push", push)?.ok_or_else(|| missing("push"))?;
    match string("push", &verb)? {
        "register" => {
            let endpoint = present("endpoint", endpoint)?.ok_or_else(|| missing("endpoint"))?;
            let endpoint = string("endpoint", &endpoint)?;
            check_endpoint(endpoint)
                .map_err(|detail| ApiError::new(ErrorCode::BadValue, detail))?;
            Ok(PushRequest::Register(PushSubscription {
                endpoint: endpoint.to_owned(),
                web_push: keys(raw_keys)?,
            }))
        }
        "remove" => Ok(PushRequest::Remove),
        "list" => Ok(PushRequest::List),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(ApiError::new(
                ErrorCode::BadValue,
                format!("push: {shown:?}; expected register, remove or list"),
            ))
        }
    }
}

//! The relay's HTTP API: `POST /` with a JSON body, as in the seed.
//!
//! Requests carry `pub` (the mailbox key), `ext` (app data such as an API
//! key), `action` and the action's fields: `data` for `send`; `at` for
//! `check` (and `wait`, `also` for a held check of several mailboxes);
//! `answer`, `at` and `limit` for `receive`; `answer` for `delete`.
//! [`Request::from_json`] turns a body into a typed [`Request`] or an
//! [`ApiError`] whose [`ErrorCode`] is one of the fixed error strings.
//!
//! Responses are `{"ok": true, ...}` or `{"ok": false, "error": "...",
//! "detail": "..."}`. [`Response::to_json`] writes them for a relay and
//! [`Response::from_json`] reads them for a client. This module has no
//! notion of storage, time or rate limits; the relay decides those.

use serde_json::value::RawValue;
use std::fmt;

use crate::at::At;
use crate::b64;
use crate::keys::{KeyError, PublicKey, UnvalidatedKey};
use crate::limits;
use crate::push::push_request;
pub use crate::push::{PushListing, PushRequest};
use crate::seal::{QUESTION_SECRET_LEN, SEAL_OVERHEAD};

/// Every error a relay answers with. The string of each is fixed; the first
/// two are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `"Too often"` (429): a rate limit was reached; retry later.
    TooOften,
    /// `"Too big"` (413): the message or request body is over the relay's limit.
    TooBig,
    /// `"Forbidden"` (403): the relay requires an API key in `ext` and none (or
    /// a wrong one) was given.
    Forbidden,
    /// `"Malformed JSON"` (400): the body is not a JSON object.
    MalformedJson,
    /// `"Missing field"` (400): a required field is absent; `detail` names it.
    MissingField,
    /// `"Unknown action"` (400): `action` is not `send`, `check`, `receive`, `delete` or `push`.
    UnknownAction,
    /// `"Bad public key"` (400): `pub` is not a compressed P-384 point in base64url.
    BadPublicKey,
    /// `"Bad base64"` (400): `data` or `answer` is not canonical base64url.
    BadBase64,
    /// `"Bad value"` (400): a field has the wrong type or is out of range; `detail` says which.
    BadValue,
    /// `"No question"` (403): there is no live question for this mailbox (it
    /// expired, or `check` found nothing); `check` again.
    NoQuestion,
    /// `"Wrong answer"` (403): the answer does not match the mailbox's question.
    WrongAnswer,
    /// `"Answer required"` (403): `delete` of a mailbox that holds messages needs an answer.
    AnswerRequired,
    /// `"Mailbox full"` (429): the mailbox holds the maximum number of pending messages.
    MailboxFull,
    /// `"Relay full"` (503): the relay's total storage limit is reached.
    RelayFull,
    /// `"Unavailable"` (503): the relay's storage is unreachable; retry later.
    Unavailable,
    /// `"Internal error"` (500): a bug or fault in the relay; details are only in its log.
    Internal,
    /// `"Not found"` (404): no such HTTP path.
    NotFound,
    /// `"Method not allowed"` (405): the path exists but not for this method.
    MethodNotAllowed,
    /// `"Push disabled"` (501): a `push` request to a relay that sends no
    /// pushes (its information document has no `push` member).
    PushDisabled,
    /// `"Endpoint refused"` (403): the relay will not send pushes to this
    /// endpoint (not `https`, or its host is or resolves to a loopback,
    /// private or link-local address); `detail` says which.
    EndpointRefused,
}

impl ErrorCode {
    /// The codes of the base API (`spec/vectors/api.json`); the push codes
    /// are in [`ErrorCode::PUSH`].
    pub const ALL: [Self; 18] = [
        Self::TooOften,
        Self::TooBig,
        Self::Forbidden,
        Self::MalformedJson,
        Self::MissingField,
        Self::UnknownAction,
        Self::BadPublicKey,
        Self::BadBase64,
        Self::BadValue,
        Self::NoQuestion,
        Self::WrongAnswer,
        Self::AnswerRequired,
        Self::MailboxFull,
        Self::RelayFull,
        Self::Unavailable,
        Self::Internal,
        Self::NotFound,
        Self::MethodNotAllowed,
    ];

    /// The codes only `push` requests get (`spec/vectors/push.json`).
    pub const PUSH: [Self; 2] = [Self::PushDisabled, Self::EndpointRefused];

    /// The `error` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooOften => "Too often",
            Self::TooBig => "Too big",
            Self::Forbidden => "Forbidden",
            Self::MalformedJson => "Malformed JSON",
            Self::MissingField => "Missing field",
            Self::UnknownAction => "Unknown action",
            Self::BadPublicKey => "Bad public key",
            Self::BadBase64 => "Bad base64",
            Self::BadValue => "Bad value",
            Self::NoQuestion => "No question",
            Self::WrongAnswer => "Wrong answer",
            Self::AnswerRequired => "Answer required",
            Self::MailboxFull => "Mailbox full",
            Self::RelayFull => "Relay full",
            Self::Unavailable => "Unavailable",
            Self::Internal => "Internal error",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PushDisabled => "Push disabled",
            Self::EndpointRefused => "Endpoint refused",
        }
    }

    /// The HTTP status code that goes with the error.
    pub fn http_status(self) -> u16 {
        match self {
            Self::TooOften | Self::MailboxFull => 429,
            Self::TooBig => 413,
            Self::Forbidden
            | Self::NoQuestion
            | Self::WrongAnswer
            | Self::AnswerRequired
            | Self::EndpointRefused => 403,
            Self::MalformedJson
            | Self::MissingField
            | Self::UnknownAction
            | Self::BadPublicKey
            | Self::BadBase64
            | Self::BadValue => 400,
            Self::RelayFull | Self::Unavailable => 503,
            Self::Internal => 500,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PushDisabled => 501,
        }
    }

    /// The code with this `error` string.
    pub fn from_str_exact(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::PUSH)
            .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a fixed code and an optional human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct ApiError {
    /// The fixed error string.
    pub code: ErrorCode,
    /// What exactly is wrong (field names, limits); never private data.
    pub detail: Option<String>,
}

impl ApiError {
    /// An error with a detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self { code, detail: None }
    }
}

/// The action of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Store a message in a mailbox.
    Send,
    /// Ask whether a mailbox has messages after `at`.
    Check,
    /// Fetch messages after `at`, proving ownership with an answer.
    Receive,
    /// Delete a mailbox and its messages (unshare).
    Delete,
    /// Register, remove or list the mailbox's push endpoint, proving
    /// ownership with an answer.
    Push,
}

impl Action {
    /// All actions.
    pub const ALL: [Self; 5] = [
        Self::Send,
        Self::Check,
        Self::Receive,
        Self::Delete,
        Self::Push,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Check => "check",
            Self::Receive => "receive",
            Self::Delete => "delete",
            Self::Push => "push",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a relay question: 32 bytes derived from the secret the
/// question sealed and the relay's URL ([`Answer::for_relay`]).
///
/// It compares only in constant time (`==` and [`subtle::ConstantTimeEq`]).
#[derive(Clone, Copy)]
pub struct Answer(pub [u8; QUESTION_SECRET_LEN]);

impl subtle::ConstantTimeEq for Answer {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

/// Equality in constant time ([`subtle::ConstantTimeEq`]): a secret-bearing
/// value is never compared byte by byte with an early exit.
impl PartialEq for Answer {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self, other).into()
    }
}

impl Eq for Answer {}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Answer(..)")
    }
}

impl Answer {
    /// The label that starts an answer's HMAC input.
    pub const LABEL: &'static [u8] = b"connectoid/v1 answer";

    /// The answer a client sends to the relay at `relay` for a question that
    /// opened to `secret` ([`crate::seal::open_question`]):
    /// `HMAC-SHA-256(key = secret, LABEL || 0x00 || relay URL)`, with the
    /// relay's normalized URL as UTF-8.
    ///
    /// Binding the answer to the relay it is sent to means a malicious relay
    /// that passes another relay's question to a client learns an answer that
    /// only works at itself, not at the relay that asked.
    pub fn for_relay(secret: &[u8; QUESTION_SECRET_LEN], relay: &crate::link::RelayUrl) -> Self {
        use hmac::{KeyInit as _, Mac as _};
        // Invariant: HMAC takes keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(Self::LABEL);
        mac.update(&[0]);
        mac.update(relay.as_str().as_bytes());
        Self(mac.finalize().into_bytes().into())
    }
}

/// A request's action with its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `send`: store the sealed message `data`.
    Send {
        /// The sealed message (decoded from base64url).
        data: Vec<u8>,
    },
    /// `check`: is there a message after `at`?
    Check {
        /// The cursor; 0 when absent.
        at: At,
    },
    /// `receive`: up to `limit` messages after `at`.
    Receive {
        /// The answer to the mailbox's question.
        answer: Answer,
        /// The cursor; 0 when absent.
        at: At,
        /// How many messages at most; 1 when absent, 1 to [`limits::MAX_RECEIVE_LIMIT`].
        limit: u32,
    },
    /// `delete`: remove the mailbox.
    Delete {
        /// Required when the mailbox holds messages.
        answer: Option<Answer>,
    },
    /// A held check: `check` with `wait` or `also`. Asks about the request's
    /// mailbox (after `at`) and the mailboxes of `also` together; the relay
    /// answers at once when any has a message, otherwise holds the request
    /// until one gets a message or `wait` seconds (at most its advertised
    /// maximum) are over. With `wait` 0 it answers at once: a check of
    /// several mailboxes over HTTP. Answered with [`Response::FoundMany`]
    /// or [`Response::NotFound`].
    HeldCheck {
        /// The cursor of the request's own mailbox (`pub`); 0 when absent.
        at: At,
        /// The other mailboxes, at most
        /// [`limits::MAX_MAILBOXES_PER_HELD_CHECK`]` - 1`, none named twice.
        also: Vec<MailboxCursor>,
        /// How long to hold the request, in seconds; 0 when absent.
        wait_seconds: u64,
    },
    /// `push`: register, remove or list the mailbox's push endpoint.
    Push {
        /// The answer to the mailbox's question (required, as for `receive`).
        answer: Answer,
        /// What to do.
        request: PushRequest,
    },
}

/// One more mailbox of a held check (`also`), with its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxCursor {
    /// The mailbox (`pub`).
    pub key: PublicKey,
    /// Only messages after this count (`at`); 0 when absent.
    pub at: At,
}

/// A mailbox of a held check that has a message, and its question, as a
/// plain `check` would answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundQuestion {
    /// The mailbox (`pub`).
    pub key: PublicKey,
    /// The mailbox's sealed question.
    pub question: Vec<u8>,
}

impl Operation {
    /// The operation's action.
    pub fn action(&self) -> Action {
        match self {
            Self::Send { .. } => Action::Send,
            Self::Check { .. } | Self::HeldCheck { .. } => Action::Check,
            Self::Receive { .. } => Action::Receive,
            Self::Delete { .. } => Action::Delete,
            Self::Push { .. } => Action::Push,
        }
    }
}

/// A decoded request. `K` is how its key is held: a validated
/// [`PublicKey`] (the default, [`Request::from_json`]), or the
/// [`UnvalidatedKey`] a relay decodes ([`Request::from_json_unvalidated`])
/// and validates only when it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<K = PublicKey> {
    /// The mailbox (`pub`).
    pub key: K,
    /// App data for the relay, such as an API key (`ext`).
    pub ext: Option<String>,
    /// The action and its fields.
    pub op: Operation,
}

// Members are kept as raw JSON text and decoded one by one, so a number no
// member can hold (`1e400`, `18446744073709551616`, 20,000 digits) is "Bad
// value" naming its member, whatever its form, not a parse failure of the body.
#[derive(serde::Deserialize)]
struct RawRequest<'a> {
    #[serde(rename = "pub", borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    ext: Option<&'a RawValue>,
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    at: Option<&'a RawValue>,
    #[serde(borrow)]
    answer: Option<&'a RawValue>,
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
    #[serde(borrow)]
    wait: Option<&'a RawValue>,
    #[serde(borrow)]
    also: Option<&'a RawValue>,
    #[serde(borrow)]
    push: Option<&'a RawValue>,
    #[serde(borrow)]
    endpoint: Option<&'a RawValue>,
    #[serde(borrow)]
    keys: Option<&'a RawValue>,
}

/// One element of `also`, its members kept raw like the request's.
#[derive(serde::Deserialize)]
struct RawCursor<'a> {
    #[serde(rename = "pub", borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    at: Option<&'a RawValue>,
}

pub(crate) fn missing(field: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingField, field)
}

pub(crate) fn string<'a>(field: &str, value: &'a serde_json::Value) -> Result<&'a str, ApiError> {
    value
        .as_str()
        .ok_or_else(|| ApiError::new(ErrorCode::BadValue, format!("{field}: expected a string")))
}

/// Decodes a member's raw text; `null` (or absent) is `None`. The body was
/// already parsed as JSON, so the only failure left is a number out of the
/// range of an `f64` (`1e400`, a 20,000-digit integer): "Bad value".
pub(crate) fn present(
    field: &str,
    raw: Option<&RawValue>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::new(
            ErrorCode::BadValue,
            format!("{field}: a number out of range"),
        )
    })?;
    Ok(Some(value).filter(|v| !v.is_null()))
}

/// An unsigned 64-bit integer member: `-1`, `1.5`, `1e3`, `"5"`, `2^64`,
/// `1e400` and a 20,000-digit number are all "Bad value" with the same detail.
fn uint(field: &str, raw: Option<&RawValue>) -> Result<Option<u64>, ApiError> {
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        return Ok(None);
    };
    serde_json::from_str::<u64>(raw.get())
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadValue,
                format!("{field}: expected a non-negative integer below 2^64"),
            )
        })
}

fn answer(raw: Option<&RawValue>) -> Result<Option<Answer>, ApiError> {
    let Some(value) = present("answer", raw)? else {
        return Ok(None);
    };
    let bytes = b64::decode(string("answer", &value)?)
        .map_err(|e| ApiError::new(ErrorCode::BadBase64, format!("answer: {e}")))?;
    let bytes: [u8; QUESTION_SECRET_LEN] = bytes.as_slice().try_into().map_err(|_| {
        ApiError::new(
            ErrorCode::BadValue,
            format!(
                "answer: expected {QUESTION_SECRET_LEN} bytes, got {}",
                bytes.len()
            ),
        )
    })?;
    Ok(Some(Answer(bytes)))
}

/// Decodes `also`, the other mailboxes of a held check (`spec/protocol.md`
/// §7.3 rows 21 to 25): an array of at most 15 objects, each with a valid
/// `pub` and an optional `at`, none naming `own` or another element's
/// mailbox. Absent, `null` or `[]` is no other mailbox. Unlike the
/// request's own `pub`, these keys are always checked to be curve points:
/// a held check waits seconds, so their cost does not matter.
fn also(own: &UnvalidatedKey, raw: Option<&RawValue>) -> Result<Vec<MailboxCursor>, ApiError> {
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        return Ok(Vec::new());
    };
    let max = limits::MAX_MAILBOXES_PER_HELD_CHECK - 1;
    let elements: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::new(ErrorCode::BadValue, "also: expected an array of objects"))?;
    if elements.len() > max {
        return Err(ApiError::new(
            ErrorCode::BadValue,
            format!("also: {} mailboxes, the maximum is {max}", elements.len()),
        ));
    }
    let mut out: Vec<MailboxCursor> = Vec::with_capacity(elements.len());
    for (index, element) in elements.into_iter().enumerate() {
        let field = |name: &str| format!("also[{index}].{name}");
        let cursor: RawCursor = if is_json_object(element.get().as_bytes()) {
            serde_json::from_str(element.get()).map_err(|_| {
                ApiError::new(
                    ErrorCode::BadValue,
                    format!("also[{index}]: a member twice"),
                )
            })?
        } else {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!("also[{index}]: expected an object"),
            ));
        };
        let key = present(&field("pub"), cursor.key)?.ok_or_else(|| missing(&field("pub")))?;
        let key: PublicKey = string(&field("pub"), &key)?.parse().map_err(|e| {
            ApiError::new(ErrorCode::BadPublicKey, format!("{}: {e}", field("pub")))
        })?;
        let at = At(uint(&field("at"), cursor.at)?.unwrap_or(0));
        if key.as_bytes() == own.as_bytes() || out.iter().any(|c| c.key == key) {
            return Err(ApiError::new(
                ErrorCode::BadValue,
                format!("{}: the mailbox is named twice", field("pub")),
            ));
        }
        out.push(MailboxCursor { key, at });
    }
    Ok(out)
}

/// Whether `bytes` holds a JSON object (its first non-whitespace byte is `{`);
/// the parser checks the rest.
pub(crate) fn is_json_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// "Bad public key" for a `pub` that could not be parsed.
fn bad_public_key(error: &KeyError) -> ApiError {
    ApiError::new(ErrorCode::BadPublicKey, format!("pub: {error}"))
}

impl Request {
    /// Decodes a request body. Unknown fields are ignored; `null` is the same
    /// as absent.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let request = Request::from_json_unvalidated(body)?;
        Ok(Self {
            key: request.validated_key()?,
            ext: request.ext,
            op: request.op,
        })
    }
}

impl Request<UnvalidatedKey> {
    /// The request's key checked to be a point on the curve, or the "Bad
    /// public key" error [`Request::from_json`] gives for it.
    pub fn validated_key(&self) -> Result<PublicKey, ApiError> {
        self.key.validate().map_err(|e| bad_public_key(&e))
    }

    /// [`Request::from_json`] without the check that `pub` is a point on
    /// the curve (the costliest step of decoding a check), for a relay that
    /// knows most keys it sees to be valid already (they name mailboxes it
    /// holds). It answers exactly what `from_json` answers, with one
    /// exception: a body whose only fault is a `pub` off the curve decodes
    /// here, and [`Request::validated_key`] gives its error. (When the body
    /// has another fault after `pub`, the key is checked, so that "Bad
    /// public key" comes first, as from `from_json`.)
    pub fn from_json_unvalidated(body: &[u8]) -> Result<Self, ApiError> {
        // serde would also read a struct from a JSON array; only an object is a request.
        if !is_json_object(body) {
            return Err(ApiError::new(
                ErrorCode::MalformedJson,
                "the body is not a JSON object",
            ));
        }
        let raw: RawRequest = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(ErrorCode::MalformedJson, e.to_string()))?;
        let action = present("action", raw.action)?.ok_or_else(|| missing("action"))?;
        let action = match string("action", &action)? {
            "send" => Action::Send,
            "check" => Action::Check,
            "receive" => Action::Receive,
            "delete" => Action::Delete,
            "push" => Action::Push,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(ApiError::new(
                    ErrorCode::UnknownAction,
                    format!("{shown:?}; expected send, check, receive, delete or push"),
                ));
            }
        };
        let key = present("pub", raw.key)?.ok_or_else(|| missing("pub"))?;
        let key: UnvalidatedKey = string("pub", &key)?
            .parse()
            .map_err(|e| bad_public_key(&e))?;
        match Self::decode_after_key(key, &raw, action) {
            Ok(request) => Ok(request),
            // "Bad public key" comes before any fault of a later member.
            Err(error) => match key.validate() {
                Ok(_) => Err(error),
                Err(key_error) => Err(bad_public_key(&key_error)),
            },
        }
    }

    /// The members after `pub`, in the order [`Request::from_json`] checks them.
    fn decode_after_key(
        key: UnvalidatedKey,
        raw: &RawRequest<'_>,
        action: Action,
    ) -> Result<Self, ApiError> {
        let ext = match present("ext", raw.ext)? {
            None => None,
            Some(value) => {
                let ext = string("ext", &value)?;
                if ext.len() > limits::MAX_EXT_LEN {
                    return Err(ApiError::new(
                        ErrorCode::BadValue,
                        format!(
                            "ext: {} bytes, the maximum is {}",
                            ext.len(),
                            limits::MAX_EXT_LEN
                        ),
                    ));
                }
                Some(ext.to_owned())
            }
        };
        // Fields an action does not use are ignored, not checked.
        let at = |raw_at| Ok::<_, ApiError>(At(uint("at", raw_at)?.unwrap_or(0)));
        let op = match action {
            Action::Send => {
                let data = present("data", raw.data)?.ok_or_else(|| missing("data"))?;
                let data = string("data", &data)?;
                if data.len() > b64::encoded_len(limits::MAX_MESSAGE_BYTES) {
                    return Err(ApiError::new(
                        ErrorCode::TooBig,
                        format!("data: the maximum is {} bytes", limits::MAX_MESSAGE_BYTES),
                    ));
                }
                let data = b64::decode(data)
                    .map_err(|e| ApiError::new(ErrorCode::BadBase64, format!("data: {e}")))?;
                if data.len() < SEAL_OVERHEAD {
                    return Err(ApiError::new(
                        ErrorCode::BadValue,
                        format!(
                            "data: {} bytes is shorter than any sealed message ({SEAL_OVERHEAD})",
                            data.len()
                        ),
                    ));
                }
                Operation::Send { data }
            }
            Action::Check => {
                let at = at(raw.at)?;
                let wait_seconds = uint("wait", raw.wait)?.unwrap_or(0);
                let also = also(&key, raw.also)?;
                if wait_seconds == 0 && also.is_empty() {
                    Operation::Check { at }
                } else {
                    Operation::HeldCheck {
                        at,
                        also,
                        wait_seconds,
                    }
                }
            }
            Action::Receive => {
                let at = at(raw.at)?;
                let answer = answer(raw.answer)?.ok_or_else(|| missing("answer"))?;
                let limit = uint("limit", raw.limit)?.unwrap_or(1);
                if limit == 0 || limit > u64::from(limits::MAX_RECEIVE_LIMIT) {
                    return Err(ApiError::new(
                        ErrorCode::BadValue,
                        format!(
                            "limit: {limit} is not between 1 and {}",
                            limits::MAX_RECEIVE_LIMIT
                        ),
                    ));
                }
                Operation::Receive {
                    answer,
                    at,
                    limit: limit as u32,
                }
            }
            Action::Delete => Operation::Delete {
                answer: answer(raw.answer)?,
            },
            Action::Push => {
                let request = push_request(raw.push, raw.endpoint, raw.keys)?;
                let answer = answer(raw.answer)?.ok_or_else(|| missing("answer"))?;
                Operation::Push { answer, request }
            }
        };
        Ok(Self { key, ext, op })
    }
}

impl<K: fmt::Display> Request<K> {
    /// Encodes the request body, with the seed's field names.
    pub fn to_json(&self) -> String {
        let mut body = serde_json::Map::new();
        body.insert("pub".into(), self.key.to_string().into());
        body.insert(
            "ext".into(),
            self.ext.clone().map_or(serde_json::Value::Null, Into::into),
        );
        body.insert("action".into(), self.op.action().as_str().into());
        match &self.op {
            Operation::Send { data } => {
                body.insert("data".into(), b64::encode(data).into());
            }
            Operation::Check { at } => {
                body.insert("at".into(), at.0.into());
            }
            Operation::Receive { answer, at, limit } => {
                body.insert("answer".into(), b64::encode(&answer.0).into());
                body.insert("at".into(), at.0.into());
                body.insert("limit".into(), (*limit).into());
            }
            Operation::Delete { answer } => {
                if let Some(answer) = answer {
                    body.insert("answer".into(), b64::encode(&answer.0).into());
                }
            }
            Operation::HeldCheck {
                at,
                also,
                wait_seconds,
            } => {
                body.insert("at".into(), at.0.into());
                if *wait_seconds > 0 {
                    body.insert("wait".into(), (*wait_seconds).into());
                }
                if !also.is_empty() {
                    let also: Vec<serde_json::Value> = also
                        .iter()
                        .map(|c| serde_json::json!({"pub": c.key.to_string(), "at": c.at.0}))
                        .collect();
                    body.insert("also".into(), also.into());
                }
            }
            Operation::Push { answer, request } => {
                body.insert("answer".into(), b64::encode(&answer.0).into());
                body.insert("push".into(), request.verb().into());
                if let PushRequest::Register(subscription) = request {
                    body.insert("endpoint".into(), subscription.endpoint.clone().into());
                    if let Some(keys) = &subscription.web_push {
                        body.insert(
                            "keys".into(),
                            serde_json::json!({
                                "p256dh": b64::encode(&keys.p256dh),
                                "auth": b64::encode(&keys.auth),
                            }),
                        );
                    }
                }
            }
        }
        serde_json::Value::Object(body).to_string()
    }
}

/// A stored message as a relay returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its position in the mailbox.
    pub at: At,
    /// The sealed message.
    pub data: Vec<u8>,
}

/// A successful answer, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// `{"ok": true}`: a `send` stored, or a `delete` done.
    Done,
    /// `{"ok": true, "found": false}`: `check` found nothing after `at`, or a
    /// `limit: 1` `receive` found nothing.
    NotFound,
    /// `{"ok": true, "found": true, "question": "..."}`: `check` found a
    /// message; `question` is sealed to the mailbox key.
    Found {
        /// The sealed question.
        question: Vec<u8>,
    },
    /// `{"ok": true, "found": true, "checks": [{"pub": "...", "question":
    /// "..."}, ...]}`: a held check ([`Operation::HeldCheck`]) found messages
    /// in these mailboxes (in the order the request named them, at least
    /// one). A held check that found nothing is [`Response::NotFound`].
    FoundMany(Vec<FoundQuestion>),
    /// `{"ok": true, "at": N, "data": "..."}`: the seed's answer to a
    /// `limit: 1` `receive`.
    One(Message),
    /// `{"ok": true, "messages": [{"at": N, "data": "..."}, ...]}`: the answer
    /// to a `receive` with a larger limit, oldest first; fewer than `limit`
    /// means there are no more.
    Many(Vec<Message>),
    /// `{"ok": true, "push": [{"kind": "...", "endpoint": "..."}]}`: the
    /// answer to a `push` `list`, the mailbox's registrations (zero or one).
    Pushes(Vec<PushListing>),
    /// `{"ok": false, "error": "...", "detail": "..."}`.
    Error(ApiError),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireMessage {
    at: At,
    data: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireFound {
    #[serde(rename = "pub")]
    key: String,
    question: String,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct RawResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    found: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<At>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<WireMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checks: Option<Vec<WireFound>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    push: Option<Vec<PushListing>>,
}

/// A relay's answer could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed relay response: {0}")]
pub struct ResponseError(pub String);

impl ResponseError {
    /// A stable identifier of the fault, for tests and other languages.
    pub fn code(&self) -> &'static str {
        "MalformedResponse"
    }
}

impl Response {
    /// The HTTP status that goes with the response.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Error(error) => error.code.http_status(),
            _ => 200,
        }
    }

    /// Encodes the response body.
    pub fn to_json(&self) -> String {
        let mut raw = RawResponse {
            ok: true,
            ..RawResponse::default()
        };
        match self {
            Self::Done => {}
            Self::NotFound => raw.found = Some(false),
            Self::Found { question } => {
                raw.found = Some(true);
                raw.question = Some(b64::encode(question));
            }
            Self::FoundMany(found) => {
                raw.found = Some(true);
                raw.checks = Some(
                    found
                        .iter()
                        .map(|f| WireFound {
                            key: f.key.to_string(),
                            question: b64::encode(&f.question),
                        })
                        .collect(),
                );
            }
            Self::One(message) => {
                raw.at = Some(message.at);
                raw.data = Some(b64::encode(&message.data));
            }
            Self::Many(messages) => {
                raw.messages = Some(
                    messages
                        .iter()
                        .map(|m| WireMessage {
                            at: m.at,
                            data: b64::encode(&m.data),
                        })
                        .collect(),
                );
            }
            Self::Pushes(listings) => raw.push = Some(listings.clone()),
            Self::Error(error) => {
                raw.ok = false;
                raw.error = Some(error.code.as_str().to_owned());
                raw.detail.clone_from(&error.detail);
            }
        }
        // Invariant: RawResponse holds only strings, numbers and booleans.
        #[allow(clippy::expect_used)]
        serde_json::to_string(&raw).expect("serializable")
    }

    /// Decodes a relay's answer to a request with `action` (the same JSON
    /// means different things for different actions).
    pub fn from_json(action: Action, body: &[u8]) -> Result<Self, ResponseError> {
        if !is_json_object(body) {
            return Err(ResponseError("the body is not a JSON object".into()));
        }
        let raw: RawResponse =
            serde_json::from_slice(body).map_err(|e| ResponseError(e.to_string()))?;
        if !raw.ok {
            let error = raw
                .error
                .ok_or_else(|| ResponseError("ok is false but error is missing".into()))?;
            let code = ErrorCode::from_str_exact(&error)
                .ok_or_else(|| ResponseError(format!("unknown error {error:?}")))?;
            return Ok(Self::Error(ApiError {
                code,
                detail: raw.detail,
            }));
        }
        let decode = |field: &str, text: &str| {
            b64::decode(text).map_err(|e| ResponseError(format!("{field}: {e}")))
        };
        match action {
            Action::Send | Action::Delete => Ok(Self::Done),
            Action::Push => Ok(raw.push.map_or(Self::Done, Self::Pushes)),
            Action::Check => match (raw.found, raw.question, raw.checks) {
                (Some(false), _, _) => Ok(Self::NotFound),
                (Some(true), _, Some(checks)) if !checks.is_empty() => checks
                    .into_iter()
                    .map(|found| {
                        Ok(FoundQuestion {
                            key: found
                                .key
                                .parse()
                                .map_err(|e| ResponseError(format!("checks: pub: {e}")))?,
                            question: decode("question", &found.question)?,
                        })
                    })
                    .collect::<Result<_, ResponseError>>()
                    .map(Self::FoundMany),
                (Some(true), Some(question), None) => Ok(Self::Found {
                    question: decode("question", &question)?,
                }),
                _ => Err(ResponseError(
                    "check answer needs found (and question when found)".into(),
                )),
            },
            Action::Receive => {
                if let Some(messages) = raw.messages {
                    let messages = messages
                        .into_iter()
                        .map(|m| {
                            Ok(Message {
                                at: m.at,
                                data: decode("data", &m.data)?,
                            })
                        })
                        .collect::<Result<_, ResponseError>>()?;
                    return Ok(Self::Many(messages));
                }
                match (raw.found, raw.at, raw.data) {
                    (Some(false), None, None) => Ok(Self::NotFound),
                    (_, Some(at), Some(data)) => Ok(Self::One(Message {
                        at,
                        data: decode("data", &data)?,
                    })),
                    _ => Err(ResponseError(
                        "receive answer needs at and data, messages, or found".into(),
                    )),
                }
            }
        }
    }

    /// The messages of a `receive` answer, whatever its form.
    pub fn into_messages(self) -> Option<Vec<Message>> {
        match self {
            Self::NotFound => Some(Vec::new()),
            Self::One(message) => Some(vec![message]),
            Self::Many(messages) => Some(messages),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn key() -> PublicKey {
        SecretKey::from_bytes(&[7u8; 48]).unwrap().public_key()
    }

    fn parse(json: &str) -> Result<Request, ApiError> {
        Request::from_json(json.as_bytes())
    }

    #[test]
    fn seed_check_request() {
        let json = format!(
            r#"{{"pub": "{}", "ext": null, "action": "check", "at": 0}}"#,
            key()
        );
        let request = parse(&json).unwrap();
        assert_eq!(request.op, Operation::Check { at: At(0) });
        assert_eq!(
            Request::from_json(request.to_json().as_bytes()).unwrap(),
            request
        );
    }

    #[test]
    fn errors_are_precise() {
        let k = key();
        assert_eq!(parse("{").unwrap_err().code, ErrorCode::MalformedJson);
        assert_eq!(parse("[]").unwrap_err().code, ErrorCode::MalformedJson);
        assert_eq!(
            parse(r#"{"pub":"x"}"#).unwrap_err(),
            ApiError::new(ErrorCode::MissingField, "action")
        );
        assert_eq!(
            parse(r#"{"action":"fly"}"#).unwrap_err().code,
            ErrorCode::UnknownAction
        );
        assert_eq!(
            parse(r#"{"action":"check"}"#).unwrap_err(),
            ApiError::new(ErrorCode::MissingField, "pub")
        );
        assert_eq!(
            parse(r#"{"action":"check","pub":"abc"}"#).unwrap_err().code,
            ErrorCode::BadPublicKey
        );
        let send = format!(r#"{{"action":"send","pub":"{k}"}}"#);
        assert_eq!(
            parse(&send).unwrap_err(),
            ApiError::new(ErrorCode::MissingField, "data")
        );
        let send = format!(r#"{{"action":"send","pub":"{k}","data":"a+b="}}"#);
        assert_eq!(parse(&send).unwrap_err().code, ErrorCode::BadBase64);
        let check = format!(r#"{{"action":"check","pub":"{k}","at":-1}}"#);
        assert_eq!(parse(&check).unwrap_err().code, ErrorCode::BadValue);
        let receive = format!(
            r#"{{"action":"receive","pub":"{k}","answer":"{}","limit":101}}"#,
            b64::encode(&[0; 32])
        );
        assert_eq!(parse(&receive).unwrap_err().code, ErrorCode::BadValue);
    }

    #[test]
    fn info_documents_without_connection_limits_still_parse() {
        let old = r#"{"software":"r","version":"1","protocol":1,
            "limits":{"max_message_bytes":65536,"max_receive_limit":100,
                      "max_pending_per_mailbox":100,"max_checks_per_datagram":16},
            "retention":{"message_seconds":3600,"question_seconds":60,"mailbox_idle_seconds":60}}"#;
        let info: RelayInfo = serde_json::from_str(old).unwrap();
        assert_eq!(info.limits.max_connections_per_source, None);
        assert_eq!(info.limits.idle_timeout_seconds, None);
        let mut info = info;
        info.limits.max_connections_per_source = Some(256);
        info.limits.idle_timeout_seconds = Some(30);
        let text = serde_json::to_string(&info).unwrap();
        assert!(text.contains(r#""max_connections_per_source":256,"idle_timeout_seconds":30"#));
        assert_eq!(serde_json::from_str::<RelayInfo>(&text).unwrap(), info);
    }

    #[test]
    fn a_key_off_the_curve_is_refused_before_later_faults() {
        let mut off = [0xffu8; crate::keys::PUBLIC_KEY_LEN];
        off[0] = 0x02;
        let off = b64::encode(&off);
        let refused = ApiError::new(
            ErrorCode::BadPublicKey,
            "pub: not a point on the P-384 curve",
        );
        // Its only fault: decoded unvalidated, refused when validated.
        let check = format!(r#"{{"action":"check","pub":"{off}","at":1}}"#);
        assert_eq!(parse(&check).unwrap_err(), refused);
        let unvalidated = Request::from_json_unvalidated(check.as_bytes()).unwrap();
        assert_eq!(unvalidated.op, Operation::Check { at: At(1) });
        assert_eq!(unvalidated.validated_key().unwrap_err(), refused);
        // With a later fault too: the key's comes first either way.
        for body in [
            format!(r#"{{"action":"check","pub":"{off}","at":-1}}"#),
            format!(r#"{{"action":"send","pub":"{off}","data":"a+b="}}"#),
            format!(r#"{{"action":"receive","pub":"{off}"}}"#),
            format!(r#"{{"action":"check","pub":"{off}","ext":5}}"#),
        ] {
            assert_eq!(parse(&body).unwrap_err(), refused, "{body}");
            assert_eq!(
                Request::from_json_unvalidated(body.as_bytes()).unwrap_err(),
                refused,
                "{body}"
            );
        }
        // A valid key with the same later fault gets that fault.
        let body = format!(r#"{{"action":"check","pub":"{}","at":-1}}"#, key());
        assert_eq!(
            Request::from_json_unvalidated(body.as_bytes()).unwrap_err(),
            parse(&body).unwrap_err()
        );
        assert_eq!(parse(&body).unwrap_err().code, ErrorCode::BadValue);
    }

    #[test]
    fn every_unrepresentable_number_is_one_bad_value_naming_its_member() {
        let k = key();
        let answer = b64::encode(&[0; 32]);
        let huge = format!("1{}", "0".repeat(20_000));
        for number in ["18446744073709551616", "1e400", "-1", "1.5", "1e3", &huge] {
            let check = format!(r#"{{"action":"check","pub":"{k}","at":{number}}}"#);
            assert_eq!(
                parse(&check).unwrap_err(),
                ApiError::new(
                    ErrorCode::BadValue,
                    "at: expected a non-negative integer below 2^64"
                ),
                "at: {}",
                &number[..number.len().min(24)]
            );
            let receive = format!(
                r#"{{"action":"receive","pub":"{k}","answer":"{answer}","limit":{number}}}"#
            );
            assert_eq!(
                parse(&receive).unwrap_err(),
                ApiError::new(
                    ErrorCode::BadValue,
                    "limit: expected a non-negative integer below 2^64"
                ),
                "limit: {}",
                &number[..number.len().min(24)]
            );
        }
        // The largest `at` is accepted; an out-of-range number in a string
        // member names that member; one in an unknown member is ignored.
        let check = format!(r#"{{"action":"check","pub":"{k}","at":18446744073709551615}}"#);
        assert_eq!(
            parse(&check).unwrap().op,
            Operation::Check { at: At(u64::MAX) }
        );
        let check = format!(r#"{{"action":"check","pub":"{k}","ext":1e400}}"#);
        assert_eq!(
            parse(&check).unwrap_err(),
            ApiError::new(ErrorCode::BadValue, "ext: a number out of range")
        );
        let check = format!(r#"{{"action":"check","pub":"{k}","other":[{huge}, 1e400]}}"#);
        assert!(parse(&check).is_ok());
        // A body that is not JSON is still "Malformed JSON", numbers or not.
        let check = format!(r#"{{"action":"check","pub":"{k}","at":1e400"#);
        assert_eq!(parse(&check).unwrap_err().code, ErrorCode::MalformedJson);
        let check = format!(r#"{{"action":"check","pub":"{k}","at":1,"at":2}}"#);
        assert_eq!(parse(&check).unwrap_err().code, ErrorCode::MalformedJson);
    }

    #[test]
    fn seed_response_shapes() {
        assert_eq!(Response::Done.to_json(), r#"{"ok":true}"#);
        assert_eq!(Response::NotFound.to_json(), r#"{"ok":true,"found":false}"#);
        assert_eq!(
            Response::Error(ErrorCode::TooOften.into()).to_json(),
            r#"{"ok":false,"error":"Too often"}"#
        );
        let one = Response::One(Message {
            at: At(5),
            data: vec![1, 2],
        });
        assert_eq!(one.to_json(), r#"{"ok":true,"at":5,"data":"AQI"}"#);
        assert_eq!(
            Response::from_json(Action::Receive, one.to_json().as_bytes()).unwrap(),
            one
        );
    }

    /// `==` and `ConstantTimeEq` agree on secret-bearing values, equal
    /// or differing in the first or the last byte.
    #[test]
    fn secrets_compare_in_constant_time_by_value() {
        use subtle::ConstantTimeEq as _;
        let a = Answer([5; QUESTION_SECRET_LEN]);
        let mut first = a;
        first.0[0] ^= 1;
        let mut last = a;
        last.0[QUESTION_SECRET_LEN - 1] ^= 1;
        assert!(a == Answer([5; QUESTION_SECRET_LEN]) && bool::from(a.ct_eq(&a)));
        for other in [first, last] {
            assert!(a != other && !bool::from(a.ct_eq(&other)));
        }
        let secret = crate::LinkSecret([1; 16]);
        assert!(secret == crate::LinkSecret([1; 16]) && secret != crate::LinkSecret([2; 16]));
        let proof = crate::LinkProof([1; 32]);
        assert!(proof == crate::LinkProof([1; 32]) && proof != crate::LinkProof([2; 32]));
    }

    #[test]
    fn error_strings_are_unique() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_str_exact(code.as_str()), Some(code));
        }
    }
}

/// The protocol version this crate speaks: the `protocol` member of
/// [`RelayInfo`] (`spec/protocol.md` is version 1).
pub const PROTOCOL_VERSION: u32 = 1;

/// The path of the relay information document, `/.well-known/connectoid`,
/// on a relay served at the root of its host. A client resolves it without
/// the leading `/` against the relay URL (`spec/protocol.md` §7.9), so a
/// relay URL with a path prefix finds the document under that prefix.
pub const INFO_PATH: &str = "/.well-known/connectoid";

/// The relay information document, served at [`INFO_PATH`]
/// (in the spirit of nostr's NIP-11). Clients read it to find the UDP check
/// port, the limits and the federation peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RelayInfo {
    /// The relay software's name, such as `"connectoid-relay"`.
    pub software: String,
    /// The relay software's version.
    pub version: String,
    /// The protocol version the relay speaks ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Limits a client must respect.
    pub limits: InfoLimits,
    /// How long the relay keeps things.
    pub retention: InfoRetention,
    /// The UDP port of the check fast path on the relay's host, if enabled.
    #[serde(default)]
    pub udp_port: Option<u16>,
    /// Whether requests need an API key in `ext`.
    #[serde(default)]
    pub api_key_required: bool,
    /// How to reach the operator (an email address or URL), if given.
    #[serde(default)]
    pub contact: Option<String>,
    /// Other relays this operator federates with or recommends.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Held checks (long polls), if the relay holds them; absent: it answers
    /// every check at once and clients poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_check: Option<InfoHeldCheck>,
    /// Push notifications (`push` requests), if the relay sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<InfoPush>,
}

/// The push part of [`RelayInfo`] (`spec/protocol.md` §7.11).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InfoPush {
    /// The relay's VAPID public key (RFC 8292): base64url of the
    /// uncompressed P-256 point, the `applicationServerKey` a web app
    /// subscribes with.
    pub vapid_public_key: String,
    /// At most one push per mailbox per this many seconds.
    pub min_interval_seconds: u64,
}

impl InfoPush {
    /// Push with the VAPID key `vapid_public_key` (base64url) and at most one
    /// push per mailbox per `min_interval_seconds`.
    pub fn new(vapid_public_key: impl Into<String>, min_interval_seconds: u64) -> Self {
        Self {
            vapid_public_key: vapid_public_key.into(),
            min_interval_seconds,
        }
    }
}

/// The limits part of [`RelayInfo`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InfoLimits {
    /// Largest sealed message (decoded `data`) in bytes.
    pub max_message_bytes: u64,
    /// Largest `limit` of a `receive`.
    pub max_receive_limit: u32,
    /// Most messages one mailbox holds at once.
    pub max_pending_per_mailbox: u32,
    /// Most mailboxes one UDP check datagram may carry.
    pub max_checks_per_datagram: u32,
    /// Most HTTP connections the relay keeps open from one source (an IPv4
    /// address or an IPv6 /64); past it the source's oldest idle connection
    /// is closed or the new one refused. `None`: not advertised.
    #[serde(default)]
    pub max_connections_per_source: Option<u32>,
    /// Seconds an HTTP connection may stay idle (kept alive between
    /// requests, or delivering a request's headers) before the relay closes
    /// it; a client's connection pool should close idle connections sooner.
    /// `None`: not advertised.
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
}

/// The held check part of [`RelayInfo`]: present when the relay holds
/// checks (`check` with `wait`, `spec/protocol.md` §7.10).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InfoHeldCheck {
    /// Longest wait in seconds the relay holds a check; a larger `wait` is
    /// shortened to it. Default 30.
    pub max_wait_seconds: u64,
    /// Most mailboxes one held check names (`pub` and `also`), 16.
    pub max_mailboxes: u32,
    /// Most held checks waiting at once from one source (an IPv4 address
    /// or an IPv6 /64); past it "Too often".
    pub max_per_source: u32,
    /// Most held checks waiting at once in total; past it "Too often".
    pub max_total: u32,
}

impl InfoHeldCheck {
    /// Held checks of at most `max_wait_seconds`, naming at most
    /// `max_mailboxes`, `max_per_source` waiting per source and `max_total`
    /// in all.
    pub fn new(
        max_wait_seconds: u64,
        max_mailboxes: u32,
        max_per_source: u32,
        max_total: u32,
    ) -> Self {
        Self {
            max_wait_seconds,
            max_mailboxes,
            max_per_source,
            max_total,
        }
    }
}

/// The retention part of [`RelayInfo`], in seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InfoRetention {
    /// A message lives this long after it arrives.
    pub message_seconds: u64,
    /// A question lives this long after it is made.
    pub question_seconds: u64,
    /// A mailbox with no check for this long is deleted.
    pub mailbox_idle_seconds: u64,
}

impl RelayInfo {
    /// A document for [`PROTOCOL_VERSION`] with no UDP port, no API key
    /// required, no contact and no peers; set those fields after.
    pub fn new(
        software: impl Into<String>,
        version: impl Into<String>,
        limits: InfoLimits,
        retention: InfoRetention,
    ) -> Self {
        Self {
            software: software.into(),
            version: version.into(),
            protocol: PROTOCOL_VERSION,
            limits,
            retention,
            udp_port: None,
            api_key_required: false,
            contact: None,
            peers: Vec::new(),
            held_check: None,
            push: None,
        }
    }
}

impl InfoLimits {
    /// Limits of `max_message_bytes` bytes per message, `max_receive_limit`
    /// messages per `receive`, `max_pending_per_mailbox` messages per
    /// mailbox and `max_checks_per_datagram` mailboxes per UDP check; the
    /// connection limits are not advertised (set them after).
    pub fn new(
        max_message_bytes: u64,
        max_receive_limit: u32,
        max_pending_per_mailbox: u32,
        max_checks_per_datagram: u32,
    ) -> Self {
        Self {
            max_message_bytes,
            max_receive_limit,
            max_pending_per_mailbox,
            max_checks_per_datagram,
            max_connections_per_source: None,
            idle_timeout_seconds: None,
        }
    }
}

impl InfoRetention {
    /// Retention of `message_seconds` per message, `question_seconds` per
    /// question and `mailbox_idle_seconds` per unchecked mailbox.
    pub fn new(message_seconds: u64, question_seconds: u64, mailbox_idle_seconds: u64) -> Self {
        Self {
            message_seconds,
            question_seconds,
            mailbox_idle_seconds,
        }
    }
}

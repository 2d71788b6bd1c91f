//! Reading Redis replies and errors as the store's values and
//! [`StoreError`]s.

use std::fmt;

use ::redis::{RedisError, Value};
use connectoid_protocol::seal::QUESTION_SECRET_LEN;

use crate::store::{Question, StoreError};

pub(super) fn corrupt(what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected Redis reply: {what}"))
}

pub(super) fn int(value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| corrupt("not a number")),
        Value::Nil => Ok(0),
        other => Err(corrupt(format!("{other:?}"))),
    }
}

pub(super) fn array(value: Value, len: usize) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) if items.len() >= len => Ok(items),
        other => Err(corrupt(format!("{other:?}"))),
    }
}

pub(super) fn bytes(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(b) => Ok(b),
        other => Err(corrupt(format!("{other:?}"))),
    }
}

/// A count from Redis as the trait's unsigned counts (totals can only go
/// below zero through the approximations of the module documentation).
pub(super) fn count(value: &Value) -> Result<u64, StoreError> {
    Ok(u64::try_from(int(value)?).unwrap_or(0))
}

pub(super) fn ms(us: u64) -> u64 {
    us / 1000
}

/// Turns a Redis failure into the store's error: an unreachable or busy
/// server is [`StoreError::Unavailable`], a full one (`OOM`) is
/// [`StoreError::RelayFull`], data of the wrong type under our keys is
/// [`StoreError::Corrupt`].
pub(super) fn redis_error(error: RedisError) -> StoreError {
    use ::redis::ErrorKind;
    if error.code() == Some("OOM") {
        return StoreError::RelayFull("the store's memory is full");
    }
    match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            StoreError::Corrupt(error.to_string())
        }
        ErrorKind::Server(::redis::ServerErrorKind::ResponseError)
            if error.code() == Some("WRONGTYPE") =>
        {
            StoreError::Corrupt(error.to_string())
        }
        _ => StoreError::Unavailable(format!("redis: {error}")),
    }
}

pub(super) fn decode_question(expires_us: u64, mut value: Vec<u8>) -> Result<Question, StoreError> {
    if value.len() < QUESTION_SECRET_LEN {
        return Err(corrupt("question too short"));
    }
    let sealed = value.split_off(QUESTION_SECRET_LEN);
    let secret: [u8; QUESTION_SECRET_LEN] = value
        .try_into()
        .map_err(|_| corrupt("question secret length"))?;
    Ok(Question {
        secret,
        sealed,
        expires_us,
    })
}

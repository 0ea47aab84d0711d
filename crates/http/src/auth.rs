//! The API key: with `--api-key`, every endpoint but `/health` wants
//! `Authorization: Bearer <key>` (what OpenAI's clients and llama.vim's `api_key` send).
//! Compared in constant time (`subtle`), so the answer's timing says nothing of how much of
//! a guess was right.

use axum::http::{header, HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Whether `headers` carry `key` as a bearer token.
pub fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return false;
    }
    let given = value[scheme.len()..].trim_ascii();
    // Unequal lengths compare unequal at once: the length of a key is not its secret.
    bool::from(given.ct_eq(key.as_bytes()))
}

pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid or missing API key: send `Authorization: Bearer <key>`",
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        assert!(authorized(&with("Bearer s3cret"), "s3cret"));
        assert!(authorized(&with("bearer  s3cret "), "s3cret"));
        assert!(!authorized(&with("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&with("Bearer s3cretx"), "s3cret"));
        assert!(!authorized(&with("Basic s3cret"), "s3cret"));
        assert!(!authorized(&with("s3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}

//! Request bodies: read within the size limit, parsed as a JSON object, then read field by
//! field, so that every bad value gets a 400 whose message names the field (serde's own
//! messages name a line and column instead). Unknown fields are ignored, as llama-server
//! and vLLM do: clients send their own extras.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The request body as a JSON object, or the error to answer.
pub async fn read_object(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Chunked bodies declare nothing: the limit applies while reading.
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        ApiError::bad_request(format!("cannot read the request body: {e}"))
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to a request object's fields; `null` counts as absent.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn wrong(key: &str, want: &str, got: &Value) -> ApiError {
        ApiError::field(key, format!("`{key}` must be {want}, got {}", kind(got)))
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(Self::wrong(key, "a string", v)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "true or false", v)),
        }
    }

    /// An integer within `lo..=hi`.
    pub fn int(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let want = format!("an integer from {lo} to {hi}");
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => {
                // 16.0 is an integer to JSON's eyes; 16.5 is not.
                let i = n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
                match i {
                    Some(i) if (lo..=hi).contains(&i) => Ok(Some(i)),
                    Some(i) => Err(ApiError::field(
                        key,
                        format!("`{key}` must be {want}, got {i}"),
                    )),
                    None => Err(Self::wrong(key, &want, v)),
                }
            }
            Some(v) => Err(Self::wrong(key, &want, v)),
        }
    }

    /// A non-negative integer of any size (seeds).
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(v) => Err(Self::wrong(key, "a non-negative integer", v)),
        }
    }

    /// A number within `lo..=hi` (`open_lo`: above `lo`).
    pub fn number(
        &self,
        key: &str,
        lo: f64,
        hi: f64,
        open_lo: bool,
    ) -> Result<Option<f64>, ApiError> {
        let want = if open_lo {
            format!("a number above {lo} and at most {hi}")
        } else {
            format!("a number from {lo} to {hi}")
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let ok = f.is_finite() && f <= hi && if open_lo { f > lo } else { f >= lo };
                if ok {
                    Ok(Some(f))
                } else {
                    Err(ApiError::field(
                        key,
                        format!("`{key}` must be {want}, got {f}"),
                    ))
                }
            }
            Some(v) => Err(Self::wrong(key, &want, v)),
        }
    }

    /// A string or an array of at most `max` strings (OpenAI's `stop`).
    pub fn strings(&self, key: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let want = format!("a string or an array of at most {max} strings");
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => {
                if items.len() > max {
                    return Err(ApiError::field(
                        key,
                        format!("`{key}` must be {want}, got {} strings", items.len()),
                    ));
                }
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(Self::wrong(key, &want, other)),
                    })
                    .collect()
            }
            Some(v) => Err(Self::wrong(key, &want, v)),
        }
    }

    /// The raw value, for fields with shapes of their own.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn bad_values_name_their_field() {
        let o = fields(json!({
            "max_tokens": "16", "n": 0, "temperature": 3.5, "top_p": 0, "stop": ["a", 1],
            "stream": "yes", "seed": -1, "ok": 16.0, "prompt": null
        }));
        let f = Fields(&o);
        let msg = |e: ApiError| (e.param.unwrap(), e.message);
        assert_eq!(
            msg(f.int("max_tokens", 1, 4096).unwrap_err()),
            (
                "max_tokens".into(),
                "`max_tokens` must be an integer from 1 to 4096, got a string".into()
            )
        );
        assert_eq!(
            msg(f.int("n", 1, 16).unwrap_err()).1,
            "`n` must be an integer from 1 to 16, got 0"
        );
        assert!(msg(f.number("temperature", 0.0, 2.0, false).unwrap_err())
            .1
            .contains("got 3.5"));
        assert!(msg(f.number("top_p", 0.0, 1.0, true).unwrap_err())
            .1
            .contains("above 0"));
        assert_eq!(msg(f.strings("stop", 4).unwrap_err()).0, "stop");
        assert_eq!(msg(f.bool("stream").unwrap_err()).0, "stream");
        assert_eq!(msg(f.u64("seed").unwrap_err()).0, "seed");
        assert_eq!(f.int("ok", 1, 20).unwrap(), Some(16));
        // null is absent.
        assert_eq!(f.string("prompt").unwrap(), None);
        assert_eq!(f.strings("missing", 4).unwrap(), Vec::<String>::new());
    }
}

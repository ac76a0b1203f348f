//! Reading request bodies: media type, size, encoding, JSON shape — each with its own code.

use axum::body::Body;
use axum::http::{HeaderMap, header};

use crate::error::{Error, Kind};

/// Reads and checks a JSON body: media type, size, encoding, JSON shape (`shape` names the
/// expected one in the error).
pub async fn read_json_body_as<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
    shape: &str,
) -> Result<T, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(Error::new(
            Kind::Request,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let too_large = || {
        Error::new(
            Kind::Request,
            "payload_too_large",
            format!("the request body is larger than {max_bytes} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, max_bytes).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if is_limit {
            too_large()
        } else {
            Error::request("invalid_body", "the request body could not be read")
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::request(
            "invalid_encoding",
            format!(
                "the request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::request("invalid_request", format!("the body must be {shape}: {e}"))
        }
        _ => Error::request("invalid_json", format!("the body is not valid JSON: {e}")),
    })
}

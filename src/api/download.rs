//! Streaming downloads with ETag, conditional requests and single byte ranges.

use std::ops::Range;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_range_header::parse_range_header;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::error::ApiError;
use crate::domain::{ComponentKey, Sha256, StoredFile};
use crate::service::RepositoryService;

pub async fn download(
    service: &RepositoryService,
    metrics: &std::sync::Arc<crate::api::metrics::Metrics>,
    key: ComponentKey,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let file = service.file(&key).await?;
    serve(service, metrics, Source::Component(&key), &file, headers).await
}

/// `GET /blobs/sha256/{hex}`: bytes by their digest, which never change under the URL, so caches may keep them.
/// Digests carry no name: `filename` (the `?filename=` a variant's `downloadUrl` carries) names the saved file.
pub async fn download_blob(
    service: &RepositoryService,
    metrics: &std::sync::Arc<crate::api::metrics::Metrics>,
    sha256: &Sha256,
    filename: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut file = service.blob(sha256).await?;
    if let Some(name) = filename.filter(|name| !name.trim().is_empty()) {
        file.filename = name;
    }
    let mut response = serve(service, metrics, Source::Digest, &file, headers).await?;
    set(
        &mut response,
        header::CACHE_CONTROL,
        "public, max-age=31536000, immutable",
    );
    Ok(response)
}

/// Where the bytes of a download are read from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The file (or a variant's file) of a component.
    Component(&'a ComponentKey),
    /// Whatever stored file has the digest.
    Digest,
}

pub async fn serve(
    service: &RepositoryService,
    metrics: &std::sync::Arc<crate::api::metrics::Metrics>,
    source: Source<'_>,
    file: &StoredFile,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // A file inherited from the original service may not be hashed yet; its GridFS id, never reused, identifies
    // its bytes as well until then.
    let etag = match file.sha256.as_str() {
        "" => format!("\"{}\"", file.blob_id),
        sha256 => format!("\"{sha256}\""),
    };
    if if_none_match(headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set(&mut response, header::ETAG, &etag);
        return Ok(response);
    }
    // Checked (and counted) when bytes would go out: a 304 sends none.
    let key = match source {
        Source::Component(key) => Some(key),
        Source::Digest => None,
    };
    service.admit_download(key, file).await?;
    let range = requested_range(headers, &etag, file.size)?;
    let (status, range) = match range {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range),
        None => (StatusCode::OK, 0..file.size),
    };
    let body = match source {
        Source::Component(key) => service.read(key, file, range.clone()).await?,
        Source::Digest => service.read_blob(file, range.clone()).await?,
    };
    let metrics = metrics.clone();
    let counted = body.inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            metrics.downloaded(chunk.len() as u64);
        }
    });
    let mut response = Response::new(Body::from_stream(counted));
    *response.status_mut() = status;
    set(
        &mut response,
        header::CONTENT_LENGTH,
        &(range.end - range.start).to_string(),
    );
    set(&mut response, header::CONTENT_TYPE, &file.content_type);
    set(
        &mut response,
        header::CONTENT_DISPOSITION,
        &content_disposition(file),
    );
    set(&mut response, header::ETAG, &etag);
    set(&mut response, header::ACCEPT_RANGES, "bytes");
    set(
        &mut response,
        header::LAST_MODIFIED,
        &file
            .uploaded_at
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, file.size);
        set(&mut response, header::CONTENT_RANGE, &content_range);
    }
    Ok(response)
}

fn set(response: &mut Response, name: header::HeaderName, value: &str) {
    // Every value here is built from validated, visible ASCII; a value that is not is left out, never a panic.
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// `If-None-Match` with our ETag (weak comparison, as RFC 9110 prescribes for this header) or `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// The one byte range to serve, if the client asked for one that applies. Several ranges are answered with the
/// whole file (RFC 9110 allows it), whatever they select; a single range that selects nothing is a 416, and so is
/// any range of an empty file (RFC 9110 §14.1.1: no range of zero bytes is satisfiable).
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<Range<u64>>, ApiError> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    // A stale `If-Range` means the client's partial copy is of other bytes: send everything.
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range.to_str().ok().map(str::trim) != Some(etag) {
            return Ok(None);
        }
    }
    if !range.trim_start().starts_with("bytes=") {
        return Ok(None); // units we do not know are ignored
    }
    let parsed = parse_range_header(range).map_err(|_| ApiError::RangeNotSatisfiable { size })?;
    if size == 0 {
        return Err(ApiError::RangeNotSatisfiable { size });
    }
    if parsed.ranges.len() > 1 {
        return Ok(None);
    }
    let ranges = parsed
        .validate(size)
        .map_err(|_| ApiError::RangeNotSatisfiable { size })?;
    match ranges.as_slice() {
        [single] => Ok(Some(*single.start()..*single.end() + 1)),
        _ => Ok(None),
    }
}

/// Characters RFC 5987 lets stand unescaped in `filename*` (its `attr-char`).
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266).
fn content_disposition(file: &StoredFile) -> String {
    let ascii: String = file
        .filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = utf8_percent_encode(&file.filename, ATTR_CHAR);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ranges() {
        let etag = "\"abc\"";
        let r = |v: &str| requested_range(&headers(&[(header::RANGE, v)]), etag, 100);
        assert_eq!(r("bytes=0-9").unwrap(), Some(0..10));
        assert_eq!(r("bytes=90-").unwrap(), Some(90..100));
        assert_eq!(r("bytes=-5").unwrap(), Some(95..100));
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("bytes=0-1,999999-").unwrap(), None);
        assert!(matches!(
            r("bytes=100-"),
            Err(ApiError::RangeNotSatisfiable { size: 100 })
        ));
        assert_eq!(r("items=0-1").unwrap(), None);
        for empty in ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=0-1,5-"] {
            assert!(matches!(
                requested_range(&headers(&[(header::RANGE, empty)]), etag, 0),
                Err(ApiError::RangeNotSatisfiable { size: 0 })
            ));
        }
        let stale = headers(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, "\"old\"")]);
        assert_eq!(requested_range(&stale, etag, 100).unwrap(), None);
    }

    #[test]
    fn etag_matching() {
        assert!(if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "\"x\", \"abc\"")]),
            "\"abc\""
        ));
        assert!(if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "W/\"abc\"")]),
            "\"abc\""
        ));
        assert!(if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "*")]),
            "\"abc\""
        ));
        assert!(!if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "\"x\"")]),
            "\"abc\""
        ));
    }
}

//! Layers around every route: the request time limit, CORS, and closing connections whose request bodies were
//! left unread.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::lease::ConnectionLease;

/// A time limit for everything but uploads, whose length depends on the file (their bodies have the idle timeout).
pub async fn request_timeout(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    // PATCH: the appends of resumable uploads.
    let upload = request.method() == Method::PUT
        || request.method() == Method::PATCH
        || request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/"));
    if upload {
        return next.run(request).await;
    }
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    }
}

/// A response sent before its request's body was read to the end (a refusal, say) says `Connection: close`, and the
/// connection closes after it (RFC 9112 9.6), lingering: what the client still sends is read and discarded for a
/// while, so that it gets the response rather than a reset. (hyper kept such a connection open if it could drain the
/// whole body at once, closed it otherwise, and a client that reused it had its next request fail.)
pub async fn close_if_body_unread(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(ReadToTheEnd {
            body,
            read: Arc::clone(&read),
        })
    });
    let lease = request.extensions().get::<ConnectionLease>().cloned();
    let mut response = next.run(request).await;
    if !read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        if let Some(lease) = lease {
            lease.linger_on_close();
        }
    }
    response
}

/// A request body that records when it has been read to its end.
struct ReadToTheEnd {
    body: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for ReadToTheEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// CORS for browser dashboards on the configured origins; none configured, no CORS headers at all.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::RANGE,
                header::IF_NONE_MATCH,
                header::IF_RANGE,
                header::HeaderName::from_static("apollo-require-preflight"),
                header::HeaderName::from_static("x-apollo-operation-name"),
                // Resumable (tus) uploads.
                header::HeaderName::from_static("tus-resumable"),
                header::HeaderName::from_static("upload-length"),
                header::HeaderName::from_static("upload-metadata"),
                header::HeaderName::from_static("upload-offset"),
                header::HeaderName::from_static("upload-checksum"),
            ])
            .expose_headers([
                header::ETAG,
                header::CONTENT_RANGE,
                header::CONTENT_DISPOSITION,
                header::HeaderName::from_static("x-request-id"),
                header::LOCATION,
                header::HeaderName::from_static("tus-resumable"),
                header::HeaderName::from_static("tus-version"),
                header::HeaderName::from_static("tus-max-size"),
                header::HeaderName::from_static("tus-extension"),
                header::HeaderName::from_static("upload-offset"),
                header::HeaderName::from_static("upload-length"),
                header::HeaderName::from_static("upload-expires"),
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

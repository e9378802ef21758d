//! Request bodies read to their very end before anything they carry is kept. A multipart reader stops at the
//! closing delimiter, so a body that then breaks off (short of its `Content-Length`, or chunked without its last
//! chunk) would look complete: [`Watched`] lets the handler read past the reader to the body's own end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use futures_util::{Stream, StreamExt};

use super::error::unreadable_body;
use crate::service::ServiceError;

/// Most bytes accepted after a multipart body's closing delimiter (its epilogue, which RFC 2046 says to ignore).
const MAX_EPILOGUE: usize = 64 * 1024;
/// Most bytes accepted before a multipart body's first delimiter (its preamble): the multipart reader searches all it
/// has buffered again as each chunk arrives, so a long preamble would cost quadratic time.
const MAX_PREAMBLE: usize = 64 * 1024;

#[derive(Default)]
struct State {
    stream: Option<BodyDataStream>,
    /// The body ended cleanly.
    ended: bool,
    /// The body broke off while the reader had it; the error went to the reader.
    broke: bool,
    /// Until the first delimiter has passed: looking for it.
    preamble: Option<Preamble>,
}

/// The search for a multipart body's first delimiter (`--` and the boundary), across chunks.
#[derive(Default)]
struct Preamble {
    delimiter: Vec<u8>,
    /// Bytes before the delimiter so far.
    seen: usize,
    /// The end of what came so far, where the start of the delimiter may be.
    tail: Vec<u8>,
}

impl Preamble {
    fn for_boundary(headers: &axum::http::HeaderMap) -> Option<Preamble> {
        let content_type = headers
            .get(axum::http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        let boundary = content_type.split(';').find_map(|param| {
            let (name, value) = param.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| value.trim().trim_matches('"').to_string())
        })?;
        Some(Preamble {
            delimiter: format!("--{boundary}").into_bytes(),
            ..Preamble::default()
        })
    }

    /// Whether the delimiter has now arrived; `Err` once the preamble is longer than allowed.
    fn found_in(&mut self, chunk: &[u8]) -> Result<bool, ()> {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        if window
            .windows(self.delimiter.len())
            .any(|w| w == self.delimiter.as_slice())
        {
            return Ok(true);
        }
        self.seen += chunk.len();
        if self.seen > MAX_PREAMBLE {
            return Err(());
        }
        let keep = self.delimiter.len().saturating_sub(1).min(window.len());
        self.tail = window.split_off(window.len() - keep);
        Ok(false)
    }
}

/// A request body shared by the reader it is handed to and the handler, which finishes it with
/// [`Watched::finish`].
#[derive(Clone)]
pub struct Watched(Arc<Mutex<State>>);

struct Shared(Arc<Mutex<State>>);

impl Stream for Shared {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.0.lock().expect("body lock");
        let Some(stream) = state.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let next = stream.poll_next_unpin(cx);
        match &next {
            Poll::Ready(None) => state.ended = true,
            Poll::Ready(Some(Err(_))) => state.broke = true,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(preamble) = state.preamble.as_mut() {
                    match preamble.found_in(chunk) {
                        Ok(true) => state.preamble = None,
                        Ok(false) => {}
                        Err(()) => {
                            state.broke = true;
                            state.stream = None;
                            return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!(
                                    "no multipart delimiter within the first {MAX_PREAMBLE} bytes of the body"
                                ),
                            )))));
                        }
                    }
                }
            }
            Poll::Pending => {}
        }
        next
    }
}

impl Watched {
    /// The request with its body shared, and the handle that finishes it.
    pub fn new(request: Request) -> (Request, Watched) {
        let (parts, body) = request.into_parts();
        let state = Arc::new(Mutex::new(State {
            stream: Some(body.into_data_stream()),
            preamble: Preamble::for_boundary(&parts.headers),
            ..State::default()
        }));
        let shared = Body::from_stream(Shared(state.clone()));
        (Request::from_parts(parts, shared), Watched(state))
    }

    /// Reads what is left of the body to its end: an error unless it ends cleanly (a client that stalls gets the
    /// body idle timeout's 408), or if more than a small epilogue follows what the reader took.
    pub async fn finish(self) -> Result<(), ServiceError> {
        let incomplete = || {
            ServiceError::InvalidInput(
                "the request body ended before its declared end (Content-Length or last chunk): nothing was \
                 kept"
                    .into(),
            )
        };
        let (stream, ended, broke) = {
            let mut state = self.0.lock().expect("body lock");
            (state.stream.take(), state.ended, state.broke)
        };
        if broke {
            return Err(incomplete());
        }
        let Some(mut stream) = stream.filter(|_| !ended) else {
            return Ok(());
        };
        let mut epilogue = 0;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    epilogue += chunk.len();
                    if epilogue > MAX_EPILOGUE {
                        return Err(ServiceError::InvalidInput(format!(
                            "more than {MAX_EPILOGUE} bytes follow the multipart body's closing delimiter"
                        )));
                    }
                }
                Err(e) => {
                    return Err(match unreadable_body(&e, String::new()) {
                        e @ ServiceError::RequestTimeout(_) => e,
                        _ => incomplete(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(chunks: Vec<Result<&'static [u8], std::io::Error>>) -> Request {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| c.map(Bytes::from_static))
                .collect::<Vec<_>>(),
        );
        Request::new(Body::from_stream(stream))
    }

    #[tokio::test]
    async fn a_body_must_end_cleanly() {
        // What the reader took, then a small epilogue to the end: complete.
        let (request, watched) = Watched::new(body_of(vec![Ok(b"form"), Ok(b"epilogue")]));
        let mut taken = request.into_body().into_data_stream();
        assert_eq!(taken.next().await.unwrap().unwrap(), "form");
        drop(taken);
        assert!(watched.finish().await.is_ok());
        // A body that breaks off after what the reader took.
        let (request, watched) = Watched::new(body_of(vec![
            Ok(b"form"),
            Err(std::io::Error::other("connection closed")),
        ]));
        let mut taken = request.into_body().into_data_stream();
        assert_eq!(taken.next().await.unwrap().unwrap(), "form");
        assert!(matches!(
            watched.finish().await,
            Err(ServiceError::InvalidInput(_))
        ));
        // A break the reader saw itself counts too.
        let (request, watched) = Watched::new(body_of(vec![Err(std::io::Error::other("reset"))]));
        let mut taken = request.into_body().into_data_stream();
        assert!(taken.next().await.unwrap().is_err());
        assert!(watched.finish().await.is_err());
        // An epilogue too long to be one.
        let big: &'static [u8] = Box::leak(vec![b'x'; MAX_EPILOGUE + 1].into_boxed_slice());
        let (_, watched) = Watched::new(body_of(vec![Ok(big)]));
        assert!(watched.finish().await.is_err());
    }

    #[tokio::test]
    async fn the_first_delimiter_must_come_early() {
        let multipart = |chunks| {
            let mut request = body_of(chunks);
            request.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("multipart/form-data; boundary=\"XyZ\""),
            );
            request
        };
        let filler: &'static [u8] = Box::leak(vec![b'p'; 40 * 1024].into_boxed_slice());
        // A preamble within the bound, the delimiter split across chunks: read as usual.
        let (request, _) = Watched::new(multipart(vec![
            Ok(filler),
            Ok(b"\r\n-"),
            Ok(b"-XyZ\r\n"),
            Ok(filler),
            Ok(filler),
        ]));
        let read: Vec<_> = request.into_body().into_data_stream().collect().await;
        assert!(read.iter().all(Result::is_ok));
        // Past the bound without a delimiter: the body fails there, and nothing can be kept.
        let (request, watched) = Watched::new(multipart(vec![
            Ok(filler),
            Ok(filler),
            Ok(b"\r\n--XyZ\r\n"),
        ]));
        let read: Vec<_> = request.into_body().into_data_stream().collect().await;
        assert!(read.last().unwrap().is_err());
        assert!(watched.finish().await.is_err());
    }
}

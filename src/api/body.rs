//! Request bodies read to their very end before anything they carry is kept. A multipart reader stops at the
//! closing delimiter, so a body that then breaks off (short of its `Content-Length`, or chunked without its last
//! chunk) would look complete: [`Watched`] lets the handler read past the reader to the body's own end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use futures_util::{Stream, StreamExt};

use super::limits::unreadable_body;
use crate::service::ServiceError;

/// Most bytes accepted after a multipart body's closing delimiter (its epilogue, which RFC 2046 says to ignore).
const MAX_EPILOGUE: usize = 64 * 1024;

#[derive(Default)]
struct State {
    stream: Option<BodyDataStream>,
    /// The body ended cleanly.
    ended: bool,
    /// The body broke off while the reader had it; the error went to the reader.
    broke: bool,
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
            _ => {}
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

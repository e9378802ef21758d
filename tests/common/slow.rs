#![allow(dead_code)] // shared by several test crates, each using a part
//! A client on a slow link: a raw HTTP/1.1 GET over a socket with a small receive buffer, read only when the test
//! says so, so that the server's side of a download stays in flight for as long as the test needs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Receive buffer of a slow client: the kernel then holds little of the response, and the server most of it.
const RECEIVE_BUFFER: u32 = 16 * 1024;

pub struct SlowDownload {
    stream: TcpStream,
    pub status: u16,
    pub content_length: Option<u64>,
    /// Body bytes received so far.
    pub body: Vec<u8>,
}

impl SlowDownload {
    /// Sends `GET path` (with `headers`) and reads the response head.
    pub async fn start(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SlowDownload {
        let mut stream = connect_slow(addr).await;
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte))
                .await
                .expect("the response head arrives")
                .unwrap();
            assert_eq!(n, 1, "the connection closed inside the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head[9..12].parse().unwrap();
        let content_length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        });
        SlowDownload {
            stream,
            status,
            content_length,
            body: Vec::new(),
        }
    }

    /// Reads until at least `n` body bytes have arrived in all.
    pub async fn read_at_least(&mut self, n: usize) {
        let mut buffer = vec![0u8; 64 * 1024];
        while self.body.len() < n {
            let read = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut buffer))
                .await
                .expect("the body keeps coming")
                .unwrap();
            assert!(
                read > 0,
                "the download was cut after {} bytes",
                self.body.len()
            );
            self.body.extend_from_slice(&buffer[..read]);
        }
    }

    /// Reads the rest of the body (as `Content-Length` gives it) and returns all of it.
    pub async fn finish(mut self) -> Vec<u8> {
        let length = self.content_length.expect("a content length") as usize;
        self.read_at_least(length).await;
        assert_eq!(self.body.len(), length, "no more than the content length");
        self.body
    }

    /// Reads whatever is left until the server closes or resets the connection, within `deadline`; returns the
    /// body bytes received in all, or `None` when the connection stayed open.
    pub async fn until_closed(mut self, deadline: Duration) -> Option<usize> {
        let mut buffer = vec![0u8; 64 * 1024];
        let outcome = tokio::time::timeout(deadline, async {
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => self.body.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        outcome.ok().map(|()| self.body.len())
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// A connection whose receive buffer is small, as a client on a slow link that reads rarely.
pub async fn connect_slow(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(RECEIVE_BUFFER).unwrap();
    socket.connect(addr).await.unwrap()
}

//! A GraphQL-over-WebSocket client for tests, speaking either subprotocol (`graphql-transport-ws` or the legacy
//! `graphql-ws`) as a real client would, with access to the close frame when the server ends the connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Both subprotocols, for tests that run over each.
pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

const WAIT: Duration = Duration::from_secs(10);

pub struct GraphqlSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: String,
    /// The close frame `receive` met, for `closed` to report.
    last_close: Option<(u16, String)>,
}

/// What reading the socket met.
enum Received {
    Message(Value),
    /// The connection is closing or closed.
    Closed,
    /// Nothing within the wait.
    Nothing,
}

/// How a server answered one operation or ended the connection.
#[derive(Debug)]
pub enum Outcome {
    /// The first result (`next` / `data`): its payload, with `data` and maybe `errors`.
    Result(Value),
    /// An `error` message for the operation: its payload.
    Error(Value),
    /// The connection was closed, with the code and reason of the close frame.
    Closed(u16, String),
}

impl Outcome {
    /// The `extensions.code` of the first error, if any.
    pub fn code(&self) -> Option<String> {
        let first = match self {
            Outcome::Result(payload) => &payload["errors"][0],
            Outcome::Error(payload) if payload.is_array() => &payload[0],
            Outcome::Error(payload) => payload,
            Outcome::Closed(..) => return None,
        };
        first["extensions"]["code"].as_str().map(str::to_string)
    }
}

impl GraphqlSocket {
    /// Opens a WebSocket to `/graphql` of the server at `addr` with `protocol`, or says the HTTP status that
    /// refused it.
    pub async fn connect(addr: SocketAddr, protocol: &str) -> Result<GraphqlSocket, u16> {
        Self::connect_from(addr, protocol, None).await
    }

    /// The same, as a browser on a page of `origin` would.
    pub async fn connect_from(
        addr: SocketAddr,
        protocol: &str,
        origin: Option<&str>,
    ) -> Result<GraphqlSocket, u16> {
        Self::connect_with(addr, protocol, origin, None).await
    }

    /// The same from another loopback address (`127.0.0.2`, say): another client, as the server sees it.
    pub async fn connect_as(addr: SocketAddr, protocol: &str, source: &str) -> GraphqlSocket {
        Self::connect_with(addr, protocol, None, Some(source))
            .await
            .expect("upgraded")
    }

    async fn connect_with(
        addr: SocketAddr,
        protocol: &str,
        origin: Option<&str>,
        source: Option<&str>,
    ) -> Result<GraphqlSocket, u16> {
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let connected = match source {
            Some(source) => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
                let stream = socket.connect(addr).await.unwrap();
                tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await
            }
            None => tokio_tungstenite::connect_async(request).await,
        };
        match connected {
            Ok((socket, _)) => Ok(GraphqlSocket {
                socket,
                protocol: protocol.to_string(),
                last_close: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("connecting a WebSocket: {e}"),
        }
    }

    /// Sends `connection_init` with `payload`; `Ok` once acknowledged, otherwise how the server refused.
    pub async fn init(&mut self, payload: Value) -> Result<(), Outcome> {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        loop {
            match self.receive().await {
                Some(message) if message["type"] == "connection_ack" => return Ok(()),
                Some(message) if message["type"] == "ka" => continue,
                Some(message) if message["type"] == "connection_error" => {
                    return Err(Outcome::Error(message["payload"].clone()));
                }
                Some(message) => panic!("unexpected before the acknowledgement: {message}"),
                None => return Err(self.closed().await),
            }
        }
    }

    /// Connects and initialises with a bearer token (or none).
    pub async fn open(
        addr: SocketAddr,
        protocol: &str,
        token: Option<&str>,
    ) -> Result<Self, Outcome> {
        let mut socket = Self::connect(addr, protocol).await.expect("upgraded");
        socket.init(Self::credentials(token)).await?;
        Ok(socket)
    }

    /// A client with one subscription: connects, initialises with `init` and starts operation `"1"`, `query`;
    /// `Err` with how the server refused the connection. Read it with [`GraphqlSocket::next_result`].
    pub async fn subscribe(
        addr: SocketAddr,
        protocol: &str,
        init: Value,
        query: &str,
    ) -> Result<Self, String> {
        let mut socket = Self::connect(addr, protocol)
            .await
            .map_err(|status| format!("HTTP {status}"))?;
        match socket.init(init).await {
            Ok(()) => {}
            Err(Outcome::Closed(code, reason)) => return Err(format!("{code} {reason}")),
            Err(refused) => return Err(format!("{refused:?}")),
        }
        socket.start("1", query, json!({})).await;
        Ok(socket)
    }

    /// The `data` of the next result of any operation, or its errors as `Err`; `None` when the operation completes,
    /// the connection closes, or nothing comes within `wait`.
    pub async fn next_result(&mut self, wait: Duration) -> Option<Result<Value, Value>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let message = match self.receive_within(left).await {
                Received::Message(message) => message,
                Received::Closed | Received::Nothing => return None,
            };
            match message["type"].as_str() {
                Some("next" | "data") => {
                    let payload = &message["payload"];
                    return Some(match payload.get("errors") {
                        Some(errors) => Err(errors.clone()),
                        None => Ok(payload["data"].clone()),
                    });
                }
                Some("error") => return Some(Err(message["payload"].clone())),
                Some("complete") => return None,
                _ => continue,
            }
        }
    }

    /// The `connection_init` payload that presents `token`.
    pub fn credentials(token: Option<&str>) -> Value {
        match token {
            Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
            None => json!({}),
        }
    }

    /// The raw socket, for tests that break the protocol's manners (pings without reading, say).
    pub fn raw(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.socket
    }

    /// Starts operation `id` (`subscribe`, or `start` in the legacy protocol).
    pub async fn start(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// Runs one operation and returns its first answer.
    pub async fn run(&mut self, id: &str, query: &str, variables: Value) -> Outcome {
        self.start(id, query, variables).await;
        self.outcome_of(id).await
    }

    /// The next answer for operation `id` (skipping others' messages and keep-alives).
    pub async fn outcome_of(&mut self, id: &str) -> Outcome {
        loop {
            let Some(message) = self.receive().await else {
                return self.closed().await;
            };
            if message["id"] != id {
                continue;
            }
            match message["type"].as_str() {
                Some("next" | "data") => return Outcome::Result(message["payload"].clone()),
                Some("error") => return Outcome::Error(message["payload"].clone()),
                _ => continue,
            }
        }
    }

    /// Ends operation `id` (`complete`, or `stop` in the legacy protocol).
    pub async fn stop(&mut self, id: &str) {
        let kind = if self.protocol == "graphql-ws" {
            "stop"
        } else {
            "complete"
        };
        self.send(json!({ "type": kind, "id": id })).await;
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        // A server that already closed may refuse the write; what it said is read by `closed`.
        let _ = self.socket.send(Message::text(text.to_string())).await;
    }

    /// The next JSON message, or `None` when the connection is closing or closed; fails the test when none comes
    /// within 10 s.
    pub async fn receive(&mut self) -> Option<Value> {
        match self.receive_within(WAIT).await {
            Received::Message(message) => Some(message),
            Received::Closed => None,
            Received::Nothing => panic!("no message within {WAIT:?}"),
        }
    }

    async fn receive_within(&mut self, wait: Duration) -> Received {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Received::Message(serde_json::from_str(&text).unwrap());
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.last_close = Some(
                        frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    return Received::Closed;
                }
                Ok(_) => return Received::Closed,
                Err(_) => return Received::Nothing,
            }
        }
    }

    /// How the server closed the connection (waiting for it to do so).
    pub async fn closed(&mut self) -> Outcome {
        while self.last_close.is_none() {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Outcome::Closed(code, reason);
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return Outcome::Closed(1006, "closed without a close frame".into()),
                Err(_) => panic!("the server did not close the connection within {WAIT:?}"),
            }
        }
        let (code, reason) = self.last_close.take().unwrap();
        Outcome::Closed(code, reason)
    }
}

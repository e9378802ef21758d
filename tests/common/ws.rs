//! A GraphQL-over-WebSocket client for tests, speaking either subprotocol (`graphql-transport-ws` or the legacy
//! `graphql-ws`) as a real client would, with access to the close frame when the server ends the connection.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;

/// Both subprotocols, for tests that run over each.
pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

const WAIT: Duration = Duration::from_secs(10);

pub struct GraphqlSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: String,
    /// The close frame `receive` met, for `closed` to report.
    last_close: Option<(u16, String)>,
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
    /// Opens a WebSocket to `/graphql` with `protocol`, or says the HTTP status that refused it.
    pub async fn connect(app: &TestApp, protocol: &str) -> Result<GraphqlSocket, u16> {
        Self::connect_from(app, protocol, None).await
    }

    /// The same, as a browser on a page of `origin` would.
    pub async fn connect_from(
        app: &TestApp,
        protocol: &str,
        origin: Option<&str>,
    ) -> Result<GraphqlSocket, u16> {
        let mut request = format!("ws://{}/graphql", app.addr)
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
        match tokio_tungstenite::connect_async(request).await {
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
    pub async fn open(app: &TestApp, protocol: &str, token: Option<&str>) -> Result<Self, Outcome> {
        let mut socket = Self::connect(app, protocol).await.expect("upgraded");
        let payload = match token {
            Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        socket.init(payload).await?;
        Ok(socket)
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

    /// The next JSON message, or `None` when the connection is closing or closed.
    pub async fn receive(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(&text).unwrap());
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.last_close = Some(
                        frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    return None;
                }
                Ok(_) => return None,
                Err(_) => panic!("no message within {WAIT:?}"),
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

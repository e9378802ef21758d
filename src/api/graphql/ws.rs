//! GraphQL subscriptions over WebSocket at `GET /graphql` (graphql-transport-ws and the legacy graphql-ws): the
//! bearer token comes in the `connection_init` payload, since browsers cannot set headers on a WebSocket.

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::auth::{Need, Tokens};
use crate::api::error::ApiError;

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The token of `connection_init`'s payload (`Authorization`, any case), checked like a request header.
fn authorize(tokens: &Tokens, payload: &serde_json::Value) -> async_graphql::Result<()> {
    let presented = payload.as_object().and_then(|fields| {
        fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| value.as_str())
    });
    let mut headers = HeaderMap::new();
    if let Some(value) = presented.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    tokens.check(&headers, Need::Read).map_err(|e| {
        let message = match e {
            ApiError::Unauthenticated(m) | ApiError::Forbidden(m) => m,
            _ => "not allowed".into(),
        };
        async_graphql::Error::new(message)
    })
}

/// `GET /graphql`: a WebSocket upgrade for subscriptions, otherwise a query in the query string.
pub async fn graphql_ws(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if !wants_websocket(&parts.headers) {
        let query = RawQuery(parts.uri.query().map(str::to_string));
        return super::http::graphql_get(State(state), parts.headers, query).await;
    }
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
        Ok(protocol) => protocol,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let schema = state.schema.clone();
    let tokens = state.tokens.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    authorize(&tokens, &payload).map(|()| Data::default())
                })
                .serve()
        })
}

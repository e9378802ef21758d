"""Schemathesis hooks for the fuzz run (scripts/fuzz.sh).

- `no_server_fault`: the bar of the fuzz run. No 5xx, and no GraphQL error other than a client error with its code:
  this API reports client mistakes as GraphQL errors with `extensions.code` (INVALID_INPUT, NOT_FOUND, ...), which
  Schemathesis' own GraphQL check counts as server failures, so that check is replaced by this one.
- strategies for the GraphQL scalars Schemathesis does not know, and the media type of tus PATCH bodies.
"""

import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

# Every code whose HTTP status is a 4xx (src/api/error.rs): what the client asked cannot be done as asked.
CLIENT_CODES = {
    "INVALID_INPUT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "CONFLICT",
    "IMMUTABLE",
    "CHECKSUM_MISMATCH",
    "PAYLOAD_TOO_LARGE",
    "RANGE_NOT_SATISFIABLE",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "METHOD_NOT_ALLOWED",
    "UNSUPPORTED_MEDIA_TYPE",
    "PRECONDITION_FAILED",
    "EVENTS_EXPIRED",
    "EVENTS_AHEAD",
    "READ_ONLY_MIRROR",
    "LIMIT_EXCEEDED",
    "TOO_MANY_UPLOAD_SESSIONS",
}


@schemathesis.check
def no_server_fault(ctx, response, case):
    if response.status_code >= 500:
        raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")
    try:
        body = response.json()
    except Exception:
        return None
    if not isinstance(body, dict):
        return None
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code not in CLIENT_CODES:
            raise AssertionError(f"an error that is not a client error: {error}")
    return None


schemathesis.graphql.scalar("Long", st.integers(min_value=0, max_value=2**53).map(nodes.Int))
schemathesis.graphql.scalar(
    "DateTime", st.datetimes().map(lambda t: nodes.String(t.isoformat() + "Z"))
)
schemathesis.graphql.scalar("JSON", st.integers().map(nodes.Int) | st.text(max_size=20).map(nodes.String))
# A file can only come in a multipart request: in JSON, whatever stands for it must be refused as a client error.
schemathesis.graphql.scalar("Upload", st.text(max_size=10).map(nodes.String) | st.just(nodes.Null))
# tus PATCH bodies are raw bytes (`application/offset+octet-stream`): sent as Schemathesis sends octet-streams.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

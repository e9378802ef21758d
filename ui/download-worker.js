// The catalogue's download worker (scope /ui/download/): it lets a download that needs the read token stream to
// disk like a plain link. The page posts it the file's URL and the token; it answers with a one-time address
// under its scope, which the page opens; the worker fetches the file with the token and hands the browser the
// response as it streams in. The token stays in this worker's memory for one download, and never in a URL.

const SCOPE = new URL("./download/", self.location).pathname;
/** How long a prepared download waits to be opened. */
const EXPIRY_MS = 60_000;
/** id -> { url, token, port, expires } */
const pending = new Map();

// A new version takes over at once: a download prepared by the old one is answered by neither, and retried.
self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("message", (event) => {
  const port = event.ports[0];
  const { url, token } = event.data || {};
  if (!port) return;
  let target;
  try {
    target = new URL(url, self.location);
  } catch {
    port.postMessage({ error: "not a URL" });
    return;
  }
  // The token goes to this server only.
  if (target.origin !== self.location.origin || typeof token !== "string") {
    port.postMessage({ error: "not a download of this server" });
    return;
  }
  const now = Date.now();
  for (const [id, entry] of pending) if (entry.expires < now) pending.delete(id);
  const id = crypto.randomUUID();
  pending.set(id, { url: target.href, token, port, expires: now + EXPIRY_MS });
  port.postMessage({ href: `${SCOPE}${id}` });
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (!url.pathname.startsWith(SCOPE)) return;
  const id = url.pathname.slice(SCOPE.length);
  const entry = pending.get(id);
  pending.delete(id);
  event.respondWith(serve(entry));
});

/** The file's response as it streams in; a failure goes back to the page, and the page stays where it is. */
async function serve(entry) {
  if (!entry || entry.expires < Date.now()) return nothing();
  const headers = entry.token ? { authorization: `Bearer ${entry.token}` } : {};
  let response;
  try {
    response = await fetch(entry.url, { headers, cache: "no-store" });
  } catch (error) {
    entry.port.postMessage({ failed: { code: "NETWORK", detail: String(error.message || error) } });
    return nothing();
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    entry.port.postMessage({ failed: { status: response.status, code: body.code, detail: body.detail } });
    return nothing();
  }
  entry.port.postMessage({ started: true });
  // The server's own response, body untouched: its Content-Disposition makes the browser save it.
  return response;
}

/** 204: a navigation that gets it does not leave the page. */
function nothing() {
  return new Response(null, { status: 204 });
}

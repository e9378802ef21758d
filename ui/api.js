// The catalogue's only way to the server: the public GraphQL API at /graphql and resumable uploads at /uploads
// (tus), with the bearer token of this browser session when one is set.

const TOKEN_KEY = "component-repository.token";

/** The token of this tab, else the one remembered on this device (opt-in), else none. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
}

export function remembered() {
  return Boolean(localStorage.getItem(TOKEN_KEY));
}

/**
 * Kept for this browser tab's session only, unless `remember`: then in localStorage, which every tab of this
 * origin shares (and sees change through the `storage` event) until "Forget".
 */
export function setToken(value, remember = false) {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
  if (value && remember) localStorage.setItem(TOKEN_KEY, value);
  else if (value) sessionStorage.setItem(TOKEN_KEY, value);
}

function authorization(withToken = true) {
  const value = withToken ? token() : "";
  return value ? { authorization: `Bearer ${value}` } : {};
}

export class ApiError extends Error {
  constructor(code, message, status, extensions = {}) {
    super(message);
    this.code = code;
    this.status = status;
    this.extensions = extensions;
  }
}

/** What a person should read for each error code the API answers with. */
const ADVICE = {
  UNAUTHENTICATED: "This server needs a token: enter a read or write token.",
  FORBIDDEN: "Your token can only read: changes need a write token.",
  NOT_FOUND: "It is not (or no longer) in the repository.",
  ALREADY_EXISTS: "A component with this key already exists.",
  INVALID_INPUT: "The server refused the input.",
  CONFLICT: "The repository refused the change as things stand: the message says why.",
  STALE: "Someone else changed it since you opened the form: compare below, then save yours over it or cancel.",
  NOT_SENT: "Checked in this browser: nothing was sent to the server.",
  IMMUTABLE: "Its file is locked: it can no longer be replaced, nor the component deleted.",
  PAYLOAD_TOO_LARGE: "The file is larger than this server accepts (its --max-upload-size).",
  REQUEST_TIMEOUT: "The upload stalled and the server gave up waiting for it.",
  TIMEOUT: "The server took too long to answer; try again.",
  UNAVAILABLE: "The storage behind the server is unavailable; try again shortly.",
  INTERNAL: "The server failed; its log has the details.",
  NETWORK: "The server could not be reached.",
  ABORTED: "Cancelled.",
};

export function advice(error) {
  return ADVICE[error.code] || "Something went wrong.";
}

/** The code of an HTTP status, for answers without a GraphQL body (from a proxy, say). */
const STATUS_CODES = {
  401: "UNAUTHENTICATED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  408: "REQUEST_TIMEOUT",
  413: "PAYLOAD_TOO_LARGE",
  503: "UNAVAILABLE",
  504: "TIMEOUT",
};

/** The GraphQL errors of a response body, or its data. */
function unwrap(body, status) {
  if (!body || typeof body !== "object") {
    const code = STATUS_CODES[status] || (status >= 500 ? "INTERNAL" : "INVALID_INPUT");
    throw new ApiError(code, `The server answered ${status} without a GraphQL body.`, status);
  }
  if (Array.isArray(body.errors) && body.errors.length > 0) {
    const first = body.errors[0];
    throw new ApiError(first.extensions?.code || "INTERNAL", first.message, status, first.extensions || {});
  }
  return body.data;
}

export async function gql(query, variables = {}, { withToken = true } = {}) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", ...authorization(withToken) },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    throw new ApiError("NETWORK", String(error.message || error));
  }
  const body = await response.json().catch(() => null);
  return unwrap(body, response.status);
}

/** An ApiError from a failed tus request: the server's JSON body when there is one, else its status. */
function tusError(error) {
  const response = error.originalResponse;
  if (!response) return new ApiError("NETWORK", "The upload was interrupted; upload the same file again to resume.");
  const status = response.getStatus();
  let body = null;
  try {
    body = JSON.parse(response.getBody());
  } catch {
    // Not JSON: a proxy's page, say.
  }
  const code = body?.code || STATUS_CODES[status] || (status >= 500 ? "INTERNAL" : "INVALID_INPUT");
  const detail = typeof body?.detail === "string" ? body.detail : `The server answered ${status}.`;
  return new ApiError(code, detail, status);
}

/**
 * Uploads `file` as the file of a component with tus (the global `tus` of the vendored tus-js-client), so that a
 * broken connection, or a reload of the page followed by choosing the same file again, resumes where the server
 * stands instead of starting over: the client keeps each unfinished upload's URL in localStorage, keyed by the
 * file's name, type, size and modification time. `target` is `{ name, version }` for a model, else `{ kind, id }`.
 * Returns `{ done, abort }`; `onProgress(sent, total)` follows the upload; `abort()` ends the session.
 */
export function resumableUpload(target, file, onProgress) {
  let upload;
  let cancel;
  const done = new Promise((resolve, reject) => {
    cancel = () => reject(new ApiError("ABORTED", "The upload was cancelled."));
    upload = new window.tus.Upload(file, {
      endpoint: new URL("/uploads", window.location.href).href,
      metadata: { ...target, filename: file.name, filetype: file.type || "application/octet-stream" },
      headers: authorization(),
      removeFingerprintOnSuccess: true,
      retryDelays: [0, 1000, 3000, 5000],
      onProgress,
      onSuccess: () => resolve(),
      onError: (error) => reject(tusError(error)),
    });
    upload
      .findPreviousUploads()
      .then((previous) => {
        if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      })
      .catch((error) => reject(tusError(error)));
  });
  const abort = () => {
    upload.abort(true).catch(() => {});
    cancel();
  };
  // Stops sending but keeps the server's session and this browser's note of it, so it can resume later.
  const pause = () => {
    upload.abort(false).catch(() => {});
    cancel();
  };
  return { done, abort, pause };
}

/**
 * The unfinished uploads this browser remembers (tus-js-client's notes in localStorage) whose metadata `matches`:
 * each `{ urlStorageKey, uploadUrl, size, metadata, creationTime }`.
 */
export async function unfinishedUploads(matches) {
  const storage = window.tus?.defaultOptions?.urlStorage;
  if (!storage?.findAllUploads) return [];
  const all = await storage.findAllUploads();
  return all.filter((entry) => matches(entry.metadata || {}));
}

/** Forgets an unfinished upload here and ends its session on the server (whose answer does not matter). */
export async function discardUpload(entry) {
  await window.tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey);
  if (entry.uploadUrl) {
    await fetch(entry.uploadUrl, { method: "DELETE", headers: { "tus-resumable": "1.0.0", ...authorization() } })
      .catch(() => {});
  }
}

/**
 * What this browser may do, found with two operations that change nothing: a read of `__typename`, and a
 * mutation selecting only `__typename` (checked against the token like any mutation, but with no effect).
 */
export async function probeAccess() {
  const refused = (error) => error.code === "UNAUTHENTICATED" || error.code === "FORBIDDEN";
  const attempt = async (query, withToken) => {
    try {
      await gql(query, {}, { withToken });
      return { ok: true };
    } catch (error) {
      if (refused(error)) return { ok: false, error };
      throw error;
    }
  };
  const anonymous = await attempt("query ReadProbe { __typename }", false);
  const publicReads = anonymous.ok;
  const read = token() ? await attempt("query ReadProbe { __typename }", true) : anonymous;
  if (!read.ok) return { read: false, write: false, publicReads, error: read.error };
  const write = await attempt("mutation WriteProbe { __typename }", true);
  return { read: true, write: write.ok, publicReads, open: publicReads && write.ok && !token() };
}

/**
 * The download worker's registration (`download-worker.js`), made on first use: null where this browser has no
 * service workers (they need HTTPS or localhost) or refuses one.
 */
let downloadWorker;

export function streamingDownloads() {
  downloadWorker ??= registerDownloadWorker();
  return downloadWorker;
}

async function registerDownloadWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    const registration = await navigator.serviceWorker.register("/ui/download-worker.js", { scope: "/ui/download/" });
    const worker = registration?.active || registration?.waiting || registration?.installing;
    if (!worker) return null;
    if (worker.state === "activated") return registration;
    return await new Promise((resolve) => {
      worker.addEventListener("statechange", () => {
        if (worker.state === "activated") resolve(registration);
        if (worker.state === "redundant") resolve(registration.active ? registration : null);
      });
      setTimeout(() => resolve(registration.active ? registration : null), 10_000);
    });
  } catch {
    return null;
  }
}

function downloadError(failed) {
  const code = failed.code || STATUS_CODES[failed.status] || (failed.status >= 500 ? "INTERNAL" : "NETWORK");
  const detail = failed.detail || (failed.status ? `The download answered ${failed.status}.` : "The download failed.");
  return new ApiError(code, detail, failed.status);
}

/**
 * Saves a download that needs the token (a link cannot send a header). With the download worker, the browser
 * streams the file to disk as it does for a link: the page posts the worker the URL and the token, gets a
 * one-time address back and opens it in a hidden frame. Without one, the file is fetched into the page's
 * memory and saved from there, which `Download` says next to the button.
 */
export async function downloadWithToken(url, filename) {
  const target = new URL(url, window.location.href);
  const registration = target.origin === window.location.origin ? await streamingDownloads() : null;
  // The active worker of the moment: an upgrade replaces it.
  if (registration?.active) return streamThroughWorker(registration.active, target.href);
  return downloadIntoMemory(target.href, filename);
}

function streamThroughWorker(worker, url) {
  return new Promise((resolve, reject) => {
    const channel = new MessageChannel();
    let frame;
    // The worker answers the frame's address, then whether the file started; a worker restarted in between
    // has forgotten the download and answers nothing.
    const silence = setTimeout(() => finish(new ApiError("NETWORK", "The download did not start; try again.")), 15_000);
    const finish = (error) => {
      clearTimeout(silence);
      channel.port1.close();
      // Once started, the download is the browser's: it outlives the frame (a 45 s one did, in Chromium 156).
      setTimeout(() => frame?.remove(), 1_000);
      if (error) reject(error);
      else resolve();
    };
    channel.port1.onmessage = ({ data }) => {
      if (data.error) finish(new ApiError("INVALID_INPUT", data.error));
      else if (data.failed) finish(downloadError(data.failed));
      else if (data.started) finish();
      else if (data.href) {
        frame = document.createElement("iframe");
        frame.hidden = true;
        frame.title = "download";
        frame.src = data.href;
        document.body.append(frame);
      }
    };
    worker.postMessage({ url, token: token() }, [channel.port2]);
  });
}

async function downloadIntoMemory(url, filename) {
  let response;
  try {
    response = await fetch(url, { headers: authorization() });
  } catch (error) {
    throw new ApiError("NETWORK", String(error.message || error));
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw downloadError({ status: response.status, code: body.code, detail: body.detail });
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

// Follows the change feed (`GET /events`, Server-Sent Events) so a list updates live. Without a token the
// browser's EventSource does it; with one, a fetch reads the stream, since an EventSource cannot send a header.
// Either way a broken stream is reopened with backoff from the last sequence seen, so no change is missed.

import { useEffect, useRef, useState } from "preact/hooks";
import { token } from "./api.js";
import { html } from "./format.js";

/** The event types of the feed: EventSource delivers named events only to listeners of that name. */
const TYPES = [
  "created", "updated", "file_uploaded", "file_replaced", "deleted", "locked", "alias_set", "alias_deleted",
  "rollout_started", "rollout_class_aborted", "rollout_ended",
];
const MAX_BACKOFF_MS = 30_000;

/**
 * Opens the feed of `kind` and calls `onChange` for each event and each (re)connect (a change may have come
 * between the list's load and the stream's start). Returns a function that closes it for good.
 * `onState` gets "connecting", "live" or "retrying".
 */
export function follow(kind, withToken, onChange, onState) {
  let lastId = null;
  let stopped = false;
  let failures = 0;
  let timer = null;
  let close = () => {};

  const url = () => `/events?kinds=${kind}${lastId === null ? "" : `&after=${lastId}`}`;
  const opened = () => {
    failures = 0;
    onState("live");
    onChange();
  };
  const received = (id) => {
    if (id) lastId = id;
    onChange();
  };
  const retry = (expired = false) => {
    close();
    if (stopped) return;
    // A resume point the server no longer keeps (410 EVENTS_EXPIRED) fails every time: after it, or two failures
    // in a row (an EventSource hides the status), start from now; the reload on opening covers the gap.
    if (expired || failures >= 2) lastId = null;
    onState("retrying");
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** failures);
    failures += 1;
    timer = setTimeout(connect, delay);
  };

  const viaEventSource = () => {
    const source = new EventSource(url());
    source.onopen = opened;
    for (const type of TYPES) source.addEventListener(type, (event) => received(event.lastEventId));
    // The browser retries on its own while it can; once it gives up (an error status), so do we, with backoff.
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) retry();
      else onState("retrying");
    };
    close = () => source.close();
  };

  const viaFetch = () => {
    const controller = new AbortController();
    close = () => controller.abort();
    const headers = { authorization: `Bearer ${token()}`, accept: "text/event-stream" };
    if (lastId !== null) headers["last-event-id"] = lastId;
    fetch(url(), { headers, signal: controller.signal })
      .then(async (response) => {
        if (response.status === 410) return retry(true);
        if (!response.ok || !response.body) throw new Error(`the feed answered ${response.status}`);
        opened();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let id = null;
        let named = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          const lines = buffer.split(/\r\n|\r|\n/);
          buffer = lines.pop();
          for (const line of lines) {
            // An event ends at a blank line; comment lines (heartbeats) start with ':'.
            if (line === "") {
              if (named) received(id);
              id = null;
              named = false;
            } else if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("event:")) named = TYPES.includes(line.slice(6).trim());
          }
        }
        throw new Error("the feed ended");
      })
      .catch(() => {
        if (!controller.signal.aborted) retry();
      });
  };

  function connect() {
    if (stopped) return;
    onState("connecting");
    if (withToken && token()) viaFetch();
    else viaEventSource();
  }

  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    close();
  };
}

/** Follows `kind` while the component is shown; `reload` runs at most every 300 ms while events come in. */
export function useLiveReload(kind, enabled, withToken, reload) {
  const [state, setState] = useState(null);
  const latest = useRef(reload);
  latest.current = reload;
  useEffect(() => {
    if (!enabled) return undefined;
    let pending = null;
    const changed = () => {
      pending ??= setTimeout(() => {
        pending = null;
        latest.current();
      }, 300);
    };
    const stop = follow(kind, withToken, changed, setState);
    return () => {
      stop();
      clearTimeout(pending);
      setState(null);
    };
  }, [kind, enabled, withToken]);
  return state;
}

export function LiveBadge({ state }) {
  if (!state) return null;
  const text = { connecting: "Connecting to live updates…", live: "Live", retrying: "Live updates paused: reconnecting…" }[state];
  return html`<span class=${`feed ${state}`} title="The list updates itself when components change">${text}</span>`;
}

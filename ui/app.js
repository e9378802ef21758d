// The catalogue's shell: the header with the token field, hash routes to the pages, and what this browser may
// do (read, write), which decides between the full and the read-only view.

import { render } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { probeAccess, remembered, setToken, token } from "./api.js";
import { Catalogue, CreateForm, SearchPage } from "./catalogue.js";
import { ModelPage } from "./model.js";
import { ComponentPage } from "./component.js";
import { DevicePage } from "./device.js";
import { ErrorBox, KINDS, KIND_NAMES, html } from "./format.js";

/** `#/services?search=x` -> { parts: ["services"], params }. */
function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter((part) => part !== "").map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const changed = () => setRoute(parseHash());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

/**
 * The token: in the header, folded behind "Set token" / "Change token" so the header keeps to one row; on the
 * sign-in page (`expanded`), the whole form.
 */
function TokenForm({ access, onChange, expanded = false }) {
  // The field empties once a token is in use: the badge and "Forget" say that one is.
  const [value, setValue] = useState("");
  const [remember, setRemember] = useState(remembered);
  const [open, setOpen] = useState(false);
  const submit = (event) => {
    event.preventDefault();
    setToken(value.trim(), remember);
    setValue("");
    setOpen(false);
    onChange();
  };
  const forget = () => {
    setValue("");
    setToken("");
    setRemember(false);
    onChange();
  };
  const inUse = Boolean(token());
  const field = expanded || open;
  return html`<form class=${expanded ? "token signin" : "token"} onSubmit=${submit}>
    ${field && html`<label for="token">Token</label>
      <input id="token" type="password" autocomplete="off" spellcheck="false" value=${value}
        onInput=${(e) => setValue(e.currentTarget.value)} />
      <label class="check remember"><input type="checkbox" checked=${remember}
        onChange=${(e) => setRemember(e.currentTarget.checked)} /> Remember on this device</label>
      <button type="submit">Use</button>`}
    ${!field && html`<button type="button" class="secondary" onClick=${() => setOpen(true)}>
      ${inUse ? "Change token" : "Set token"}</button>`}
    ${inUse && html`<button type="button" class="secondary" onClick=${forget}>Forget</button>`}
    ${!expanded && html`<${AccessBadge} access=${access} />`}
  </form>`;
}

function AccessBadge({ access }) {
  let text = "Checking access…";
  let tone = "neutral";
  if (access?.failed) [text, tone] = ["Server unreachable", "bad"];
  else if (access && !access.read) [text, tone] = [token() ? "Token not accepted" : "Token needed", "bad"];
  else if (access?.open) [text, tone] = ["Open: no token needed", "good"];
  else if (access?.write) [text, tone] = ["Read and write", "good"];
  else if (access) [text, tone] = [token() ? "Read-only token" : "Read-only: public reads", "neutral"];
  return html`<span class=${`badge ${tone}`} role="status">${text}</span>`;
}

function NotFound() {
  return html`<section><h1 tabindex="-1">Page not found</h1><p><a href="#/models">Back to the catalogue</a></p></section>`;
}

function Page({ route, access, notify }) {
  const [first, ...rest] = route.parts;
  const props = { params: route.params, access, notify };
  if (!first) return html`<${Catalogue} kind="model" ...${props} />`;
  const listed = KIND_NAMES.find((kind) => KINDS[kind].list === first);
  if (listed) return html`<${Catalogue} kind=${listed} ...${props} />`;
  if (first === "device") return html`<${DevicePage} ...${props} />`;
  // Keyed by the query, so a new search (or Back) starts the form from the address.
  if (first === "search") return html`<${SearchPage} key=${route.params.toString()} ...${props} />`;
  if (first === "model" && rest.length === 1) return html`<${ModelPage} key=${rest[0]} name=${rest[0]} ...${props} />`;
  if (first === "new" && KINDS[rest[0]]) return html`<${CreateForm} kind=${rest[0]} ...${props} />`;
  if (KINDS[first] && rest.length === KINDS[first].key.length) {
    return html`<${ComponentPage} key=${route.parts.join("/")} kind=${first} keys=${rest} ...${props} />`;
  }
  return html`<${NotFound} />`;
}

function App() {
  const route = useRoute();
  const [access, setAccess] = useState(null);
  const [accessError, setAccessError] = useState(null);
  // A message for one page: "Saved." on the component, "Deleted." on the list a deletion leads to.
  const [notice, setNotice] = useState(null);
  const main = useRef(null);

  const checkAccess = useCallback(() => {
    setAccess(null);
    probeAccess()
      .then((found) => {
        setAccess(found);
        setAccessError(found.read ? null : found.error);
      })
      .catch((error) => {
        setAccess({ read: false, write: false, failed: true });
        setAccessError(error);
      });
  }, []);
  useEffect(checkAccess, [checkAccess]);
  // A token remembered (or forgotten) in another tab of this device applies here too.
  useEffect(() => {
    const changed = (event) => {
      if (event.key === null || event.key === "component-repository.token") checkAccess();
    };
    window.addEventListener("storage", changed);
    return () => window.removeEventListener("storage", changed);
  }, [checkAccess]);
  // On a phone the links and the token fold into a menu, so the header stays one short row.
  const [menu, setMenu] = useState(false);

  // A new page moves the focus to its heading, so keyboard and screen-reader users start there, and names the
  // browser tab and history entry after it.
  // The first page leaves the focus where browsers put it, so that the first Tab reaches "Skip to content".
  const path = route.parts.join("/");
  const landed = useRef(false);
  useEffect(() => {
    setNotice((current) => (current?.path === path ? current : null));
    const heading = main.current?.querySelector("h1");
    if (!heading) return;
    document.title = `${heading.textContent.trim()} · component-repository`;
    if (landed.current) heading.focus();
    landed.current = true;
  }, [path, access?.read]);

  const notify = useCallback(
    (text, target) => setNotice({ text, path: target ?? parseHash().parts.join("/") }),
    [],
  );
  const section = route.parts[0] === "device" ? "device" : route.parts[0] === "search" ? "search" : "catalogue";
  useEffect(() => setMenu(false), [path]);

  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); main.current?.querySelector("h1")?.focus(); }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/models">component-repository</a>
      <button type="button" class="menu-button" aria-expanded=${menu} aria-controls="top-menu"
        onClick=${() => setMenu(!menu)}>Menu</button>
      <div id="top-menu" class=${menu ? "menu open" : "menu"}>
        <nav aria-label="Main">
          <a href="#/models" aria-current=${section === "catalogue" ? "page" : undefined}>Catalogue</a>
          <a href="#/search" aria-current=${section === "search" ? "page" : undefined}>Search</a>
          <a href="#/device" aria-current=${section === "device" ? "page" : undefined}>What can this device run?</a>
          <a href="/docs">REST API</a>
          <a href="/playground">GraphQL playground</a>
        </nav>
        ${access?.read
          ? html`<${TokenForm} access=${access} onChange=${checkAccess} />`
          : html`<span class="token"><${AccessBadge} access=${access} /></span>`}
      </div>
    </header>
    <main id="main" ref=${main}>
      ${notice?.path === path && html`<p class="notice" role="status">${notice.text}</p>`}
      ${access === null
        ? html`<p class="muted">Loading…</p>`
        : !access.read
          ? html`<section><h1 tabindex="-1">Sign in with a token</h1><${ErrorBox} error=${accessError} />
              <${TokenForm} access=${access} onChange=${checkAccess} expanded=${true} />
              <p>Enter a read token to browse, or a write token to make changes; the page keeps it for this
              browser tab only, unless you tick "Remember on this device" (then every tab of this browser uses it
              until "Forget").</p></section>`
          : html`<${Page} route=${route} access=${access} notify=${notify} />`}
    </main>`;
}

render(html`<${App} />`, document.getElementById("app"));

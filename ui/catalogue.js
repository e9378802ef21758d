// The catalogue: one tab per kind, a filter form whose values live in the page's address (so a filtered view
// can be bookmarked or shared), and cursor paging. `load` is the one place a list is fetched, so a change feed
// can later call it to update the list live.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { gql, token } from "./api.js";
import { LiveBadge, useLiveReload } from "./live.js";
import {
  Breakable, ErrorBox, FileView, KINDS, KIND_NAMES, NeedsView, componentHref, html, keyOf, number, plural, title,
} from "./format.js";

const PAGE_SIZE = 20;

/** The GraphQL filter of a list from the address's parameters. */
export function filterFrom(kind, params) {
  const spec = KINDS[kind];
  const filter = {};
  const search = params.get("search")?.trim();
  if (search) filter.search = search;
  const name = params.get("name")?.trim();
  if (kind === "model" && name) filter.name = name;
  const library = params.get("library")?.trim();
  if (spec.hasLibrary && library) filter.library = library;
  if (spec.hasNeeds) {
    const needs = {};
    if (params.get("gpu") === "yes") needs.gpu = true;
    if (params.get("gpu") === "no") needs.gpu = false;
    const maxRam = number(params.get("maxRam"));
    if (maxRam !== null) needs.maxRam = maxRam;
    const maxStorage = number(params.get("maxStorage"));
    if (maxStorage !== null) needs.maxStorage = maxStorage;
    const needsLibrary = params.get("needsLibrary")?.trim();
    if (needsLibrary) {
      needs.libraries = [{ name: needsLibrary, version: params.get("version")?.trim() || null }];
    }
    if (Object.keys(needs).length > 0) filter.needs = needs;
  }
  return filter;
}

function FilterForm({ kind, params }) {
  const spec = KINDS[kind];
  const [values, setValues] = useState(() => Object.fromEntries(params));
  useEffect(() => setValues(Object.fromEntries(params)), [kind, params.toString()]);
  const field = (name) => ({
    id: `filter-${name}`,
    name,
    value: values[name] ?? "",
    onInput: (e) => setValues({ ...values, [name]: e.currentTarget.value }),
  });
  const submit = (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, value] of Object.entries(values)) if (String(value).trim() !== "") next.set(name, value);
    const query = next.toString();
    window.location.hash = `#/${spec.list}${query ? `?${query}` : ""}`;
  };
  const reset = () => {
    window.location.hash = `#/${spec.list}`;
  };
  return html`<form class="filters" role="search" aria-label=${`Filter ${spec.label.toLowerCase()}`} onSubmit=${submit}>
    <div class="field grow">
      <label for="filter-search">Search</label>
      <input type="search" placeholder="text in the id or description" ...${field("search")} />
    </div>
    ${spec.hasLibrary && html`<div class="field">
      <label for="filter-library">Library</label>
      <input placeholder=${kind === "model" ? "keras" : "torch"} ...${field("library")} />
    </div>`}
    ${spec.hasNeeds && html`
      <div class="field">
        <label for="filter-gpu">GPU</label>
        <select ...${field("gpu")}>
          <option value="">any</option>
          <option value="yes">needs a GPU</option>
          <option value="no">needs no GPU</option>
        </select>
      </div>
      <div class="field small">
        <label for="filter-maxRam">Max RAM (GB)</label>
        <input type="number" min="0" step="any" inputmode="decimal" ...${field("maxRam")} />
      </div>
      <div class="field small">
        <label for="filter-maxStorage">Max storage (GB)</label>
        <input type="number" min="0" step="any" inputmode="decimal" ...${field("maxStorage")} />
      </div>
      <div class="field">
        <label for="filter-needsLibrary">Needs library</label>
        <input placeholder="tensorflow" ...${field("needsLibrary")} />
      </div>
      <div class="field">
        <label for="filter-version">Version or range</label>
        <input placeholder=">=2.12,<3" ...${field("version")} />
      </div>`}
    <div class="actions">
      <button type="submit">Filter</button>
      <button type="button" class="secondary" onClick=${reset}>Clear</button>
    </div>
  </form>`;
}

function Card({ kind, component, access, onError }) {
  const spec = KINDS[kind];
  return html`<li class="card">
    <h3><a href=${componentHref(kind, keyOf(kind, component))}><${Breakable} text=${title(kind, component)} /></a></h3>
    <p class=${component.description ? "" : "muted"}>${component.description || "No description."}</p>
    ${spec.hasLibrary && component.library && html`<p class="meta">Library: ${component.library}</p>`}
    ${component.aliases?.length > 0 && html`<p class="meta">Aliases: ${component.aliases.join(", ")}</p>`}
    ${kind === "model" && html`<p class="meta"><a href=${`#/model/${encodeURIComponent(component.name)}`}>All versions
      of ${component.name}</a></p>`}
    ${spec.hasNeeds && html`<${NeedsView} needs=${component.needs} />`}
    <${FileView} file=${component.file} access=${access} onError=${onError} />
  </li>`;
}

export function Catalogue({ kind, params, access }) {
  const spec = KINDS[kind];
  const filterKey = `${kind}?${params.toString()}`;
  // `after` cursors of the pages seen so far; the last is the page shown.
  const [cursors, setCursors] = useState([null]);
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  // Only the newest request may show its answer: a live update may still be under way when the page changes.
  const requests = useRef(0);

  useEffect(() => setCursors([null]), [filterKey]);
  const after = cursors[cursors.length - 1];

  // `quiet`: a live update keeps the list shown (and the focus in it) instead of saying "Loading…".
  const load = useCallback((quiet) => {
    if (quiet !== true) {
      setLoading(true);
      setError(null);
    }
    const query = `query List($filter: ${spec.filterType}, $first: Int, $after: String) {
      list: ${spec.list}(filter: $filter, first: $first, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } nodes { ${spec.fields} }
      }
    }`;
    const request = ++requests.current;
    const newest = (apply) => (value) => request === requests.current && apply(value);
    gql(query, { filter: filterFrom(kind, params), first: PAGE_SIZE, after })
      .then(newest((data) => setPage({ key: filterKey, ...data.list })))
      .catch(newest(setError))
      .finally(newest(() => setLoading(false)));
  }, [filterKey, after]);
  useEffect(load, [load]);
  const live = useLiveReload(kind, access.read, Boolean(token()) && !access.publicReads, () => load(true));

  const shown = page?.key === filterKey ? page : null;
  const start = (cursors.length - 1) * PAGE_SIZE;
  return html`<section>
    <h1 tabindex="-1" class="visually-hidden">Catalogue: ${spec.label}</h1>
    <nav class="tabs" aria-label="Kinds">
      ${KIND_NAMES.map((name) => html`<a href=${`#/${KINDS[name].list}`}
        aria-current=${name === kind ? "page" : undefined}>${KINDS[name].label}</a>`)}
    </nav>
    <${FilterForm} kind=${kind} params=${params} />
    <${ErrorBox} error=${error} />
    <div class="list-head">
      <p aria-live="polite">${loading ? "Loading…" : shown
        ? shown.totalCount === 0
          ? `No ${spec.label.toLowerCase()} match.`
          : `${start + 1}–${start + shown.nodes.length} of ${plural(shown.totalCount, [spec.singular.toLowerCase(), spec.label.toLowerCase()])}`
        : ""}</p>
      <${LiveBadge} state=${live} />
      ${access.write && html`<a class="button" href=${`#/new/${kind}`}>New ${spec.singular.toLowerCase()}</a>`}
    </div>
    ${shown && html`<ul class="cards">
      ${shown.nodes.map((component) => html`<${Card} key=${title(kind, component)} kind=${kind}
        component=${component} access=${access} onError=${setError} />`)}
    </ul>`}
    <nav class="pager" aria-label="Pages">
      <button type="button" class="secondary" disabled=${cursors.length <= 1}
        onClick=${() => setCursors(cursors.slice(0, -1))}>Previous page</button>
      <button type="button" class="secondary" disabled=${!shown?.pageInfo.hasNextPage}
        onClick=${() => setCursors([...cursors, shown.pageInfo.endCursor])}>Next page</button>
    </nav>
  </section>`;
}

/** Registers a component by its key; its needs and file are set on its page afterwards. */
export function CreateForm({ kind, access, notify }) {
  const spec = KINDS[kind];
  const [values, setValues] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (!access.write) {
    return html`<section><h1 tabindex="-1">New ${spec.singular.toLowerCase()}</h1>
      <p>Creating components needs a write token.</p></section>`;
  }
  const field = (name) => ({
    id: `new-${name}`,
    value: values[name] ?? "",
    onInput: (e) => setValues({ ...values, [name]: e.currentTarget.value }),
  });
  const submit = (event) => {
    event.preventDefault();
    const input = { description: values.description ?? "" };
    for (const name of spec.key) input[name] = (values[name] ?? "").trim();
    if (spec.hasLibrary) input.library = (values.library ?? "").trim();
    const mutation = `mutation Create($input: Create${spec.singular}Input!) {
      created: create${spec.singular}(input: $input) { ${spec.key.join(" ")} }
    }`;
    setBusy(true);
    setError(null);
    gql(mutation, { input })
      .then(({ created }) => {
        const href = componentHref(kind, keyOf(kind, created));
        notify(`Created ${title(kind, created)}. Add its needs and upload its file below.`, [kind, ...keyOf(kind, created)].join("/"));
        window.location.hash = href;
      })
      .catch(setError)
      .finally(() => setBusy(false));
  };
  return html`<section class="narrow">
    <h1 tabindex="-1">New ${spec.singular.toLowerCase()}</h1>
    <form class="stack" onSubmit=${submit}>
      ${spec.key.map((name) => html`<div class="field">
        <label for=${`new-${name}`}>${name === "id" ? "Id" : name[0].toUpperCase() + name.slice(1)}</label>
        <input required ...${field(name)} />
      </div>`)}
      ${spec.hasLibrary && html`<div class="field">
        <label for="new-library">Library</label><input ...${field("library")} />
      </div>`}
      <div class="field">
        <label for="new-description">Description</label>
        <textarea rows="3" ...${field("description")}></textarea>
      </div>
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button type="submit" disabled=${busy}>Create</button>
        <a href=${`#/${spec.list}`}>Cancel</a>
      </div>
    </form>
  </section>`;
}

const SEARCH = `query Search($search: String, $needs: NeedsFilterInput, $byModel: Boolean!) {
  models(filter: { search: $search }, first: 50) @skip(if: $byModel) { totalCount nodes { name version description } }
  transformations(filter: { search: $search, needs: $needs }, first: 50) { totalCount nodes { id description } }
  services(filter: { search: $search, needs: $needs }, first: 50) { totalCount nodes { id description } }
  inferencers(filter: { search: $search, needs: $needs }, first: 50) { totalCount nodes { id description } }
}`;

/** Search across every kind: text in ids, names, versions and descriptions, and what needs a given model. */
export function SearchPage({ params }) {
  const q = params.get("q") ?? "";
  const model = params.get("model") ?? "";
  const [values, setValues] = useState({ q, model });
  const [found, setFound] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setFound(null);
    setError(null);
    if (!q.trim() && !model.trim()) return;
    const variables = {
      search: q.trim() || null,
      needs: model.trim() ? { models: [{ name: model.trim() }] } : null,
      byModel: Boolean(model.trim()),
    };
    gql(SEARCH, variables).then(setFound).catch(setError);
  }, [q, model]);
  const submit = (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (values.q.trim()) next.set("q", values.q.trim());
    if (values.model.trim()) next.set("model", values.model.trim());
    window.location.hash = `#/search?${next}`;
  };
  const total = found ? KIND_NAMES.reduce((sum, kind) => sum + (found[KINDS[kind].list]?.totalCount ?? 0), 0) : 0;
  return html`<section>
    <h1 tabindex="-1">Search every kind</h1>
    <form class="filters" role="search" aria-label="Search every kind" onSubmit=${submit}>
      <div class="field grow"><label for="search-q">Text</label>
        <input id="search-q" type="search" placeholder="in ids, names, versions, descriptions" value=${values.q}
          onInput=${(e) => setValues({ ...values, q: e.currentTarget.value })} /></div>
      <div class="field"><label for="search-model">Needs the model</label>
        <input id="search-model" placeholder="fall-detection" value=${values.model}
          onInput=${(e) => setValues({ ...values, model: e.currentTarget.value })} /></div>
      <div class="actions"><button type="submit">Search</button></div>
    </form>
    <${ErrorBox} error=${error} />
    ${found && html`<p aria-live="polite" class="muted">${total === 0 ? "Nothing matches." : `${plural(total, ["match", "matches"])}`}</p>
      <ul class="runnable">${KIND_NAMES.flatMap((kind) => (found[KINDS[kind].list]?.nodes ?? []).map((node) => html`
        <li key=${`${kind}/${title(kind, node)}`}><span class="kind">${KINDS[kind].singular}</span>
          <a href=${componentHref(kind, keyOf(kind, node))}><${Breakable} text=${title(kind, node)} /></a>
          ${node.description && html`<span class="muted"> — ${node.description}</span>`}</li>`))}</ul>`}
  </section>`;
}

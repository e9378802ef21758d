// A model's own page (`#/model/<name>`): its versions together, newest first by PEP 440 where the versions parse
// (else by upload time), aliases as badges, its rollouts and the devices running each version (`rollout.js`), the
// newest description as a model card in Markdown, and what needs the model. The repository keeps versions as text; only the order here knows PEP 440.

import { useEffect, useState } from "preact/hooks";
import { gql, token } from "./api.js";
import { LiveBadge, useLiveReload } from "./live.js";
import { Markdown } from "./markdown.js";
import { DevicesByVersion, Rollouts } from "./rollout.js";
import { Breakable, ErrorBox, KINDS, bytes, componentHref, html, plural, time } from "./format.js";

const PHASES = { dev: 0, a: 1, b: 2, rc: 3, final: 4, post: 5 };

/**
 * A PEP 440 version as something to compare (epoch, release, pre-release, post, dev), or null when the text is
 * not one: `1.10`, `v2.0.0rc1`, `1!2.0.post1`, `1.0.dev3` parse; `pilot-2-1` does not.
 */
export function parsePep440(text) {
  const m = String(text).trim().toLowerCase().match(
    /^v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|alpha|b|beta|c|rc|pre|preview)[-_.]?(\d*))?(?:(?:-(\d+))|(?:[-_.]?(post|rev|r)[-_.]?(\d*)))?(?:[-_.]?dev[-_.]?(\d*))?(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?$/,
  );
  if (!m) return null;
  const pre = m[3] ? { alpha: "a", a: "a", beta: "b", b: "b" }[m[3]] ?? "rc" : null;
  const post = m[5] ?? (m[6] ? m[7] || "0" : null);
  const dev = m[8] !== undefined ? Number(m[8] || 0) : null;
  // Where a version stands among its release's: x.dev < x.a < x.b < x.rc < x < x.post.
  let phase = PHASES.final;
  let phaseNumber = 0;
  if (pre) [phase, phaseNumber] = [PHASES[pre], Number(m[4] || 0)];
  else if (post === null && dev !== null) phase = PHASES.dev;
  return {
    epoch: Number(m[1] || 0),
    release: m[2].split(".").map(Number),
    phase,
    phaseNumber,
    post: post === null ? -1 : Number(post),
    dev: dev === null ? Infinity : dev,
  };
}

/** Compares two parsed PEP 440 versions: negative when `a` comes before `b`. */
export function comparePep440(a, b) {
  if (a.epoch !== b.epoch) return a.epoch - b.epoch;
  const length = Math.max(a.release.length, b.release.length);
  for (let i = 0; i < length; i += 1) {
    const d = (a.release[i] ?? 0) - (b.release[i] ?? 0);
    if (d !== 0) return d;
  }
  for (const field of ["phase", "phaseNumber", "post"]) if (a[field] !== b[field]) return a[field] - b[field];
  if (a.dev === b.dev) return 0;
  return a.dev === Infinity ? 1 : b.dev === Infinity ? -1 : a.dev - b.dev;
}

/** Newest first: the versions that parse by PEP 440, then the others by when they were uploaded. */
export function orderVersions(models) {
  const parsed = [];
  const others = [];
  for (const model of models) {
    const version = parsePep440(model.version);
    if (version) parsed.push({ model, version });
    else others.push(model);
  }
  parsed.sort((x, y) => comparePep440(y.version, x.version));
  const uploaded = (model) => model.file?.uploadedAt ?? model.createdAt;
  others.sort((x, y) => (uploaded(y) < uploaded(x) ? -1 : uploaded(y) > uploaded(x) ? 1 : 0));
  return [...parsed.map(({ model }) => model), ...others];
}

const VERSIONS = `query Versions($name: String!, $after: String) {
  models(filter: { name: $name }, first: 100, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { name version library description aliases locked createdAt file { size uploadedAt } }
  }
}`;

const USERS = `query Users($needs: NeedsFilterInput!) {
  transformations(filter: { needs: $needs }, first: 50) { nodes { id } }
  services(filter: { needs: $needs }, first: 50) { nodes { id } }
  inferencers(filter: { needs: $needs }, first: 50) { nodes { id } }
}`;

async function allVersions(name) {
  const found = [];
  let after = null;
  do {
    const { models } = await gql(VERSIONS, { name, after });
    found.push(...models.nodes);
    after = models.pageInfo.hasNextPage ? models.pageInfo.endCursor : null;
  } while (after);
  return found;
}

export function ModelPage({ name, access, notify }) {
  const [versions, setVersions] = useState(null);
  const [users, setUsers] = useState(null);
  const [error, setError] = useState(null);
  // Bumped by every reload, so the rollouts and the devices re-read with the versions.
  const [revision, setRevision] = useState(0);
  // Bumped while a rollout runs: devices move between versions as it advances.
  const [polled, setPolled] = useState(0);
  const load = () => {
    setRevision((n) => n + 1);
    allVersions(name).then((found) => setVersions(orderVersions(found))).catch(setError);
    gql(USERS, { needs: { models: [{ name }] } })
      .then((data) => setUsers(["transformation", "service", "inferencer"]
        .flatMap((kind) => data[KINDS[kind].list].nodes.map(({ id }) => ({ kind, id })))))
      .catch(setError);
  };
  useEffect(load, [name]);
  const live = useLiveReload("model", access.read, Boolean(token()) && !access.publicReads, load);

  const heading = html`<p class="crumbs"><a href="#/models">Models</a></p>
    <h1 tabindex="-1"><span class="kind">Model</span> <${Breakable} text=${name} /></h1>`;
  if (versions === null) return html`<section>${heading}<${ErrorBox} error=${error} />${!error && html`<p>Loading…</p>`}</section>`;
  const newest = versions[0];
  return html`<section class="model-page">
    ${heading}
    <${ErrorBox} error=${error} />
    <div class="list-head"><p>${versions.length === 0 ? "No versions." : plural(versions.length, ["version", "versions"])}</p>
      <${LiveBadge} state=${live} /></div>
    ${versions.length > 0 && html`<div class="table-scroll"><table class="versions">
      <caption class="visually-hidden">Versions of ${name}, newest first</caption>
      <thead><tr><th scope="col">Version</th><th scope="col">Aliases</th><th scope="col">Library</th>
        <th scope="col">File</th><th scope="col">Created</th></tr></thead>
      <tbody>${versions.map((model) => html`<tr key=${model.version}>
        <td><a href=${componentHref("model", [model.name, model.version])}><${Breakable} text=${model.version} /></a>
          ${model.locked && html` <span class="badge neutral">locked</span>`}</td>
        <td>${model.aliases.length === 0 ? html`<span class="muted">none</span>`
          : html`<ul class="chips badges">${model.aliases.map((alias) => html`<li class="alias">${alias}</li>`)}</ul>`}</td>
        <td>${model.library || html`<span class="muted">none</span>`}</td>
        <td>${model.file ? bytes(model.file.size) : html`<span class="muted">no file</span>`}</td>
        <td><time datetime=${model.createdAt}>${time(model.createdAt)}</time></td>
      </tr>`)}</tbody>
    </table></div>`}
    <${Rollouts} name=${name} versions=${versions} access=${access} revision=${revision} notify=${notify}
      onPoll=${() => setPolled((n) => n + 1)} />
    <${DevicesByVersion} name=${name} versions=${versions} revision=${revision + polled} />
    ${newest && html`<h2>Model card <span class="muted small">(the description of ${newest.version})</span></h2>
      ${newest.description
        ? html`<div class="card-text"><${Markdown} text=${newest.description} /></div>`
        : html`<p class="muted">No description.</p>`}`}
    <h2>Needed by</h2>
    ${users === null ? html`<p class="muted">Loading…</p>` : users.length === 0
      ? html`<p class="muted">Nothing in the repository needs ${name}.</p>`
      : html`<ul class="runnable">${users.map(({ kind, id }) => html`<li key=${`${kind}/${id}`}>
          <span class="kind">${KINDS[kind].singular}</span> <a href=${componentHref(kind, [id])}><${Breakable} text=${id} /></a></li>`)}</ul>`}
  </section>`;
}

// The four kinds of component, the GraphQL selections the pages use, and how values are shown: the small view
// pieces that several pages share.

import { h } from "preact";
import { useEffect, useState } from "preact/hooks";
import htm from "htm";
import { advice, downloadWithToken, streamingDownloads, token } from "./api.js";

export const html = htm.bind(h);

const FILE =
  "file { size sha256 contentType filename uploadedAt downloadUrl signatures { id verified signer reason addedAt addedBy } }";
// Files for particular platforms, and the lock that keeps a component's files as they are.
const VARIANTS = `revision locked variants { platform { os arch variant accelerator acceleratorVersion precision }
  needs { ram gpuMemory storage gpu } ${FILE} }`;
const NEEDS =
  "needs { storage ram gpu gpuMemory preinstalledLibraries { name version } availableModels { name version model { name version } } }";

export const KINDS = {
  model: {
    label: "Models",
    singular: "Model",
    list: "models",
    filterType: "ModelFilter",
    key: ["name", "version"],
    fields: `name version library description aliases ${VARIANTS} ${FILE} createdAt updatedAt`,
    hasNeeds: false,
    hasLibrary: true,
  },
  transformation: {
    label: "Transformations",
    singular: "Transformation",
    list: "transformations",
    filterType: "ComponentFilter",
    key: ["id"],
    fields: `id description parameterTypes defaultValues outputs ${NEEDS} ${VARIANTS} ${FILE} createdAt updatedAt`,
    hasNeeds: true,
    hasLibrary: false,
  },
  service: {
    label: "Services",
    singular: "Service",
    list: "services",
    filterType: "ComponentFilter",
    key: ["id"],
    fields: `id description ${NEEDS} ${VARIANTS} ${FILE} createdAt updatedAt`,
    hasNeeds: true,
    hasLibrary: false,
  },
  inferencer: {
    label: "Inferencers",
    singular: "Inferencer",
    list: "inferencers",
    filterType: "InferencerFilter",
    key: ["id"],
    fields: `id description library useCuda ${NEEDS} ${VARIANTS} ${FILE} createdAt updatedAt`,
    hasNeeds: true,
    hasLibrary: true,
  },
};

export const KIND_NAMES = Object.keys(KINDS);

/** GraphQL type name (`Service`) -> kind (`service`). */
export function kindOf(typename) {
  return typename.charAt(0).toLowerCase() + typename.slice(1);
}

/** Key values of a component in URL order: [name, version] or [id]. */
export function keyOf(kind, component) {
  return KINDS[kind].key.map((field) => component[field]);
}

export function title(kind, component) {
  return keyOf(kind, component).join(" · ");
}

/** "1 service", "3 services": `forms` is [singular, plural]. */
export function plural(count, [one, many]) {
  return `${count} ${count === 1 ? one : many}`;
}

/**
 * A long id or name that may break only after its separators (`edge.camera-svc/v2_b`), never mid-word: the
 * browser gets a break opportunity (`<wbr>`) after each `.`, `-`, `_`, `/`, `:` and `@`.
 */
export function Breakable({ text }) {
  const parts = String(text ?? "").split(/(?<=[.\-_/:@])/);
  return html`<span class="breakable">${parts.map((part, i) => (i === 0 ? part : html`<wbr />${part}`))}</span>`;
}

/** Copies `text` to the clipboard and says so in a status next to it. `label` names what is copied. */
export function CopyButton({ text, label }) {
  const [state, setState] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setState(`Copied ${label}.`);
    } catch {
      // No clipboard here (plain HTTP on another host, or refused): the text is selectable, so say how.
      setState("The browser refused the clipboard: select the text and copy it by hand.");
    }
    setTimeout(() => setState(""), 4000);
  };
  return html`<button type="button" class="secondary copy" onClick=${copy}>Copy ${label}</button>
    <span class="copied" role="status">${state}</span>`;
}

/** The catalogue's address of a component. */
export function componentHref(kind, keys) {
  return `#/${kind}/${keys.map(encodeURIComponent).join("/")}`;
}

export function bytes(size) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(size);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function time(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function gigabytes(value) {
  return value === null || value === undefined ? "" : `${value} GB`;
}

/** A library requirement as people write it: `tensorflow >=2.12,<3`, or the name alone for any version. */
export function requirement({ name, version }) {
  return version && version !== "*" ? `${name} ${version}` : name;
}

/** An API error as a person should read it: what to do, then the server's own words. */
export function ErrorBox({ error }) {
  if (!error) return null;
  const detail = error.message && error.message !== advice(error) ? error.message : "";
  return html`<div class="error" role="alert">
    <strong>${advice(error)}</strong>
    ${error.code && html` <code class="code">${error.code}</code>`}
    ${detail && html`<span class="detail">${detail}</span>`}
  </div>`;
}

/** What a component needs from a device, with referenced models resolved to links when the repository has them. */
export function NeedsView({ needs }) {
  if (!needs) return null;
  const libraries = needs.preinstalledLibraries;
  const models = needs.availableModels;
  return html`<dl class="facts">
    <dt>GPU</dt><dd>${needs.gpu ? "needed" : "not needed"}</dd>
    <dt>RAM</dt><dd>${needs.ram === null ? "any" : gigabytes(needs.ram)}</dd>
    <dt>GPU memory</dt><dd>${needs.gpuMemory === null || needs.gpuMemory === undefined ? "any" : gigabytes(needs.gpuMemory)}</dd>
    <dt>Storage</dt><dd>${needs.storage === null ? "any" : gigabytes(needs.storage)}</dd>
    <dt>Libraries</dt>
    <dd>${libraries.length === 0 ? "none" : html`<ul class="chips">
      ${libraries.map((library) => html`<li>${requirement(library)}</li>`)}
    </ul>`}</dd>
    <dt>Models</dt>
    <dd>${models.length === 0 ? "none" : html`<ul class="chips">
      ${models.map((model) => html`<li>${model.model
        ? html`<a href=${componentHref("model", [model.model.name, model.model.version])}>${model.name} ${model.version}</a>`
        : html`${model.name} ${model.version} <span class="missing">(not in this repository)</span>`}</li>`)}
    </ul>`}</dd>
  </dl>`;
}

/**
 * A download: a plain link when the browser needs no token for it (the browser streams it to disk); otherwise
 * a button that sends the token, since a link cannot.
 */
export function Download({ file, access, onError }) {
  if (token() && !access?.publicReads) return html`<${TokenDownload} file=${file} onError=${onError} />`;
  return html`<a href=${file.downloadUrl} download=${file.filename}>Download ${file.filename}</a> (${bytes(file.size)})`;
}

/** Streams to disk through the download worker; says so where the browser has none and the page must hold it. */
function TokenDownload({ file, onError }) {
  // Why the file cannot stream to disk here, once known; "" when it can.
  const [inMemory, setInMemory] = useState(null);
  useEffect(() => {
    const sameOrigin = new URL(file.downloadUrl, window.location.href).origin === window.location.origin;
    streamingDownloads().then((registration) => {
      if (!sameOrigin) setInMemory("the file is on another address than this page");
      else if (registration) setInMemory("");
      else if (!window.isSecureContext) setInMemory("service workers need the page served over HTTPS");
      else setInMemory("this browser offers no service worker here");
    });
  }, [file.downloadUrl]);
  const click = () => downloadWithToken(file.downloadUrl, file.filename).catch(onError);
  return html`<button type="button" class="link" onClick=${click}>Download ${file.filename}</button>
    ${` (${bytes(file.size)})`}
    ${inMemory && html` <span class="muted">(held in the page's memory before it is saved: ${inMemory})</span>`}`;
}

export function FileView({ file, access, onError, full = false }) {
  if (!file) return html`<p class="muted">No file uploaded yet.</p>`;
  const sha = file.sha256 || "not computed yet";
  return html`<dl class="facts">
    <dt>File</dt><dd><${Download} file=${file} access=${access} onError=${onError} /></dd>
    <dt>sha256</dt><dd><code class=${full ? "hash" : "hash short"} title=${sha}>${sha}</code></dd>
    ${full && html`<dt>Type</dt><dd>${file.contentType}</dd>`}
    <dt>Uploaded</dt><dd><time datetime=${file.uploadedAt}>${time(file.uploadedAt)}</time></dd>
  </dl>`;
}

/** Who signed a file and whether this server's trust policy verifies each signature (README, "Signing"). */
export function SignaturesView({ signatures }) {
  if (!signatures || signatures.length === 0) return html`<p class="muted">Not signed.</p>`;
  return html`<ul class="signatures">${signatures.map((s) => html`<li key=${s.id}>
    <span class=${s.verified ? "badge good" : "badge bad"}>${s.verified ? "verified" : "not verified"}</span>
    ${" "}<${Breakable} text=${s.signer || "unknown signer"} />
    ${!s.verified && s.reason && html`<div class="muted">${s.reason}</div>`}
    <div class="muted">attached by ${s.addedBy}, <time datetime=${s.addedAt}>${time(s.addedAt)}</time></div>
  </li>`)}</ul>`;
}

/** Rows of name and version (libraries, models), with buttons to add and remove rows. */
export function PairsEditor({ legend, rows, onChange, what, versionHint }) {
  const set = (index, field, value) =>
    onChange(rows.map((row, i) => (i === index ? { ...row, [field]: value } : row)));
  return html`<fieldset class="pairs">
    <legend>${legend}</legend>
    ${rows.map((row, index) => html`<div class="pair">
      <input aria-label=${`${what} ${index + 1} name`} placeholder="name" value=${row.name}
        onInput=${(e) => set(index, "name", e.currentTarget.value)} />
      <input aria-label=${`${what} ${index + 1} version`} placeholder=${versionHint} value=${row.version}
        onInput=${(e) => set(index, "version", e.currentTarget.value)} />
      <button type="button" class="secondary" aria-label=${`Remove ${what.toLowerCase()} ${index + 1}`}
        onClick=${() => onChange(rows.filter((_, i) => i !== index))}>Remove</button>
    </div>`)}
    <button type="button" class="secondary" onClick=${() => onChange([...rows, { name: "", version: "" }])}>
      Add ${what.toLowerCase()}
    </button>
  </fieldset>`;
}

/** A number field's value as GraphQL wants it: null when empty. */
export function number(text) {
  const trimmed = String(text ?? "").trim();
  return trimmed === "" ? null : Number(trimmed);
}

export function pairs(rows) {
  return rows
    .filter((row) => row.name.trim() !== "")
    .map((row) => ({ name: row.name.trim(), version: row.version.trim() }));
}

/** A platform as OCI image indexes write it (`linux/arm64/v8`), with its accelerator (`cuda >=12`) and build (`8bit`). */
export function platformName({ os, arch, variant, accelerator, acceleratorVersion, precision }) {
  const base = [os, arch, variant].filter(Boolean).join("/");
  const built = precision ? ` (${precision})` : "";
  if (!accelerator) return `${base}${built}`;
  return `${base} + ${accelerator}${acceleratorVersion ? ` ${acceleratorVersion}` : ""}${built}`;
}

/** The needs a build states for itself (`GPU memory 10 GB, RAM 4 GB`), or "as the component". */
export function buildNeeds(needs) {
  if (!needs) return "as the component";
  const parts = [];
  if (needs.gpuMemory !== null && needs.gpuMemory !== undefined) parts.push(`GPU memory ${needs.gpuMemory} GB`);
  if (needs.ram !== null && needs.ram !== undefined) parts.push(`RAM ${needs.ram} GB`);
  if (needs.storage !== null && needs.storage !== undefined) parts.push(`storage ${needs.storage} GB`);
  if (needs.gpu === true) parts.push("a GPU");
  return parts.length ? parts.join(", ") : "as the component";
}

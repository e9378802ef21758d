// One component: all its metadata, "Use this" (how to fetch it), and for a write token: edit (only the fields
// changed, refused when someone wrote in between), aliases, lock, upload a file or a per-platform file with a
// progress bar, delete. The page follows the change feed, so it shows what others change.

import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, discardUpload, gql, resumableUpload, token, unfinishedUploads } from "./api.js";
import { LiveBadge, useLiveReload } from "./live.js";
import { Markdown } from "./markdown.js";
import {
  Breakable, CopyButton, Download, ErrorBox, FileView, KINDS, NeedsView, PairsEditor, SignaturesView, bytes, html,
  number, pairs,
  buildNeeds, platformName, requirement, time, title,
} from "./format.js";

/** GraphQL variable declarations and arguments that name one component. */
function keyArguments(kind) {
  return kind === "model"
    ? { declare: "$name: String!, $version: String!", pass: "name: $name, version: $version" }
    : { declare: "$id: ID!", pass: "id: $id" };
}

function keyVariables(kind, keys) {
  return Object.fromEntries(KINDS[kind].key.map((field, i) => [field, keys[i]]));
}

function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

/** One alias of a model and every move it made, oldest first (`modelAliasHistory`); a write token may delete it. */
function AliasHistory({ name, alias, revision, canWrite, onChanged }) {
  const [moves, setMoves] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    gql(`query AliasHistory($name: String!, $alias: String!) {
      moves: modelAliasHistory(name: $name, alias: $alias) { from to at by }
    }`, { name, alias })
      .then(({ moves }) => setMoves(moves))
      .catch(setError);
  }, [name, alias, revision]);
  const remove = () => {
    setError(null);
    // Made as of the revision this page shows: a version changed elsewhere meanwhile answers CONFLICT.
    gql(`mutation DeleteAlias($name: String!, $alias: String!, $revision: Long) {
      deleteModelAlias(name: $name, alias: $alias, expectedRevision: $revision) }`, { name, alias, revision })
      .then(() => onChanged(`Deleted the alias ${alias}.`))
      .catch(setError);
  };
  return html`<li><strong class="alias">${alias}</strong>
    ${canWrite && html` <button type="button" class="link" onClick=${remove}>Delete alias ${alias}</button>`}
    <${ErrorBox} error=${error} />
    ${moves && html`<ol class="history" aria-label=${`History of ${alias}`}>
      ${moves.map((move) => html`<li>
        ${move.from === null ? "new" : move.from} → ${move.to === null ? "deleted" : move.to}${", "}<time datetime=${move.at}>${time(move.at)}</time> by ${move.by}</li>`)}
    </ol>`}
  </li>`;
}

/** Points an alias at this version: a new alias, or one moved from another version (its history says from where). */
function AliasForm({ component, onChanged }) {
  const [alias, setAlias] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = (event) => {
    event.preventDefault();
    const wanted = alias.trim();
    if (!wanted) return;
    setBusy(true);
    setError(null);
    gql(`query Before($name: String!, $alias: String!) { before: model(name: $name, alias: $alias) { version } }`,
      { name: component.name, alias: wanted })
      .catch(() => ({ before: null }))
      .then(({ before }) => gql(`mutation SetAlias($name: String!, $alias: String!, $version: String!, $revision: Long) {
          setModelAlias(name: $name, alias: $alias, version: $version, expectedRevision: $revision) { name }
        }`, { name: component.name, alias: wanted, version: component.version, revision: component.revision })
        .then(() => {
          setAlias("");
          const from = before && before.version !== component.version ? ` (moved from ${before.version})` : "";
          onChanged(`The alias ${wanted} points at ${component.version}${from}.`);
        }))
      .catch(setError)
      .finally(() => setBusy(false));
  };
  return html`<form class="inline-form" onSubmit=${submit} aria-label="Set an alias">
    <label for="alias-name">Set an alias to this version</label>
    <input id="alias-name" placeholder="production" value=${alias} onInput=${(e) => setAlias(e.currentTarget.value)} />
    <button type="submit" disabled=${busy}>Set alias</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

/** Attaches a signature bundle (as `model_signing sign` writes it) to the component's default file. */
function SignatureForm({ kind, component, onChanged }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const input = event.currentTarget.elements.bundle;
    const file = input.files[0];
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      const keys = kind === "model" ? { name: component.name, version: component.version } : { id: component.id };
      const data = await gql(
        `mutation($kind: ComponentKind!, $name: String, $version: String, $id: ID, $bundle: String!) {
          addSignature(kind: $kind, name: $name, version: $version, id: $id, bundle: $bundle) { id verified } }`,
        { kind: kind.toUpperCase(), ...keys, bundle: await file.text() },
      );
      input.value = "";
      onChanged(data.addSignature.verified ? "Signature attached: verified." : "Signature attached: not verified.");
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="inline-form" onSubmit=${submit} aria-label="Attach a signature">
    <label for="signature-bundle">Attach a signature (a <code>model_signing</code> bundle)</label>
    <input id="signature-bundle" name="bundle" type="file" accept=".sig,.json,application/json" />
    <button type="submit" disabled=${busy}>Attach</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

function Variants({ variants, access, onError }) {
  if (variants.length === 0) return html`<p class="muted">No per-platform files: every device gets the file above.</p>`;
  return html`<div class="table-scroll"><table class="variants">
    <caption class="visually-hidden">Files for particular platforms</caption>
    <thead><tr><th scope="col">Platform</th><th scope="col">File</th><th scope="col">sha256</th>
      <th scope="col">Uploaded</th><th scope="col">Signatures</th><th scope="col">Needs</th></tr></thead>
    <tbody>${variants.map(({ platform, file, needs }) => html`<tr key=${platformName(platform)}>
      <td>${platformName(platform)}</td>
      <td><${Download} file=${file} access=${access} onError=${onError} /></td>
      <td><code class="hash" title=${file.sha256}>${file.sha256}</code></td>
      <td><time datetime=${file.uploadedAt}>${time(file.uploadedAt)}</time></td>
      <td><${SignaturesView} signatures=${file.signatures} /></td>
      <td>${buildNeeds(needs)}</td>
    </tr>`)}</tbody>
  </table></div>`;
}

function Metadata({ kind, component, access, onError, onChanged }) {
  const spec = KINDS[kind];
  const canWrite = access.write;
  return html`
    <dl class="facts wide">
      ${kind === "model" && html`<dt>Name</dt><dd><a href=${`#/model/${encodeURIComponent(component.name)}`}
        ><${Breakable} text=${component.name} /></a></dd>
        <dt>Version</dt><dd>${component.version} (<a href=${`#/model/${encodeURIComponent(component.name)}`}>all
        versions</a>)</dd>`}
      ${kind !== "model" && html`<dt>Id</dt><dd><${Breakable} text=${component.id} /></dd>`}
      <dt>Description</dt><dd>${component.description
        ? html`<${Markdown} text=${component.description} />` : html`<span class="muted">none</span>`}</dd>
      ${spec.hasLibrary && html`<dt>Library</dt><dd>${component.library || html`<span class="muted">none</span>`}</dd>`}
      ${kind === "inferencer" && html`<dt>Uses CUDA</dt><dd>${component.useCuda ? "yes" : "no"}</dd>`}
      ${kind === "transformation" && html`
        <dt>Parameter types</dt><dd><${Json} value=${component.parameterTypes} /></dd>
        <dt>Default values</dt><dd><${Json} value=${component.defaultValues} /></dd>
        <dt>Outputs</dt><dd>${component.outputs.length ? component.outputs.join(", ") : html`<span class="muted">none</span>`}</dd>`}
      ${kind === "model" && html`<dt>Aliases</dt><dd>${component.aliases.length === 0
        ? html`<span class="muted">none</span>`
        : html`<ul class="aliases">${component.aliases.map((alias) => html`<${AliasHistory} key=${alias}
            name=${component.name} alias=${alias} revision=${component.revision} canWrite=${canWrite}
            onChanged=${onChanged} />`)}</ul>`}
        ${canWrite && html`<${AliasForm} component=${component} onChanged=${onChanged} />`}</dd>`}
      <dt>Locked</dt><dd>${component.locked ? "yes: its files can no longer be replaced" : "no"}</dd>
      <dt>Created</dt><dd><time datetime=${component.createdAt}>${time(component.createdAt)}</time></dd>
      <dt>Updated</dt><dd><time datetime=${component.updatedAt}>${time(component.updatedAt)}</time></dd>
      <dt>Revision</dt><dd>${component.revision}</dd>
    </dl>
    ${spec.hasNeeds && html`<h2>Needs</h2><${NeedsView} needs=${component.needs} />`}
    <h2>File</h2>
    <${FileView} file=${component.file} access=${access} onError=${onError} full=${true} />
    ${component.file?.sha256 && html`<div class="actions"><${CopyButton} text=${component.file.sha256} label="sha256" /></div>`}
    ${component.file && html`<h3>Signatures</h3>
      <${SignaturesView} signatures=${component.file.signatures} />
      ${canWrite && html`<${SignatureForm} kind=${kind} component=${component} onChanged=${onChanged} />`}`}
    <h2>Per-platform files</h2>
    <${Variants} variants=${component.variants} access=${access} onError=${onError} />`;
}

/** The tag or repository name as `/v2/` writes it (README, "OCI clients"): escaped when OCI cannot carry it. */
function ociRepository(name) {
  const fits = /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$/.test(name) && !name.startsWith("x--");
  if (fits) return name;
  return `x--${[...new TextEncoder().encode(name)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function ociTag(tag) {
  if (/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(tag) && !tag.startsWith("x--")) return tag;
  const binary = String.fromCharCode(...new TextEncoder().encode(tag));
  return `x--${btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
}

/** How to fetch this component from elsewhere: addresses, curl, Python, GraphQL and oras, each to copy. */
function UseThis({ kind, component, access }) {
  const spec = KINDS[kind];
  const origin = window.location.origin;
  const needsToken = !access.publicReads;
  const filename = component.file?.filename || "file";
  const byVersion = kind === "model"
    ? `${origin}/model/${encodeURIComponent(component.name)}/${encodeURIComponent(component.version)}`
    : `${origin}/${kind}/${encodeURIComponent(component.id)}`;
  const byAlias = kind === "model"
    ? component.aliases.map((alias) => ({
      alias, url: `${origin}/model/${encodeURIComponent(component.name)}/@${encodeURIComponent(alias)}`,
    }))
    : [];
  const url = byAlias[0]?.url ?? byVersion;
  const quoted = (text) => `'${text.replace(/'/g, "'\\''")}'`;
  const header = needsToken ? ` -H "Authorization: Bearer $REPOSITORY_TOKEN"` : "";
  const curl = `curl -fL${header} -o ${quoted(filename)} ${quoted(url)}`;
  const python = [
    "import os",
    "import requests",
    "",
    `response = requests.get(${JSON.stringify(url)},`,
    needsToken ? `    headers={"Authorization": f"Bearer {os.environ['REPOSITORY_TOKEN']}"},` : null,
    "    stream=True, timeout=60)",
    "response.raise_for_status()",
    `with open(${JSON.stringify(filename)}, "wb") as out:`,
    "    for chunk in response.iter_content(chunk_size=1 << 20):",
    "        out.write(chunk)",
  ].filter((line) => line !== null).join("\n");
  // A GraphQL string literal escapes as a JSON one does.
  const args = kind === "model"
    ? `name: ${JSON.stringify(component.name)}, version: ${JSON.stringify(component.version)}`
    : `id: ${JSON.stringify(component.id)}`;
  const query = `{\n  ${kind}(${args}) {\n    revision\n    file { filename size sha256 downloadUrl }\n    variants { platform { os arch variant accelerator } file { filename sha256 downloadUrl } }\n  }\n}`;
  const reference = kind === "model"
    ? `${window.location.host}/models/${ociRepository(component.name)}:${ociTag(byAlias[0]?.alias ?? component.version)}`
    : `${window.location.host}/${spec.list}/${ociRepository(component.id)}:latest`;
  const plain = window.location.protocol === "http:" ? " --plain-http" : "";
  const oras = `${needsToken ? `oras login${plain} ${window.location.host} -u me -p "$REPOSITORY_TOKEN"\n` : ""}oras pull${plain} ${reference}`;
  const snippet = (id, label, text) => html`<div class="snippet">
    <h3 id=${id}>${label}</h3>
    <pre aria-labelledby=${id} tabindex="0"><code>${text}</code></pre>
    <${CopyButton} text=${text} label=${label} />
  </div>`;
  return html`<section class="use-this" aria-labelledby="use-this">
    <h2 id="use-this">Use this</h2>
    ${!component.file && html`<p class="muted">No file yet: these work once one is uploaded.</p>`}
    ${needsToken && html`<p class="muted">Reads need a token here: set <code>REPOSITORY_TOKEN</code> to yours
      first; the page never puts it in these lines.</p>`}
    ${snippet("use-url", "download URL", byVersion)}
    ${byAlias.map(({ alias, url: aliasUrl }) => snippet(`use-alias-${alias}`, `download URL of alias ${alias}`, aliasUrl))}
    ${snippet("use-curl", "curl command", curl)}
    ${snippet("use-python", "Python requests", python)}
    ${snippet("use-graphql", "GraphQL query", query)}
    ${snippet("use-oras", "oras pull", oras)}
  </section>`;
}

function parseJson(text, label) {
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ApiError("NOT_SENT", `${label} is not valid JSON: ${error.message}`);
  }
}

/**
 * A library requirement that starts like a PEP 440 specifier must be one (`>=2.12,<3`, `==2.*`, `~=1.4`); plain
 * text (`latest`) stays allowed, as the server rules. Returns why not, or null.
 */
function requirementProblem(text) {
  const value = text.trim();
  if (!/^[<>=!~]/.test(value)) return null;
  const clauses = value.split(",");
  for (const [i, clause] of clauses.entries()) {
    if (!/^\s*(~=|===|==|!=|<=|>=|<|>)\s*v?[0-9][0-9A-Za-z.+!_-]*(\.\*)?\s*$/.test(clause)) {
      return `"${value}" is no PEP 440 version range: clause ${i + 1} ("${clause.trim()}") is not like >=2.12 or ==1.*`;
    }
  }
  return null;
}

/** The form's fields from a component: what the edit starts from and what a conflict compares with. */
function formValues(kind, component) {
  const needs = component.needs;
  return {
    description: component.description,
    library: component.library ?? "",
    useCuda: component.useCuda ?? false,
    parameterTypes: kind === "transformation" ? JSON.stringify(component.parameterTypes, null, 2) : "",
    defaultValues: kind === "transformation" ? JSON.stringify(component.defaultValues, null, 2) : "",
    outputs: (component.outputs ?? []).join(", "),
    gpu: needs?.gpu ?? false,
    ram: String(needs?.ram ?? ""),
    gpuMemory: String(needs?.gpuMemory ?? ""),
    storage: String(needs?.storage ?? ""),
    libraries: needs?.preinstalledLibraries.map(({ name, version }) => ({ name, version })) ?? [],
    models: needs?.availableModels.map(({ name, version }) => ({ name, version })) ?? [],
  };
}

const LABELS = {
  description: "Description", library: "Library", useCuda: "Uses CUDA", parameterTypes: "Parameter types",
  defaultValues: "Default values", outputs: "Outputs", gpu: "Needs a GPU", ram: "RAM (GB)", gpuMemory: "GPU memory (GB)",
  storage: "Storage (GB)",
  libraries: "Libraries", models: "Models",
};

/** A form value as a person compares it. */
function shown(field, value) {
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return pairs(value).map(requirement).join(", ") || "none";
  return String(value).trim() === "" ? "(empty)" : String(value);
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function EditForm({ kind, component, onSaved, onCancel }) {
  const spec = KINDS[kind];
  // What the form started from: only fields that differ from it are sent, with its revision, so a change made
  // elsewhere to another field survives, and one to the same field is refused and shown.
  const [base, setBase] = useState(() => ({ revision: component.revision, values: formValues(kind, component) }));
  const [values, setValues] = useState(() => formValues(kind, component));
  const [error, setError] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name, value) => setValues({ ...values, [name]: value });
  const text = (name) => ({ id: `edit-${name}`, value: values[name], onInput: (e) => set(name, e.currentTarget.value) });
  const changed = Object.keys(values).filter((field) => !same(values[field], base.values[field]));

  const inputFor = () => {
    const input = {};
    const needs = {};
    for (const field of changed) {
      if (field === "description") input.description = values.description;
      if (field === "library") input.library = values.library.trim();
      if (field === "useCuda") input.useCuda = values.useCuda;
      if (field === "parameterTypes") input.parameterTypes = parseJson(values.parameterTypes, "Parameter types");
      if (field === "defaultValues") input.defaultValues = parseJson(values.defaultValues, "Default values");
      if (field === "outputs") input.outputs = values.outputs.split(",").map((s) => s.trim()).filter(Boolean);
      if (field === "gpu") needs.gpu = values.gpu;
      if (field === "ram") needs.ram = number(values.ram);
      if (field === "gpuMemory") needs.gpuMemory = number(values.gpuMemory);
      if (field === "storage") needs.storage = number(values.storage);
      if (field === "libraries") {
        needs.preinstalledLibraries = pairs(values.libraries);
        for (const library of needs.preinstalledLibraries) {
          const problem = requirementProblem(library.version);
          if (problem) throw new ApiError("NOT_SENT", `Library ${library.name}: ${problem}.`);
        }
      }
      if (field === "models") needs.availableModels = pairs(values.models);
    }
    if (Object.keys(needs).length > 0) input.needs = needs;
    return input;
  };

  const save = (revision) => {
    setError(null);
    let input;
    try {
      input = inputFor();
    } catch (problem) {
      setError(problem);
      return;
    }
    if (Object.keys(input).length === 0) {
      setError(new ApiError("NOT_SENT", "Nothing changed: there is nothing to save."));
      return;
    }
    const { declare, pass } = keyArguments(kind);
    const mutation = `mutation Update(${declare}, $input: Update${spec.singular}Input!, $expectedRevision: Long) {
      updated: update${spec.singular}(${pass}, input: $input, expectedRevision: $expectedRevision) { ${spec.fields} }
    }`;
    const keys = keyVariables(kind, spec.key.map((f) => component[f]));
    setBusy(true);
    gql(mutation, { ...keys, input, expectedRevision: revision })
      .then(({ updated }) => onSaved(updated))
      .catch((problem) => {
        if (problem.code !== "CONFLICT" || problem.extensions?.currentRevision === undefined) throw problem;
        // Someone wrote in between: fetch what stands now and show it next to what this form holds.
        return gql(`query Current(${declare}) { current: ${kind}(${pass}) { ${spec.fields} } }`, keys)
          .then(({ current }) => {
            setConflict(current);
            setError(new ApiError("STALE", problem.message));
          });
      })
      .catch(setError)
      .finally(() => setBusy(false));
  };

  const submit = (event) => {
    event.preventDefault();
    save(base.revision);
  };
  // Saving over the other change: this form's changed fields win, the other's other fields stay.
  const overwrite = () => {
    setBase({ revision: conflict.revision, values: base.values });
    setConflict(null);
    setError(null);
    save(conflict.revision);
  };
  const theirs = conflict && formValues(kind, conflict);

  return html`<form class="stack edit" onSubmit=${submit} aria-label="Edit">
    <div class="field"><label for="edit-description">Description (Markdown)</label>
      <textarea rows="5" ...${text("description")}></textarea></div>
    ${spec.hasLibrary && html`<div class="field"><label for="edit-library">Library</label><input ...${text("library")} /></div>`}
    ${kind === "inferencer" && html`<label class="check"><input type="checkbox" checked=${values.useCuda}
      onChange=${(e) => set("useCuda", e.currentTarget.checked)} /> Uses CUDA</label>`}
    ${kind === "transformation" && html`
      <div class="field"><label for="edit-parameterTypes">Parameter types (JSON)</label>
        <textarea rows="4" class="mono" ...${text("parameterTypes")}></textarea></div>
      <div class="field"><label for="edit-defaultValues">Default values (JSON)</label>
        <textarea rows="4" class="mono" ...${text("defaultValues")}></textarea></div>
      <div class="field"><label for="edit-outputs">Outputs (comma-separated)</label><input ...${text("outputs")} /></div>`}
    ${spec.hasNeeds && html`<fieldset>
      <legend>Needs</legend>
      <label class="check"><input type="checkbox" checked=${values.gpu}
        onChange=${(e) => set("gpu", e.currentTarget.checked)} /> Needs a GPU</label>
      <div class="row">
        <div class="field small"><label for="edit-ram">RAM (GB)</label>
          <input type="number" min="0" step="any" inputmode="decimal" ...${text("ram")} /></div>
        <div class="field small"><label for="edit-gpuMemory">GPU memory (GB)</label>
          <input type="number" min="0" step="any" inputmode="decimal" ...${text("gpuMemory")} /></div>
        <div class="field small"><label for="edit-storage">Storage (GB)</label>
          <input type="number" min="0" step="any" inputmode="decimal" ...${text("storage")} /></div>
      </div>
      <${PairsEditor} legend="Libraries" what="Library" versionHint=">=2.12,<3 or empty for any"
        rows=${values.libraries} onChange=${(rows) => set("libraries", rows)} />
      <${PairsEditor} legend="Models" what="Model" versionHint="version"
        rows=${values.models} onChange=${(rows) => set("models", rows)} />
    </fieldset>`}
    <${ErrorBox} error=${error} />
    ${conflict && html`<div class="conflict" role="group" aria-labelledby="conflict-title">
      <h3 id="conflict-title">Changed elsewhere since you opened the form (revision ${base.revision} → ${conflict.revision})</h3>
      <table class="variants">
        <thead><tr><th scope="col">Field</th><th scope="col">Yours</th><th scope="col">Now in the repository</th></tr></thead>
        <tbody>${changed.map((field) => html`<tr key=${field}>
          <th scope="row">${LABELS[field]}</th><td class="yours">${shown(field, values[field])}</td>
          <td class="theirs">${shown(field, theirs[field])}</td></tr>`)}</tbody>
      </table>
      <p class="muted">Saving yours changes only the fields above; everything else stays as it is now.</p>
      <div class="actions"><button type="button" disabled=${busy} onClick=${overwrite}>Save mine over it</button></div>
    </div>`}
    <div class="actions">
      <button type="submit" disabled=${busy}>Save</button>
      <button type="button" class="secondary" onClick=${onCancel}>Cancel</button>
      <span class="muted">${changed.length === 0 ? "No changes yet." : `Changed: ${changed.map((f) => LABELS[f]).join(", ")}.`}</span>
    </div>
  </form>`;
}

const NO_PLATFORM = {
  os: "", arch: "", variant: "", accelerator: "", acceleratorVersion: "", precision: "", gpuMemory: "", ram: "",
};

/** The metadata of this component's uploads, as `ReplaceFile` sends it to tus. */
function sameTarget(kind, component) {
  return (metadata) => (kind === "model"
    ? (metadata.kind === undefined || metadata.kind === "model") && metadata.name === component.name
      && metadata.version === component.version
    : metadata.kind === kind && metadata.id === component.id);
}

/** Uploads of this component that this browser started and did not finish: choosing the same file resumes one. */
function Unfinished({ kind, component, running }) {
  const [entries, setEntries] = useState([]);
  const refresh = () => unfinishedUploads(sameTarget(kind, component)).then(setEntries).catch(() => setEntries([]));
  useEffect(refresh, [kind, component.revision, running]);
  if (running || entries.length === 0) return null;
  return html`<div class="unfinished" role="region" aria-label="Unfinished uploads">
    <p><strong>${entries.length === 1 ? "An unfinished upload" : `${entries.length} unfinished uploads`}</strong> from
      this browser: choose the same file again to resume where the server stands.</p>
    <ul>${entries.map((entry) => html`<li key=${entry.urlStorageKey}>
      ${entry.metadata.filename} (${bytes(entry.size)}${entry.metadata.platform ? `, for ${entry.metadata.platform}` : ""}),
      started <time datetime=${entry.creationTime}>${time(entry.creationTime)}</time>${" "}
      <button type="button" class="link" onClick=${() => discardUpload(entry).then(refresh)}>Discard
        ${entry.metadata.filename}</button></li>`)}</ul>
  </div>`;
}

function ReplaceFile({ kind, component, onUploaded }) {
  const spec = KINDS[kind];
  const input = useRef(null);
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const [running, setRunning] = useState(null);
  const [platform, setPlatform] = useState(NO_PLATFORM);
  const setField = (name) => (e) => setPlatform({ ...platform, [name]: e.currentTarget.value });

  // Leaving the page (closing the tab, a reload, another site) while bytes go up asks first; the upload could
  // resume later, but people rarely mean to stop it.
  useEffect(() => {
    if (!running) return undefined;
    const warn = (event) => {
      event.preventDefault();
      event.returnValue = "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [running]);
  // Leaving for another page of the catalogue pauses it rather than letting it run on unseen; coming back
  // lists it under "unfinished uploads".
  const current = useRef(null);
  current.current = running;
  useEffect(() => () => current.current?.pause(), []);

  const submit = (event) => {
    event.preventDefault();
    const file = input.current.files[0];
    if (!file) return;
    const { declare, pass } = keyArguments(kind);
    const keys = keyVariables(kind, spec.key.map((f) => component[f]));
    const target = kind === "model" ? { ...keys } : { kind, ...keys };
    const [os, arch, variant] = [platform.os.trim(), platform.arch.trim(), platform.variant.trim()];
    const build = [platform.precision, platform.gpuMemory, platform.ram].some((v) => String(v).trim());
    if (os || arch || variant || platform.accelerator.trim() || build) {
      if (!os || !arch) {
        setError(new ApiError("NOT_SENT", "A per-platform file needs both OS and architecture (such as linux and arm64)."));
        return;
      }
      target.platform = [os, arch, variant].filter(Boolean).join("/");
      if (platform.accelerator.trim()) {
        target.accelerator = platform.accelerator.trim();
        if (platform.acceleratorVersion.trim()) target.accelerator_version = platform.acceleratorVersion.trim();
      }
      if (platform.precision.trim()) target.precision = platform.precision.trim();
      const needs = {};
      for (const [field, value] of [["gpuMemory", platform.gpuMemory], ["ram", platform.ram]]) {
        if (String(value).trim() === "") continue;
        const gb = Number(value);
        if (!Number.isFinite(gb) || gb < 0) {
          setError(new ApiError("NOT_SENT", `${field === "ram" ? "RAM" : "GPU memory"} must be a number of GB.`));
          return;
        }
        needs[field] = gb;
      }
      if (Object.keys(needs).length) target.needs = JSON.stringify(needs);
    }
    setError(null);
    const started = Date.now();
    setProgress({ sent: 0, total: file.size, started });
    const job = resumableUpload(target, file, (sent, total) => setProgress({ sent, total, started }));
    setRunning(job);
    job.done
      .then(() => gql(`query Uploaded(${declare}) { uploaded: ${kind}(${pass}) { ${spec.fields} } }`, keys))
      .then(({ uploaded }) => {
        input.current.value = "";
        setPlatform(NO_PLATFORM);
        onUploaded(uploaded, file.name, target.platform);
      })
      .catch((problem) => {
        if (input.current) setError(problem);
      })
      .finally(() => {
        if (!input.current) return;
        setRunning(null);
        setProgress(null);
      });
  };

  const percent = progress && progress.total ? Math.floor((100 * progress.sent) / progress.total) : 0;
  const seconds = progress ? (Date.now() - progress.started) / 1000 : 0;
  const speed = seconds > 0.5 && progress.sent > 0 ? progress.sent / seconds : null;
  const left = speed ? Math.ceil((progress.total - progress.sent) / speed) : null;
  return html`<form class="stack upload" onSubmit=${submit}>
    <${Unfinished} kind=${kind} component=${component} running=${running} />
    <div class="field">
      <label for="upload-file">${component.file ? "Replace the file" : "Upload the file"}</label>
      <input id="upload-file" type="file" ref=${input} required disabled=${!!running} />
    </div>
    <details class="platform">
      <summary>For one platform only (a per-platform file)</summary>
      <div class="row">
        <div class="field small"><label for="upload-os">OS</label>
          <input id="upload-os" placeholder="linux" value=${platform.os} onInput=${setField("os")} /></div>
        <div class="field small"><label for="upload-arch">Architecture</label>
          <input id="upload-arch" placeholder="arm64" value=${platform.arch} onInput=${setField("arch")} /></div>
        <div class="field small"><label for="upload-variant">Variant</label>
          <input id="upload-variant" placeholder="v8" value=${platform.variant} onInput=${setField("variant")} /></div>
        <div class="field small"><label for="upload-accelerator">Accelerator</label>
          <input id="upload-accelerator" placeholder="cuda" value=${platform.accelerator} onInput=${setField("accelerator")} /></div>
        <div class="field small"><label for="upload-accelerator-version">Accelerator version</label>
          <input id="upload-accelerator-version" placeholder=">=8.6" value=${platform.acceleratorVersion}
            onInput=${setField("acceleratorVersion")} /></div>
      </div>
      <div class="row">
        <div class="field small"><label for="upload-precision">Precision (build)</label>
          <input id="upload-precision" placeholder="8bit" value=${platform.precision} onInput=${setField("precision")} /></div>
        <div class="field small"><label for="upload-gpu-memory">This build's GPU memory in GB</label>
          <input id="upload-gpu-memory" type="number" min="0" step="any" inputmode="decimal" placeholder="as the component"
            value=${platform.gpuMemory} onInput=${setField("gpuMemory")} /></div>
        <div class="field small"><label for="upload-ram">This build's RAM in GB</label>
          <input id="upload-ram" type="number" min="0" step="any" inputmode="decimal" placeholder="as the component"
            value=${platform.ram} onInput=${setField("ram")} /></div>
      </div>
    </details>
    ${progress && html`<div class="progress">
      <progress id="upload-progress" max="100" value=${percent} aria-label="Upload progress"></progress>
      <span>${bytes(progress.sent)} of ${bytes(progress.total)} (${percent} %)${speed
        ? `, ${bytes(Math.round(speed))}/s, about ${left} s left` : ""}</span>
    </div>`}
    <${ErrorBox} error=${error} />
    <div class="actions">
      <button type="submit" disabled=${!!running}>Upload</button>
      ${running && html`<button type="button" class="secondary" onClick=${() => running.abort()}>Cancel upload</button>`}
    </div>
  </form>`;
}

function LockButton({ kind, component, onLocked }) {
  const spec = KINDS[kind];
  const dialog = useRef(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const lock = () => {
    const { declare, pass } = keyArguments(kind);
    setBusy(true);
    gql(`mutation Lock(${declare}, $expectedRevision: Long) {
      locked: lock${spec.singular}(${pass}, expectedRevision: $expectedRevision) { ${spec.fields} }
    }`, { ...keyVariables(kind, spec.key.map((f) => component[f])), expectedRevision: component.revision })
      .then(({ locked }) => {
        dialog.current.close();
        onLocked(locked);
      })
      .catch(setError)
      .finally(() => setBusy(false));
  };
  return html`
    <button type="button" class="secondary" onClick=${() => { setError(null); dialog.current.showModal(); }}>Lock…</button>
    <dialog ref=${dialog} aria-labelledby="lock-title">
      <h2 id="lock-title">Lock ${title(kind, component)}?</h2>
      <p>Its files can then never be replaced, and the ${spec.singular.toLowerCase()} not deleted. This cannot be undone.</p>
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button type="button" disabled=${busy} onClick=${lock}>Lock for good</button>
        <button type="button" class="secondary" onClick=${() => dialog.current.close()}>Keep it open</button>
      </div>
    </dialog>`;
}

function DeleteButton({ kind, component, notify }) {
  const spec = KINDS[kind];
  const dialog = useRef(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const remove = () => {
    const { declare, pass } = keyArguments(kind);
    setBusy(true);
    gql(`mutation Delete(${declare}) { delete${spec.singular}(${pass}) }`, keyVariables(kind, spec.key.map((f) => component[f])))
      .then(() => {
        dialog.current.close();
        notify(`Deleted ${spec.singular.toLowerCase()} ${title(kind, component)}.`, spec.list);
        window.location.hash = `#/${spec.list}`;
      })
      .catch(setError)
      .finally(() => setBusy(false));
  };
  return html`
    <button type="button" class="danger" onClick=${() => { setError(null); dialog.current.showModal(); }}>
      Delete…</button>
    <dialog ref=${dialog} aria-labelledby="delete-title">
      <h2 id="delete-title">Delete ${title(kind, component)}?</h2>
      <p>The ${spec.singular.toLowerCase()} and its file are removed for good.</p>
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button type="button" class="danger" disabled=${busy} onClick=${remove}>Delete for good</button>
        <button type="button" class="secondary" onClick=${() => dialog.current.close()}>Keep it</button>
      </div>
    </dialog>`;
}

export function ComponentPage({ kind, keys, access, notify }) {
  const spec = KINDS[kind];
  const [component, setComponent] = useState(undefined);
  const [error, setError] = useState(null);
  const [editing, setEditing] = useState(false);

  const load = () => {
    const { declare, pass } = keyArguments(kind);
    gql(`query One(${declare}) { one: ${kind}(${pass}) { ${spec.fields} } }`, keyVariables(kind, keys))
      .then(({ one }) => setComponent(one))
      .catch(setError);
  };
  useEffect(load, [kind, keys.join("/")]);
  // Changes made elsewhere show at once; an open edit form keeps what it holds (a save then finds the conflict).
  const live = useLiveReload(kind, access.read, Boolean(token()) && !access.publicReads, load);

  // The heading comes from the address, so it is there (and named) before the component has loaded.
  const heading = html`<p class="crumbs"><a href=${`#/${spec.list}`}>${spec.label}</a>${kind === "model"
    && html`${" › "}<a href=${`#/model/${encodeURIComponent(keys[0])}`}>${keys[0]}</a>`}</p>
    <h1 tabindex="-1"><span class="kind">${spec.singular}</span> <${Breakable} text=${keys.join(" · ")} /></h1>`;
  if (error && component === undefined) return html`<section>${heading}<${ErrorBox} error=${error} /></section>`;
  if (component === undefined) return html`<section>${heading}<p>Loading…</p></section>`;
  if (component === null) {
    return html`<section>${heading}
      <${ErrorBox} error=${{ code: "NOT_FOUND", message: `There is no ${kind} ${keys.join(" ")}.` }} /></section>`;
  }
  // A lock keeps the metadata and the files for good; a locked component without any file can still get its
  // first one, and be deleted (as the server rules).
  const fixed = component.locked && (component.file !== null || component.variants.length > 0);
  const saved = (next, message) => {
    setComponent(next);
    setEditing(false);
    notify(message);
  };
  const changed = (message) => {
    load();
    notify(message);
  };
  return html`<section class="component">
    ${heading}
    <div class="list-head"><${LiveBadge} state=${live} /></div>
    <${ErrorBox} error=${error} />
    ${!access.write && html`<p class="muted readonly">Read-only view: changes need a write token.</p>`}
    ${access.write && !editing && html`<div class="actions">
      ${!component.locked && html`<button type="button" onClick=${() => setEditing(true)}>Edit</button>`}
      ${!component.locked && html`<${LockButton} kind=${kind} component=${component}
        onLocked=${(next) => saved(next, `Locked ${title(kind, next)}.`)} />`}
      ${!fixed && html`<${DeleteButton} kind=${kind} component=${component} notify=${notify} />`}
    </div>`}
    ${editing
      ? html`<${EditForm} kind=${kind} component=${component} onCancel=${() => setEditing(false)}
          onSaved=${(next) => saved(next, "Saved.")} />`
      : html`<${Metadata} kind=${kind} component=${component} access=${access} onError=${setError}
          onChanged=${changed} />`}
    ${access.write && !editing && component.locked && html`<p class="muted">Locked: its description and needs can
      no longer change${fixed ? `, its files cannot be replaced, nor the ${spec.singular.toLowerCase()} deleted` : ""}.</p>`}
    ${access.write && !editing && !fixed && html`<${ReplaceFile} kind=${kind} component=${component}
      onUploaded=${(next, name, platform) => {
        const file = platform
          ? next.variants.find((v) => v.file.filename === name)?.file ?? next.file
          : next.file;
        saved(next, `Uploaded ${name}${platform ? ` for ${platform}` : ""}: ${bytes(file.size)}, sha256 ${file.sha256}.`);
      }} />`}
    ${!editing && html`<${UseThis} kind=${kind} component=${component} access=${access} />`}
  </section>`;
}

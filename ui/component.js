// One component: all its metadata, and for a write token: edit, replace the file with a progress bar, delete.

import { useEffect, useRef, useState } from "preact/hooks";
import { gql, resumableUpload } from "./api.js";
import {
  Download, ErrorBox, FileView, KINDS, NeedsView, PairsEditor, bytes, html, number, pairs, platformName, time, title,
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

/** One alias of a model and every move it made, oldest first (`modelAliasHistory`). */
function AliasHistory({ name, alias }) {
  const [moves, setMoves] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    gql(`query AliasHistory($name: String!, $alias: String!) {
      moves: modelAliasHistory(name: $name, alias: $alias) { from to at by }
    }`, { name, alias })
      .then(({ moves }) => setMoves(moves))
      .catch(setError);
  }, [name, alias]);
  return html`<li><strong>${alias}</strong>
    <${ErrorBox} error=${error} />
    ${moves && html`<ol class="history" aria-label=${`History of ${alias}`}>
      ${moves.map((move) => html`<li>
        ${move.from === null ? "new" : move.from} → ${move.to === null ? "deleted" : move.to}${", "}<time datetime=${move.at}>${time(move.at)}</time> by ${move.by}</li>`)}
    </ol>`}
  </li>`;
}

function Variants({ variants, access, onError }) {
  if (variants.length === 0) return html`<p class="muted">No per-platform files: every device gets the file above.</p>`;
  return html`<div class="table-scroll"><table class="variants">
    <caption class="visually-hidden">Files for particular platforms</caption>
    <thead><tr><th scope="col">Platform</th><th scope="col">File</th><th scope="col">sha256</th>
      <th scope="col">Uploaded</th></tr></thead>
    <tbody>${variants.map(({ platform, file }) => html`<tr key=${platformName(platform)}>
      <td>${platformName(platform)}</td>
      <td><${Download} file=${file} access=${access} onError=${onError} /></td>
      <td><code class="hash" title=${file.sha256}>${file.sha256}</code></td>
      <td><time datetime=${file.uploadedAt}>${time(file.uploadedAt)}</time></td>
    </tr>`)}</tbody>
  </table></div>`;
}

function Metadata({ kind, component, access, onError }) {
  const spec = KINDS[kind];
  return html`
    <dl class="facts wide">
      ${kind === "model" && html`<dt>Name</dt><dd>${component.name}</dd>
        <dt>Version</dt><dd>${component.version} (<a href=${`#/models?name=${encodeURIComponent(component.name)}`}>all
        versions</a>)</dd>`}
      ${kind !== "model" && html`<dt>Id</dt><dd>${component.id}</dd>`}
      <dt>Description</dt><dd>${component.description || html`<span class="muted">none</span>`}</dd>
      ${spec.hasLibrary && html`<dt>Library</dt><dd>${component.library || html`<span class="muted">none</span>`}</dd>`}
      ${kind === "inferencer" && html`<dt>Uses CUDA</dt><dd>${component.useCuda ? "yes" : "no"}</dd>`}
      ${kind === "transformation" && html`
        <dt>Parameter types</dt><dd><${Json} value=${component.parameterTypes} /></dd>
        <dt>Default values</dt><dd><${Json} value=${component.defaultValues} /></dd>
        <dt>Outputs</dt><dd>${component.outputs.length ? component.outputs.join(", ") : html`<span class="muted">none</span>`}</dd>`}
      ${kind === "model" && html`<dt>Aliases</dt><dd>${component.aliases.length === 0
        ? html`<span class="muted">none</span>`
        : html`<ul class="aliases">${component.aliases.map((alias) => html`<${AliasHistory} key=${alias}
            name=${component.name} alias=${alias} />`)}</ul>`}</dd>`}
      <dt>Locked</dt><dd>${component.locked ? "yes: its files can no longer be replaced" : "no"}</dd>
      <dt>Created</dt><dd><time datetime=${component.createdAt}>${time(component.createdAt)}</time></dd>
      <dt>Updated</dt><dd><time datetime=${component.updatedAt}>${time(component.updatedAt)}</time></dd>
    </dl>
    ${spec.hasNeeds && html`<h2>Needs</h2><${NeedsView} needs=${component.needs} />`}
    <h2>File</h2>
    <${FileView} file=${component.file} access=${access} onError=${onError} full=${true} />
    <h2>Per-platform files</h2>
    <${Variants} variants=${component.variants} access=${access} onError=${onError} />`;
}

function parseJson(text, label) {
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch (error) {
    throw Object.assign(new Error(`${label} is not JSON: ${error.message}`), { code: "INVALID_INPUT" });
  }
}

function EditForm({ kind, component, onSaved, onCancel }) {
  const spec = KINDS[kind];
  const needs = component.needs;
  const [values, setValues] = useState(() => ({
    description: component.description,
    library: component.library ?? "",
    useCuda: component.useCuda ?? false,
    parameterTypes: kind === "transformation" ? JSON.stringify(component.parameterTypes, null, 2) : "",
    defaultValues: kind === "transformation" ? JSON.stringify(component.defaultValues, null, 2) : "",
    outputs: (component.outputs ?? []).join(", "),
    gpu: needs?.gpu ?? false,
    ram: needs?.ram ?? "",
    storage: needs?.storage ?? "",
    libraries: needs?.preinstalledLibraries.map(({ name, version }) => ({ name, version })) ?? [],
    models: needs?.availableModels.map(({ name, version }) => ({ name, version })) ?? [],
  }));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name, value) => setValues({ ...values, [name]: value });
  const text = (name) => ({ id: `edit-${name}`, value: values[name], onInput: (e) => set(name, e.currentTarget.value) });

  const submit = (event) => {
    event.preventDefault();
    setError(null);
    let input;
    try {
      input = { description: values.description };
      if (spec.hasLibrary) input.library = values.library.trim();
      if (kind === "inferencer") input.useCuda = values.useCuda;
      if (kind === "transformation") {
        input.parameterTypes = parseJson(values.parameterTypes, "Parameter types");
        input.defaultValues = parseJson(values.defaultValues, "Default values");
        input.outputs = values.outputs.split(",").map((s) => s.trim()).filter(Boolean);
      }
      if (spec.hasNeeds) {
        input.needs = {
          gpu: values.gpu,
          ram: number(values.ram),
          storage: number(values.storage),
          preinstalledLibraries: pairs(values.libraries),
          availableModels: pairs(values.models),
        };
      }
    } catch (problem) {
      setError(problem);
      return;
    }
    const { declare, pass } = keyArguments(kind);
    const mutation = `mutation Update(${declare}, $input: Update${spec.singular}Input!) {
      updated: update${spec.singular}(${pass}, input: $input) { ${spec.fields} }
    }`;
    setBusy(true);
    gql(mutation, { ...keyVariables(kind, spec.key.map((f) => component[f])), input })
      .then(({ updated }) => onSaved(updated))
      .catch(setError)
      .finally(() => setBusy(false));
  };

  return html`<form class="stack edit" onSubmit=${submit} aria-label="Edit">
    <div class="field"><label for="edit-description">Description</label>
      <textarea rows="3" ...${text("description")}></textarea></div>
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
        <div class="field small"><label for="edit-storage">Storage (GB)</label>
          <input type="number" min="0" step="any" inputmode="decimal" ...${text("storage")} /></div>
      </div>
      <${PairsEditor} legend="Libraries" what="Library" versionHint=">=2.12,<3 or empty for any"
        rows=${values.libraries} onChange=${(rows) => set("libraries", rows)} />
      <${PairsEditor} legend="Models" what="Model" versionHint="version"
        rows=${values.models} onChange=${(rows) => set("models", rows)} />
    </fieldset>`}
    <${ErrorBox} error=${error} />
    <div class="actions">
      <button type="submit" disabled=${busy}>Save</button>
      <button type="button" class="secondary" onClick=${onCancel}>Cancel</button>
    </div>
  </form>`;
}

function ReplaceFile({ kind, component, onUploaded }) {
  const spec = KINDS[kind];
  const input = useRef(null);
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const [running, setRunning] = useState(null);

  const submit = (event) => {
    event.preventDefault();
    const file = input.current.files[0];
    if (!file) return;
    const { declare, pass } = keyArguments(kind);
    const keys = keyVariables(kind, spec.key.map((f) => component[f]));
    const target = kind === "model" ? keys : { kind, ...keys };
    setError(null);
    setProgress({ sent: 0, total: file.size });
    const job = resumableUpload(target, file, (sent, total) => setProgress({ sent, total }));
    setRunning(job);
    job.done
      .then(() => gql(`query Uploaded(${declare}) { uploaded: ${kind}(${pass}) { ${spec.fields} } }`, keys))
      .then(({ uploaded }) => {
        input.current.value = "";
        onUploaded(uploaded);
      })
      .catch(setError)
      .finally(() => {
        setRunning(null);
        setProgress(null);
      });
  };

  const percent = progress && progress.total ? Math.floor((100 * progress.sent) / progress.total) : 0;
  return html`<form class="stack upload" onSubmit=${submit}>
    <div class="field">
      <label for="upload-file">${component.file ? "Replace the file" : "Upload the file"}</label>
      <input id="upload-file" type="file" ref=${input} required disabled=${!!running} />
    </div>
    ${progress && html`<div class="progress">
      <progress id="upload-progress" max="100" value=${percent} aria-label="Upload progress"></progress>
      <span>${bytes(progress.sent)} of ${bytes(progress.total)} (${percent} %)</span>
    </div>`}
    <${ErrorBox} error=${error} />
    <div class="actions">
      <button type="submit" disabled=${!!running}>Upload</button>
      ${running && html`<button type="button" class="secondary" onClick=${() => running.abort()}>Cancel upload</button>`}
    </div>
  </form>`;
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

  useEffect(() => {
    const { declare, pass } = keyArguments(kind);
    gql(`query One(${declare}) { one: ${kind}(${pass}) { ${spec.fields} } }`, keyVariables(kind, keys))
      .then(({ one }) => setComponent(one))
      .catch(setError);
  }, [kind, keys.join("/")]);

  // The heading comes from the address, so it is there (and named) before the component has loaded.
  const heading = html`<p class="crumbs"><a href=${`#/${spec.list}`}>${spec.label}</a></p>
    <h1 tabindex="-1"><span class="kind">${spec.singular}</span> ${keys.join(" · ")}</h1>`;
  if (error && component === undefined) return html`<section>${heading}<${ErrorBox} error=${error} /></section>`;
  if (component === undefined) return html`<section>${heading}<p>Loading…</p></section>`;
  if (component === null) {
    return html`<section>${heading}
      <${ErrorBox} error=${{ code: "NOT_FOUND", message: `There is no ${kind} ${keys.join(" ")}.` }} /></section>`;
  }
  // A lock keeps a file for good; a component without one can still get its first file, and be deleted.
  const fixed = component.locked && component.file !== null;
  const saved = (next, message) => {
    setComponent(next);
    setEditing(false);
    notify(message);
  };
  return html`<section class="component">
    ${heading}
    <${ErrorBox} error=${error} />
    ${!access.write && html`<p class="muted readonly">Read-only view: changes need a write token.</p>`}
    ${access.write && !editing && html`<div class="actions">
      <button type="button" onClick=${() => setEditing(true)}>Edit</button>
      ${!fixed && html`<${DeleteButton} kind=${kind} component=${component} notify=${notify} />`}
    </div>`}
    ${editing
      ? html`<${EditForm} kind=${kind} component=${component} onCancel=${() => setEditing(false)}
          onSaved=${(next) => saved(next, "Saved.")} />`
      : html`<${Metadata} kind=${kind} component=${component} access=${access} onError=${setError} />`}
    ${access.write && !editing && fixed && html`<p class="muted">Locked: its file can no longer be replaced, nor
      the ${spec.singular.toLowerCase()} deleted.</p>`}
    ${access.write && !editing && !fixed && html`<${ReplaceFile} kind=${kind} component=${component}
      onUploaded=${(next) => saved(next, `Uploaded ${next.file.filename}: ${bytes(next.file.size)}, sha256 ${next.file.sha256}.`)} />`}
  </section>`;
}

// "What can this device run?": a device described in a form or pasted as JSON, answered by `runnableOn`. The
// device lives in the page's address (`#/device?device=<JSON>`), so the address is the link to share.

import { useEffect, useState } from "preact/hooks";
import { ApiError, gql } from "./api.js";
import { PipelineCheck } from "./pipeline.js";
import { ErrorBox, KINDS, PairsEditor, componentHref, html, kindOf, number, pairs, plural } from "./format.js";

const PAGE_SIZE = 50;

const EXAMPLE = `{
  "gpu": false,
  "ram": 8,
  "storage": 32,
  "libraries": [{ "name": "tensorflow", "version": "2.13.0" }],
  "models": [{ "name": "fall-detection", "version": "pilot-2-1" }]
}`;

const EMPTY = {
  gpu: false, ram: "", gpuMemory: "", storage: "", libraries: [], models: [], os: "", arch: "", variant: "", accelerators: [],
  rest: {},
};

/**
 * Form state -> the GraphQL `DeviceInput`. Fields the form has no place for (`rest`, from pasted JSON) pass
 * through untouched, so the server judges them rather than the page dropping them.
 */
function deviceInput(form) {
  const device = { ...form.rest, gpu: !!form.gpu, libraries: pairs(form.libraries), models: pairs(form.models) };
  const ram = number(form.ram);
  if (ram !== null) device.ram = ram;
  const gpuMemory = number(form.gpuMemory);
  if (gpuMemory !== null) device.gpuMemory = gpuMemory;
  const storage = number(form.storage);
  if (storage !== null) device.storage = storage;
  const [os, arch, variant] = [form.os, form.arch, form.variant].map((v) => String(v ?? "").trim());
  if (os || arch) {
    device.platform = { ...(form.rest.platform ?? {}), os, arch, accelerators: pairs(form.accelerators) };
    if (variant) device.platform.variant = variant;
    else delete device.platform.variant;
  }
  return device;
}

/** A `DeviceInput` as JSON (pasted or from the address) -> form state; throws on anything else. */
function formFrom(json) {
  const device = JSON.parse(json);
  if (!device || typeof device !== "object" || Array.isArray(device)) throw new Error("a device is a JSON object");
  const rows = (list, what) => {
    if (list === undefined) return [];
    if (!Array.isArray(list)) throw new Error(`"${what}" must be a list of {"name", "version"}`);
    return list.map((item) => ({ name: String(item?.name ?? ""), version: String(item?.version ?? "") }));
  };
  const { gpu, ram, gpuMemory, storage, libraries, models, ...rest } = device;
  const platform = device.platform && typeof device.platform === "object" ? device.platform : null;
  if (device.platform !== undefined && device.platform !== null && !platform) {
    throw new Error('"platform" must be an object like {"os": "linux", "arch": "arm64"}');
  }
  const accelerators = platform?.accelerators === undefined ? [] : rows(platform.accelerators, "platform.accelerators");
  return {
    gpu: gpu === true,
    ram: ram ?? "",
    gpuMemory: gpuMemory ?? "",
    storage: storage ?? "",
    libraries: rows(libraries, "libraries"),
    models: rows(models, "models"),
    os: platform?.os ?? "",
    arch: platform?.arch ?? "",
    variant: platform?.variant ?? "",
    accelerators,
    rest,
  };
}

function Results({ device }) {
  const [items, setItems] = useState([]);
  const [info, setInfo] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const key = JSON.stringify(device);

  const fetchPage = (after, previous) => {
    setLoading(true);
    setError(null);
    const query = `query Runnable($device: DeviceInput!, $first: Int, $after: String) {
      runnableOn(device: $device, first: $first, after: $after) {
        totalCount pageInfo { hasNextPage endCursor }
        nodes {
          __typename
          ... on Transformation { id description }
          ... on Service { id description }
          ... on Inferencer { id description library }
        }
      }
    }`;
    gql(query, { device, first: PAGE_SIZE, after })
      .then(({ runnableOn }) => {
        setItems([...previous, ...runnableOn.nodes]);
        setInfo(runnableOn);
      })
      .catch(setError)
      .finally(() => setLoading(false));
  };
  useEffect(() => {
    setItems([]);
    setInfo(null);
    fetchPage(null, []);
  }, [key]);

  return html`<section class="results" aria-labelledby="results-title">
    <h2 id="results-title">This device can run</h2>
    <${ErrorBox} error=${error} />
    <p aria-live="polite">${loading ? "Checking…" : info
      ? info.totalCount === 0 ? "Nothing in the repository." : plural(info.totalCount, ["component", "components"])
      : ""}</p>
    <ul class="runnable">
      ${items.map((node) => {
        const kind = kindOf(node.__typename);
        return html`<li key=${`${kind}/${node.id}`}>
          <span class="kind">${KINDS[kind].singular}</span>
          <a href=${componentHref(kind, [node.id])}>${node.id}</a>
          ${node.description && html`<span class="muted"> — ${node.description}</span>`}
        </li>`;
      })}
    </ul>
    ${info?.pageInfo.hasNextPage && html`<button type="button" class="secondary" disabled=${loading}
      onClick=${() => fetchPage(info.pageInfo.endCursor, items)}>Show more</button>`}
  </section>`;
}

/** Components the device nearly runs (one or two needs unmet), each need with both values (`unmetNeeds`). */
const NEARLY = 2;
const SCANNED = 100;

function NearlyFits({ device }) {
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  const key = JSON.stringify(device);
  useEffect(() => {
    setItems(null);
    setError(null);
    const part = (list) => `${list}(first: ${SCANNED}) { nodes { __typename id unmetNeeds(device: $device) { need wanted has } } }`;
    gql(`query NearlyFits($device: DeviceInput!) {
      ${part("transformations")} ${part("services")} ${part("inferencers")}
    }`, { device })
      .then((data) => setItems(
        ["transformations", "services", "inferencers"]
          .flatMap((list) => data[list].nodes)
          .filter((node) => node.unmetNeeds.length > 0 && node.unmetNeeds.length <= NEARLY),
      ))
      .catch(setError);
  }, [key]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!items || items.length === 0) return null;
  return html`<section class="results" aria-labelledby="nearly-title">
    <h2 id="nearly-title">Nearly fits: why not</h2>
    <ul class="nearly-fits">
      ${items.map((node) => {
        const kind = kindOf(node.__typename);
        return html`<li key=${`${kind}/${node.id}`}>
          <span class="kind">${KINDS[kind].singular}</span>
          <a href=${componentHref(kind, [node.id])}>${node.id}</a>
          <ul class="unmet">${node.unmetNeeds.map((u) => html`<li key=${u.need}>
            <strong>${u.need}</strong>: needs ${u.wanted}, this device has ${u.has}</li>`)}</ul>
        </li>`;
      })}
    </ul>
  </section>`;
}

export function DevicePage({ params }) {
  const shared = params.get("device");
  const [form, setForm] = useState(EMPTY);
  const [mode, setMode] = useState("form");
  const [pasted, setPasted] = useState("");
  const [error, setError] = useState(null);
  const [device, setDevice] = useState(null);

  // The address is the source of truth: opening a shared link fills the form and asks at once.
  useEffect(() => {
    if (!shared) {
      setDevice(null);
      return;
    }
    try {
      const next = formFrom(shared);
      setForm(next);
      setPasted(JSON.stringify(deviceInput(next), null, 2));
      setDevice(deviceInput(next));
      setError(null);
    } catch (problem) {
      setError(new ApiError("NOT_SENT", `The device in the address is not valid: ${problem.message}`));
    }
  }, [shared]);

  const set = (name, value) => setForm({ ...form, [name]: value });
  const submit = (event) => {
    event.preventDefault();
    let input;
    try {
      input = mode === "json" ? deviceInput(formFrom(pasted)) : deviceInput(form);
    } catch (problem) {
      const what = problem instanceof SyntaxError ? "not valid JSON" : "not a device";
      setError(new ApiError("NOT_SENT", `The pasted device is ${what}: ${problem.message}`));
      return;
    }
    setError(null);
    window.location.hash = `#/device?device=${encodeURIComponent(JSON.stringify(input))}`;
  };
  const switchTo = (next) => {
    if (next === "json") setPasted(JSON.stringify(deviceInput(form), null, 2));
    if (next === "form" && pasted.trim()) {
      try {
        setForm(formFrom(pasted));
      } catch {
        // Left as typed: the JSON view still holds it, and "Check" says what is wrong.
      }
    }
    setMode(next);
  };

  return html`<section>
    <h1 tabindex="-1">What can this device run?</h1>
    <p>Describe a device; the repository answers with every transformation, service and inferencer whose needs
    it meets. The page's address then describes the device: share it to share the answer.</p>
    <div class="segmented" role="group" aria-label="Describe the device with">
      <button type="button" aria-pressed=${mode === "form"} onClick=${() => switchTo("form")}>Form</button>
      <button type="button" aria-pressed=${mode === "json"} onClick=${() => switchTo("json")}>JSON</button>
    </div>
    <form class="stack device" onSubmit=${submit} aria-label="Device">
      ${mode === "form" ? html`
        <label class="check"><input id="device-gpu" type="checkbox" checked=${form.gpu}
          onChange=${(e) => set("gpu", e.currentTarget.checked)} /> Has a GPU</label>
        <div class="row">
          <div class="field small"><label for="device-ram">RAM (GB)</label>
            <input id="device-ram" type="number" min="0" step="any" inputmode="decimal" value=${form.ram}
              placeholder="not checked" onInput=${(e) => set("ram", e.currentTarget.value)} /></div>
          <div class="field small"><label for="device-gpu-memory">GPU memory (GB)</label>
            <input id="device-gpu-memory" type="number" min="0" step="any" inputmode="decimal" value=${form.gpuMemory}
              placeholder="not checked" onInput=${(e) => set("gpuMemory", e.currentTarget.value)} /></div>
          <div class="field small"><label for="device-storage">Free storage (GB)</label>
            <input id="device-storage" type="number" min="0" step="any" inputmode="decimal" value=${form.storage}
              placeholder="not checked" onInput=${(e) => set("storage", e.currentTarget.value)} /></div>
        </div>
        <${PairsEditor} legend="Installed libraries" what="Library" versionHint="exact version, e.g. 2.13.0"
          rows=${form.libraries} onChange=${(rows) => set("libraries", rows)} />
        <${PairsEditor} legend="Models on the device" what="Model" versionHint="version"
          rows=${form.models} onChange=${(rows) => set("models", rows)} />
        <fieldset>
          <legend>Platform (for per-platform files)</legend>
          <div class="row">
            <div class="field small"><label for="device-os">OS</label>
              <input id="device-os" placeholder="linux" value=${form.os} onInput=${(e) => set("os", e.currentTarget.value)} /></div>
            <div class="field small"><label for="device-arch">Architecture</label>
              <input id="device-arch" placeholder="arm64" value=${form.arch} onInput=${(e) => set("arch", e.currentTarget.value)} /></div>
            <div class="field small"><label for="device-variant">Variant</label>
              <input id="device-variant" placeholder="v8" value=${form.variant}
                onInput=${(e) => set("variant", e.currentTarget.value)} /></div>
          </div>
          <${PairsEditor} legend="Accelerators" what="Accelerator" versionHint="version, e.g. 8.6"
            rows=${form.accelerators} onChange=${(rows) => set("accelerators", rows)} />
        </fieldset>`
      : html`<div class="field">
          <label for="device-json">Device JSON (GraphQL <code>DeviceInput</code>)</label>
          <textarea id="device-json" class="mono" rows="9" placeholder=${EXAMPLE} value=${pasted}
            onInput=${(e) => setPasted(e.currentTarget.value)}></textarea>
        </div>`}
      <${ErrorBox} error=${error} />
      <div class="actions"><button type="submit">Check</button></div>
    </form>
    ${device && html`<div class="share field">
      <label for="device-link">Link to this answer</label>
      <input id="device-link" readonly value=${window.location.href} onFocus=${(e) => e.currentTarget.select()} />
    </div>`}
    ${device && html`<${Results} device=${device} />`}
    ${device && html`<${NearlyFits} device=${device} />`}
    ${device && html`<${PipelineCheck} device=${device} />`}
  </section>`;
}

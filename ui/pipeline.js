// "Would this pipeline start here?": an inference server's configuration (model, pre- and postprocessing, services,
// inferencer) resolved for the device of the page by `resolvePipeline`: the file of every part, the sums of their
// needs, and every problem said in words.

import { useState } from "preact/hooks";
import { ApiError, gql } from "./api.js";
import { ErrorBox, bytes, html, platformName, plural } from "./format.js";

const EMPTY = { name: "", version: "", preprocessing: "", postprocessing: "", services: "", inferencer: "" };

/** Ids typed one per line or separated by commas. */
const ids = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

/** The form -> GraphQL `PipelineInput`; a version starting with `@` names an alias. */
function pipelineInput(form) {
  const pipeline = {
    preprocessing: ids(form.preprocessing),
    postprocessing: ids(form.postprocessing),
    services: ids(form.services),
  };
  const [name, version] = [form.name.trim(), form.version.trim()];
  if (name || version) {
    if (!name || !version) throw new Error("a model needs both a name and a version (or @alias)");
    pipeline.model = version.startsWith("@") ? { name, alias: version.slice(1) } : { name, version };
  }
  if (form.inferencer.trim()) pipeline.inferencer = form.inferencer.trim();
  return pipeline;
}

const QUERY = `query ResolvePipeline($device: DeviceInput!, $pipeline: PipelineInput!) {
  resolvePipeline(device: $device, pipeline: $pipeline) {
    fits lock
    totals { ram gpuMemory storage gpu downloadBytes }
    components { role kind key file { filename size sha256 downloadUrl platform { os arch variant accelerator acceleratorVersion precision } } }
    problems { role component code message }
  }
}`;

export function PipelineCheck({ device }) {
  const [form, setForm] = useState(EMPTY);
  const [answer, setAnswer] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const field = (name) => ({
    id: `pipeline-${name}`,
    value: form[name],
    onInput: (e) => setForm({ ...form, [name]: e.currentTarget.value }),
  });
  const submit = (event) => {
    event.preventDefault();
    let pipeline;
    try {
      pipeline = pipelineInput(form);
    } catch (problem) {
      setError(new ApiError("NOT_SENT", `The pipeline is not complete: ${problem.message}.`));
      return;
    }
    setBusy(true);
    setError(null);
    gql(QUERY, { device, pipeline })
      .then(({ resolvePipeline }) => setAnswer(resolvePipeline))
      .catch(setError)
      .finally(() => setBusy(false));
  };
  return html`<section class="results pipeline" aria-labelledby="pipeline-title">
    <h2 id="pipeline-title">Check a pipeline on this device</h2>
    <p>Name what an inference server's configuration names; the repository resolves every part for this device,
    adds up what they need together and says what would stop it.</p>
    <form class="stack" onSubmit=${submit} aria-label="Pipeline">
      <div class="row">
        <div class="field small"><label for="pipeline-name">Model name</label>
          <input placeholder="fall-detection" ...${field("name")} /></div>
        <div class="field small"><label for="pipeline-version">Version or @alias</label>
          <input placeholder="pilot-2-2" ...${field("version")} /></div>
        <div class="field small"><label for="pipeline-inferencer">Inferencer</label>
          <input placeholder="tflite_inferencer" ...${field("inferencer")} /></div>
      </div>
      <div class="row">
        <div class="field"><label for="pipeline-preprocessing">Preprocessing (in order)</label>
          <textarea rows="3" class="mono" ...${field("preprocessing")}></textarea></div>
        <div class="field"><label for="pipeline-postprocessing">Postprocessing (in order)</label>
          <textarea rows="3" class="mono" ...${field("postprocessing")}></textarea></div>
        <div class="field"><label for="pipeline-services">Services</label>
          <textarea rows="3" class="mono" ...${field("services")}></textarea></div>
      </div>
      <${ErrorBox} error=${error} />
      <div class="actions"><button type="submit" disabled=${busy}>Resolve pipeline</button></div>
    </form>
    ${answer && html`<${Resolution} answer=${answer} />`}
  </section>`;
}

function Resolution({ answer }) {
  const { totals } = answer;
  return html`<div class="resolution" aria-live="polite">
    <p class=${answer.fits ? "fits" : "does-not-fit"}><strong>${answer.fits
      ? "Fits: it would start on this device."
      : `Does not fit: ${plural(answer.problems.length, ["problem", "problems"])}.`}</strong></p>
    ${answer.problems.length > 0 && html`<ul class="problems">${answer.problems.map((p, i) => html`<li key=${i}>
      <code>${p.code}</code> ${p.message}</li>`)}</ul>`}
    <div class="table-scroll"><table class="variants pipeline-parts">
      <caption class="visually-hidden">The parts and the file each gets</caption>
      <thead><tr><th scope="col">Part</th><th scope="col">Component</th><th scope="col">File</th>
        <th scope="col">Build</th><th scope="col">Size</th></tr></thead>
      <tbody>${answer.components.map((c, i) => html`<tr key=${i}>
        <td>${c.role.toLowerCase()}</td><td>${c.key}</td>
        <td>${c.file ? html`<a href=${c.file.downloadUrl}>${c.file.filename}</a>` : "none"}</td>
        <td>${c.file?.platform ? platformName(c.file.platform) : c.file ? "any platform" : ""}</td>
        <td>${c.file ? bytes(Number(c.file.size)) : ""}</td>
      </tr>`)}</tbody>
    </table></div>
    <p>Together: RAM ${totals.ram} GB, GPU memory ${totals.gpuMemory} GB${totals.gpu ? " (needs a GPU)" : ""},
      storage ${totals.storage} GB, downloads ${bytes(Number(totals.downloadBytes))}.</p>
    <p class="muted">Lock <code class="hash">${answer.lock}</code>: it changes exactly when what the device would
      fetch changes.</p>
  </div>`;
}

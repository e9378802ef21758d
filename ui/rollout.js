// A model's rollouts (issue #26) on its page: each rollout's progress per hardware class (percent, state, the
// gate's figures for the new and the old version, why a class reverted), pause/resume/abort and a form to start
// one for a write token, and the live devices that report running each version. A rollout advances on the
// server's clock, not through the change feed, so the section re-reads while one is running.

import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, gql } from "./api.js";
import { Breakable, ErrorBox, html, plural, time } from "./format.js";

/** How often the section re-reads while a rollout runs. */
const POLL_MS = 3000;
/** Versions whose devices are listed: the newest ones. */
const DEVICE_VERSIONS = 20;
/** The most device ids shown per version (the count covers all of them). */
const SHOWN_IDS = 20;

const FIGURES = "devices requests errorRate p99Ms";
const ROLLOUT_FIELDS = `id alias fromVersion version steps stepSeconds state startedAt updatedAt finishedAt startedBy
  gate { maxErrorRate maxP99Ratio minReports }
  classes { hardwareClass percent step state stepStartedAt reason candidate { ${FIGURES} } baseline { ${FIGURES} } }`;

const ROLLOUTS = `query Rollouts($model: String!) { rollouts(model: $model) { ${ROLLOUT_FIELDS} } }`;

const ACTIVE = new Set(["RUNNING", "PAUSED"]);
const TONE = { RUNNING: "neutral", PAUSED: "neutral", COMPLETED: "good", ROLLING: "neutral", REVERTED: "bad", ABORTED: "bad" };
const WORDS = {
  RUNNING: "running", PAUSED: "paused", COMPLETED: "completed", REVERTED: "reverted", ABORTED: "aborted",
  ROLLING: "rolling",
};

function StateBadge({ state }) {
  return html`<span class=${`badge ${TONE[state] ?? "neutral"}`}>${WORDS[state] ?? state}</span>`;
}

/** 0.3 -> "30.0 %", 0.05 -> "5.00 %": three significant digits at most. */
const percent = (fraction) => `${(fraction * 100).toFixed(fraction < 0.1 ? 2 : 1)} %`;

/** A gate's figures for one version of a class, or why there are none. */
function Figures({ figures }) {
  if (!figures || figures.devices === 0) return html`<span class="muted">no reports yet</span>`;
  const parts = [plural(figures.devices, ["device", "devices"]), plural(figures.requests, ["request", "requests"])];
  if (figures.errorRate !== null) parts.push(`${percent(figures.errorRate)} errors`);
  if (figures.p99Ms !== null) parts.push(`p99 ${figures.p99Ms.toFixed(1)} ms`);
  return html`<span class="figures">${parts.join(", ")}</span>`;
}

function Actions({ rollout, onChanged }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const act = (mutation, done) => {
    setBusy(true);
    setError(null);
    gql(`mutation Act($id: ID!) { ${mutation}(id: $id) { id state } }`, { id: rollout.id })
      .then(() => onChanged(done))
      .catch(setError)
      .finally(() => setBusy(false));
  };
  const what = `${rollout.alias} → ${rollout.version}`;
  return html`<div class="actions">
    ${rollout.state === "RUNNING" && html`<button type="button" class="secondary" disabled=${busy}
      aria-label=${`Pause the rollout of ${what}`}
      onClick=${() => act("pauseRollout", `Paused the rollout of ${what}.`)}>Pause</button>`}
    ${rollout.state === "PAUSED" && html`<button type="button" disabled=${busy}
      aria-label=${`Resume the rollout of ${what}`}
      onClick=${() => act("resumeRollout", `Resumed the rollout of ${what}.`)}>Resume</button>`}
    <button type="button" class="danger" disabled=${busy} aria-label=${`Abort the rollout of ${what}`}
      onClick=${() => act("abortRollout", `Aborted the rollout of ${what}: ${rollout.alias} stays on ${rollout.fromVersion}.`)}>
      Abort</button>
    <${ErrorBox} error=${error} />
  </div>`;
}

function RolloutCard({ rollout, canWrite, onChanged }) {
  const { gate } = rollout;
  const heading = `rollout-${rollout.id}`;
  return html`<article class="card rollout" aria-labelledby=${heading}>
    <h3 id=${heading}><span><span class="alias">${rollout.alias}</span>: ${rollout.fromVersion} → ${rollout.version}</span>
      <${StateBadge} state=${rollout.state} /></h3>
    <p class="meta">Started <time datetime=${rollout.startedAt}>${time(rollout.startedAt)}</time> by
      ${" "}${rollout.startedBy}${rollout.finishedAt && html`, finished <time datetime=${rollout.finishedAt}>${time(rollout.finishedAt)}</time>`}.
      Steps ${rollout.steps.map((step) => `${step} %`).join(" → ")}, ${plural(rollout.stepSeconds, ["second", "seconds"])} each.
      Gate: at most ${percent(gate.maxErrorRate)} errors and a p99 at most ${gate.maxP99Ratio}× the old version's,
      from at least ${plural(gate.minReports, ["report", "reports"])}.</p>
    ${rollout.classes.length === 0 ? html`<p class="muted">No hardware class: no live device reported.</p>`
      : html`<div class="table-scroll"><table class="versions rollout-classes">
        <caption class="visually-hidden">Progress of ${rollout.alias} → ${rollout.version} per hardware class</caption>
        <thead><tr><th scope="col">Hardware class</th><th scope="col">Devices on ${rollout.version}</th>
          <th scope="col">State</th><th scope="col">New version (${rollout.version})</th>
          <th scope="col">Old version (${rollout.fromVersion})</th></tr></thead>
        <tbody>${rollout.classes.map((c) => html`<tr key=${c.hardwareClass}>
          <th scope="row"><${Breakable} text=${c.hardwareClass} /></th>
          <td data-label=${`On ${rollout.version}`}><progress max="100" value=${c.percent}
              aria-label=${`${c.hardwareClass}: ${c.percent} % on ${rollout.version}`}></progress>
            ${" "}<span class="percent">${c.percent} %</span>
            <span class="muted small step">step ${c.step + 1} of ${rollout.steps.length}</span></td>
          <td data-label="State"><${StateBadge} state=${c.state} />${c.reason && html`<span class="reason">${c.reason}</span>`}</td>
          <td data-label=${`New (${rollout.version})`}><${Figures} figures=${c.candidate} /></td>
          <td data-label=${`Old (${rollout.fromVersion})`}><${Figures} figures=${c.baseline} /></td>
        </tr>`)}</tbody>
      </table></div>`}
    ${canWrite && ACTIVE.has(rollout.state) && html`<${Actions} rollout=${rollout} onChanged=${onChanged} />`}
  </article>`;
}

/** "10, 50, 100" -> [10, 50, 100]; throws on anything else. */
function parseSteps(text) {
  const steps = text.split(/[\s,]+/).filter(Boolean).map((part) => {
    if (!/^\d+$/.test(part)) throw new Error(`"${part}" is not a whole percent`);
    return Number(part);
  });
  if (steps.length === 0) throw new Error("give at least one step, such as 10, 50, 100");
  return steps;
}

function StartForm({ name, versions, onChanged }) {
  const aliases = [...new Set(versions.flatMap((model) => model.aliases))].sort();
  const [alias, setAlias] = useState(aliases.includes("production") ? "production" : aliases[0] ?? "");
  const [version, setVersion] = useState(versions[0]?.version ?? "");
  const [steps, setSteps] = useState("10, 50, 100");
  const [stepSeconds, setStepSeconds] = useState("300");
  const [maxErrorRate, setMaxErrorRate] = useState("5");
  const [maxP99Ratio, setMaxP99Ratio] = useState("1.5");
  const [minReports, setMinReports] = useState("1");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = (event) => {
    event.preventDefault();
    let input;
    try {
      input = {
        model: name,
        alias: alias.trim(),
        version,
        steps: parseSteps(steps),
        stepSeconds: Number(stepSeconds),
        gate: { maxErrorRate: Number(maxErrorRate) / 100, maxP99Ratio: Number(maxP99Ratio), minReports: Number(minReports) },
      };
      if (!input.alias) throw new Error("name the alias to move");
      if (![input.stepSeconds, input.gate.maxErrorRate, input.gate.maxP99Ratio, input.gate.minReports].every(Number.isFinite)) {
        throw new Error("the seconds per step and the gate are numbers");
      }
    } catch (problem) {
      setError(new ApiError("NOT_SENT", `The rollout is not valid: ${problem.message}`));
      return;
    }
    setBusy(true);
    setError(null);
    gql(`mutation StartRollout($input: StartRolloutInput!) { startRollout(input: $input) { id } }`, { input })
      .then(() => onChanged(`Started rolling out ${input.version} as ${input.alias}.`))
      .catch(setError)
      .finally(() => setBusy(false));
  };
  return html`<details class="start-rollout">
    <summary>Start a rollout</summary>
    <form class="stack" onSubmit=${submit} aria-label="Start a rollout">
      <p class="muted small">Moves the alias to the version in steps, per hardware class of the devices that report:
      each class advances on its own once its devices on the new version pass the gate, and reverts when they fail it.</p>
      <div class="row">
        <div class="field small"><label for="rollout-alias">Alias</label>
          <input id="rollout-alias" list="rollout-aliases" value=${alias} placeholder="production"
            onInput=${(e) => setAlias(e.currentTarget.value)} />
          <datalist id="rollout-aliases">${aliases.map((a) => html`<option value=${a} />`)}</datalist></div>
        <div class="field small"><label for="rollout-version">Version</label>
          <select id="rollout-version" value=${version} onChange=${(e) => setVersion(e.currentTarget.value)}>
            ${versions.map((model) => html`<option value=${model.version}>${model.version}</option>`)}
          </select></div>
        <div class="field"><label for="rollout-steps">Steps (percent of each class)</label>
          <input id="rollout-steps" value=${steps} onInput=${(e) => setSteps(e.currentTarget.value)} /></div>
        <div class="field small"><label for="rollout-seconds">Seconds per step</label>
          <input id="rollout-seconds" type="number" min="1" step="1" value=${stepSeconds}
            onInput=${(e) => setStepSeconds(e.currentTarget.value)} /></div>
      </div>
      <fieldset><legend>Gate</legend><div class="row">
        <div class="field small"><label for="rollout-errors">Highest error rate (%)</label>
          <input id="rollout-errors" type="number" min="0" max="100" step="any" value=${maxErrorRate}
            onInput=${(e) => setMaxErrorRate(e.currentTarget.value)} /></div>
        <div class="field small"><label for="rollout-p99">Highest p99 ratio (new / old)</label>
          <input id="rollout-p99" type="number" min="0" step="any" value=${maxP99Ratio}
            onInput=${(e) => setMaxP99Ratio(e.currentTarget.value)} /></div>
        <div class="field small"><label for="rollout-reports">Fewest reports</label>
          <input id="rollout-reports" type="number" min="0" step="1" value=${minReports}
            onInput=${(e) => setMinReports(e.currentTarget.value)} /></div>
      </div></fieldset>
      <${ErrorBox} error=${error} />
      <div class="actions"><button type="submit" disabled=${busy}>Start rollout</button></div>
    </form>
  </details>`;
}

/** The rollouts of model `name`, newest first. `revision` changes when the page reloads (a feed event). */
export function Rollouts({ name, versions, access, revision, notify, onPoll }) {
  const [rollouts, setRollouts] = useState(null);
  const [error, setError] = useState(null);
  // Only the newest request's answer is shown: polls and reloads may cross.
  const latest = useRef(0);
  const load = () => {
    const mine = ++latest.current;
    gql(ROLLOUTS, { model: name })
      .then(({ rollouts: found }) => {
        if (mine !== latest.current) return;
        setRollouts([...found].sort((a, b) => (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0)));
        setError(null);
      })
      .catch((e) => mine === latest.current && setError(e));
  };
  useEffect(load, [name, revision]);
  const active = rollouts?.some((rollout) => ACTIVE.has(rollout.state));
  useEffect(() => {
    if (!active) return undefined;
    const timer = setInterval(() => {
      load();
      onPoll?.();
    }, POLL_MS);
    return () => clearInterval(timer);
  }, [active, name]);
  const changed = (text) => {
    notify?.(text);
    load();
  };
  return html`<section class="rollouts" aria-labelledby="rollouts-title">
    <h2 id="rollouts-title">Rollouts</h2>
    <${ErrorBox} error=${error} />
    ${rollouts === null ? !error && html`<p class="muted">Loading…</p>`
      : rollouts.length === 0 ? html`<p class="muted">No rollout of ${name} yet.</p>`
      : html`<div class="stack">${rollouts.map((rollout) => html`<${RolloutCard} key=${rollout.id} rollout=${rollout}
          canWrite=${access.write} onChanged=${changed} />`)}</div>`}
    ${access.write && versions.length > 0 && html`<${StartForm} name=${name} versions=${versions} onChanged=${changed} />`}
  </section>`;
}

/** The live devices that report running each of the model's newest versions, by hardware class. */
export function DevicesByVersion({ name, versions, revision }) {
  const [found, setFound] = useState(null);
  const [error, setError] = useState(null);
  // Devices report on their own schedule, not through the feed: re-read on demand too.
  const [asked, setAsked] = useState(0);
  const shown = versions.slice(0, DEVICE_VERSIONS);
  const key = shown.map((model) => model.version).join("\n");
  useEffect(() => {
    if (shown.length === 0) {
      setFound([]);
      return;
    }
    const declare = shown.map((_, i) => `$v${i}: String!`).join(", ");
    const parts = shown.map((_, i) => `v${i}: devices(filter: {running: {kind: MODEL, name: $name, version: $v${i}}},
      first: 10000) { id hardwareClass }`).join("\n");
    const variables = { name, ...Object.fromEntries(shown.map((model, i) => [`v${i}`, model.version])) };
    gql(`query DevicesByVersion($name: String!, ${declare}) { ${parts} }`, variables)
      .then((data) => {
        setFound(shown.map((model, i) => ({ version: model.version, devices: data[`v${i}`] })));
        setError(null);
      })
      .catch(setError);
  }, [name, key, revision, asked]);
  const running = found?.filter(({ devices }) => devices.length > 0) ?? [];
  return html`<section class="devices-by-version" aria-labelledby="devices-title">
    <div class="list-head"><h2 id="devices-title">Devices running it</h2>
      <button type="button" class="secondary" onClick=${() => setAsked((n) => n + 1)}>Refresh devices</button></div>
    <${ErrorBox} error=${error} />
    ${found === null ? !error && html`<p class="muted">Loading…</p>`
      : running.length === 0 ? html`<p class="muted">No live device reports running ${name}.</p>`
      : html`<div class="table-scroll"><table class="versions running-versions">
        <caption class="visually-hidden">Live devices running each version of ${name}</caption>
        <thead><tr><th scope="col">Version</th><th scope="col">Devices</th><th scope="col">By hardware class</th>
          <th scope="col">Device ids</th></tr></thead>
        <tbody>${running.map(({ version, devices }) => {
          const byClass = {};
          for (const device of devices) byClass[device.hardwareClass] = (byClass[device.hardwareClass] ?? 0) + 1;
          return html`<tr key=${version}>
            <th scope="row">${version}</th>
            <td>${devices.length >= 10000 ? "10,000 or more" : devices.length}</td>
            <td><ul class="chips">${Object.entries(byClass).sort().map(([hardwareClass, count]) => html`<li key=${hardwareClass}>
              <${Breakable} text=${hardwareClass} />: ${count}</li>`)}</ul></td>
            <td class="small">${devices.slice(0, SHOWN_IDS).map((device) => device.id).join(", ")}${devices.length > SHOWN_IDS ? ", …" : ""}</td>
          </tr>`;
        })}</tbody>
      </table></div>`}
  </section>`;
}

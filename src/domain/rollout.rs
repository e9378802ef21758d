//! Staged alias moves: a rollout moves one alias of a model to a new version hardware class by hardware class,
//! each class through the same steps (percent of its devices) on its own clock, gated on the inference health its
//! devices report; a class whose devices on the new version do worse than those on the old one reverts, the others
//! go on. Everything here is a pure function of the rollout and what the service observed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{DeviceReport, DomainError, Refusal, validate_alias};

/// Most steps a rollout may have.
pub const MAX_STEPS: usize = 20;
/// Longest step: a week.
pub const MAX_STEP_SECONDS: u64 = 7 * 24 * 3600;
/// Most hardware classes one rollout tracks: a fleet has a handful, not thousands.
pub const MAX_CLASSES: usize = 256;

/// What a class's devices on the new version must show at a step's end for the class to go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Errors per request on the new version, at most (0.05 = 5 %).
    pub max_error_rate: f64,
    /// The new version's p99 latency over the old one's, at most.
    pub max_p99_ratio: f64,
    /// Reports from devices on the new version needed before the class is judged; until then it waits.
    pub min_reports: u32,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            max_error_rate: 0.05,
            max_p99_ratio: 1.5,
            min_reports: 1,
        }
    }
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    pub model: String,
    pub alias: String,
    pub version: String,
    pub steps: Vec<u32>,
    pub step_seconds: u64,
    pub gate: Gate,
}

impl RolloutPlan {
    /// Checks the plan; a last step below 100 gets 100 added, so every rollout ends with the whole class.
    pub fn validate(mut self) -> Result<Self, DomainError> {
        validate_alias(&self.alias)?;
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(DomainError::new(
                "steps",
                format!("must hold 1 to {MAX_STEPS} percentages"),
            ));
        }
        if self.steps.iter().any(|s| !(1..=100).contains(s))
            || self.steps.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(DomainError::new(
                "steps",
                "must be increasing percentages between 1 and 100",
            ));
        }
        if self.steps.last() != Some(&100) {
            self.steps.push(100);
        }
        if !(1..=MAX_STEP_SECONDS).contains(&self.step_seconds) {
            return Err(DomainError::new(
                "stepSeconds",
                format!("must be between 1 and {MAX_STEP_SECONDS}"),
            ));
        }
        let gate = &self.gate;
        if !(gate.max_error_rate.is_finite() && (0.0..=1.0).contains(&gate.max_error_rate)) {
            return Err(DomainError::new(
                "gate.maxErrorRate",
                "must be between 0 and 1",
            ));
        }
        if !(gate.max_p99_ratio.is_finite() && gate.max_p99_ratio >= 1.0) {
            return Err(DomainError::new(
                "gate.maxP99Ratio",
                "must be a finite number at least 1",
            ));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    /// At least one class completed: the alias names the new version.
    Completed,
    /// Every class reverted: the alias still names the old version.
    Reverted,
    /// Stopped by a caller: every device is back on the old version.
    Aborted,
}

impl RolloutState {
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassState {
    Rolling,
    Completed,
    Reverted,
}

/// How a group of devices (one class, on one version) did, from their latest reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub devices: u64,
    pub requests: u64,
    pub errors: u64,
    /// Request-weighted mean of the devices' p99 latencies; `None` without requests.
    pub p99_ms: Option<f64>,
}

impl Figures {
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    fn add(&mut self, report: &DeviceReport) {
        let health = &report.health;
        self.devices += 1;
        // Counts are up to 2^53 each (what reports accept), so sums saturate rather than overflow; the mean is
        // weighted in floating point, where any count fits.
        if let Some(p99) = health.p99_ms.filter(|_| health.requests > 0) {
            let (had, adds) = (self.requests as f64, health.requests as f64);
            self.p99_ms = Some((self.p99_ms.unwrap_or(0.0) * had + p99 * adds) / (had + adds));
        }
        self.requests = self.requests.saturating_add(health.requests);
        self.errors = self
            .errors
            .saturating_add(health.errors.min(health.requests));
    }
}

/// One hardware class's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRollout {
    pub hardware_class: String,
    /// Index into the rollout's steps.
    pub step: usize,
    pub state: ClassState,
    pub step_started_at: DateTime<Utc>,
    /// Devices whose cohort point is below this run the new version: fixed at each step from the class's live
    /// devices, so the cohort has exactly the step's share of them, and never lowered, so no device flips back.
    pub threshold: u64,
    /// Why the class waits or reverted.
    pub reason: Option<String>,
    /// The devices on the new version at the last judgement, and those on the old one.
    pub candidate: Option<Figures>,
    pub baseline: Option<Figures>,
}

/// A staged move of `alias` of `model` from `from_version` to `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub model: String,
    pub alias: String,
    pub from_version: String,
    pub version: String,
    pub steps: Vec<u32>,
    pub step_seconds: u64,
    pub gate: Gate,
    pub state: RolloutState,
    pub classes: Vec<ClassRollout>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub started_by: String,
    /// Bumped by every saved change: replicas save as of the revision they read.
    pub revision: u64,
    /// When a pause began: steps do not run while paused, so resuming moves the step clocks on by the pause.
    #[serde(default)]
    pub paused_at: Option<DateTime<Utc>>,
    /// The rollout has ended and its end is applied to the alias (moved, history recorded): until then, an ended
    /// rollout still decides what devices get.
    #[serde(default)]
    pub settled: bool,
}

/// A class whose rollout stopped early, for the feed's `rollout_class_aborted` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassAborted {
    pub rollout: String,
    pub hardware_class: String,
    pub reason: String,
    pub candidate: Figures,
    pub baseline: Figures,
}

/// What a tick changed, beyond the steps themselves.
#[derive(Debug, Default, PartialEq)]
pub struct TickOutcome {
    pub changed: bool,
    pub aborted: Vec<ClassAborted>,
    /// Every class is done: the rollout just finished.
    pub finished: bool,
}

/// The point of a device on its class's line, for cohorts: the same for the same rollout and device, anywhere.
pub fn cohort_point(rollout: &str, device: &str) -> u64 {
    let digest = sha2::Sha256::new()
        .chain_update(rollout.as_bytes())
        .chain_update([0u8])
        .chain_update(device.as_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// The threshold that puts exactly `percent` % (rounded up) of `points` in the cohort.
fn threshold_for(points: &mut [u64], percent: u32) -> u64 {
    if percent >= 100 {
        return u64::MAX;
    }
    let wanted = (points.len() * percent as usize).div_ceil(100);
    if wanted == 0 {
        return 0;
    }
    points.sort_unstable();
    points[wanted - 1].saturating_add(1)
}

impl Rollout {
    /// A new rollout of `plan`, moving the alias from `from_version`; `devices` are the live reports of the fleet,
    /// whose hardware classes become the rollout's classes (more join as they report).
    pub fn start(
        id: String,
        plan: RolloutPlan,
        from_version: String,
        by: &str,
        devices: &[DeviceReport],
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        if plan.version == from_version {
            return Err(DomainError::new(
                "version",
                format!(
                    "alias {} already names version {}: nothing to roll out",
                    plan.alias, from_version
                ),
            ));
        }
        let mut rollout = Rollout {
            id,
            model: plan.model,
            alias: plan.alias,
            from_version,
            version: plan.version,
            steps: plan.steps,
            step_seconds: plan.step_seconds,
            gate: plan.gate,
            state: RolloutState::Running,
            classes: Vec::new(),
            started_at: now,
            updated_at: now,
            finished_at: None,
            started_by: by.to_string(),
            revision: 0,
            paused_at: None,
            settled: false,
        };
        rollout.join_classes(devices, now);
        Ok(rollout)
    }

    pub fn percent(&self, class: &ClassRollout) -> u32 {
        match class.state {
            ClassState::Completed => 100,
            ClassState::Reverted => 0,
            ClassState::Rolling => self.steps.get(class.step).copied().unwrap_or(100),
        }
    }

    /// The version a device of `hardware_class` with id `device` runs now.
    pub fn version_for(&self, device: &str, hardware_class: &str) -> &str {
        if self.state == RolloutState::Aborted {
            return &self.from_version;
        }
        let Some(class) = self
            .classes
            .iter()
            .find(|c| c.hardware_class == hardware_class)
        else {
            // A class not seen yet is judged nowhere: the old version until it joins, the alias's once it ended.
            return match self.state {
                RolloutState::Completed => &self.version,
                _ => &self.from_version,
            };
        };
        match class.state {
            ClassState::Completed => &self.version,
            ClassState::Reverted => &self.from_version,
            ClassState::Rolling if cohort_point(&self.id, device) < class.threshold => {
                &self.version
            }
            ClassState::Rolling => &self.from_version,
        }
    }

    /// Whether a device reports running some version of the rollout's model: only such devices make classes and
    /// cohorts (a device of the fleet that does not run the model has nothing to roll out).
    fn runs_model(&self, report: &DeviceReport) -> bool {
        report
            .running
            .iter()
            .any(|r| matches!(&r.key, super::ComponentKey::Model(m) if m.name == self.model))
    }

    /// Adds the classes of `devices` not tracked yet, at the first step, and sets every rolling class's cohort
    /// for its step from the live devices of the class.
    fn join_classes(&mut self, devices: &[DeviceReport], now: DateTime<Utc>) -> bool {
        let mut points: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for report in devices.iter().filter(|r| self.runs_model(r)) {
            points
                .entry(report.hardware_class.as_str())
                .or_default()
                .push(cohort_point(&self.id, &report.id));
        }
        let mut changed = false;
        for class in points.keys() {
            if self.classes.len() < MAX_CLASSES
                && !self.classes.iter().any(|c| c.hardware_class == *class)
            {
                self.classes.push(ClassRollout {
                    hardware_class: class.to_string(),
                    step: 0,
                    state: ClassState::Rolling,
                    step_started_at: now,
                    threshold: 0,
                    reason: None,
                    candidate: None,
                    baseline: None,
                });
                changed = true;
            }
        }
        for i in 0..self.classes.len() {
            if self.classes[i].state != ClassState::Rolling {
                continue;
            }
            let percent = self.percent(&self.classes[i]);
            let mut class_points = points
                .remove(self.classes[i].hardware_class.as_str())
                .unwrap_or_default();
            let threshold =
                threshold_for(&mut class_points, percent).max(self.classes[i].threshold);
            if threshold != self.classes[i].threshold {
                self.classes[i].threshold = threshold;
                changed = true;
            }
        }
        changed
    }

    /// Whether a tick at `now` has a class to judge: some rolling class's step is over.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        let step = chrono::Duration::seconds(self.step_seconds as i64);
        self.state == RolloutState::Running
            && self
                .classes
                .iter()
                .any(|c| c.state == ClassState::Rolling && now - c.step_started_at >= step)
    }

    /// Moves the rollout on at `now`: new classes join, each rolling class whose step is over is judged on
    /// `devices` (the live reports of the fleet) and goes to its next step, waits for reports, or reverts.
    pub fn tick(&mut self, devices: &[DeviceReport], now: DateTime<Utc>) -> TickOutcome {
        let mut outcome = TickOutcome::default();
        if self.state != RolloutState::Running {
            return outcome;
        }
        let step = chrono::Duration::seconds(self.step_seconds as i64);
        let mut gone = Vec::new();
        for i in 0..self.classes.len() {
            let class = &self.classes[i];
            if class.state != ClassState::Rolling || now - class.step_started_at < step {
                continue;
            }
            let members = devices
                .iter()
                .filter(|r| r.hardware_class == class.hardware_class && self.runs_model(r))
                .count();
            if members == 0 {
                // Its devices all left (expired, or stopped running the model): it no longer holds the rollout
                // up, and joins again at the first step if they come back.
                gone.push(i);
                continue;
            }
            let (candidate, baseline) = self.figures(&self.classes[i], devices);
            let verdict = self.judge(&candidate, &baseline);
            let class = &mut self.classes[i];
            class.candidate = Some(candidate.clone());
            class.baseline = Some(baseline.clone());
            outcome.changed = true;
            match verdict {
                Verdict::Wait(why) => class.reason = Some(why),
                Verdict::Fail(why) => {
                    class.state = ClassState::Reverted;
                    class.threshold = 0;
                    class.reason = Some(why.clone());
                    outcome.aborted.push(ClassAborted {
                        rollout: self.id.clone(),
                        hardware_class: class.hardware_class.clone(),
                        reason: why,
                        candidate,
                        baseline,
                    });
                }
                Verdict::Pass if class.step + 1 >= self.steps.len() => {
                    class.state = ClassState::Completed;
                    class.threshold = u64::MAX;
                    class.reason = None;
                }
                Verdict::Pass => {
                    class.step += 1;
                    class.step_started_at = now;
                    class.reason = None;
                }
            }
        }
        if !gone.is_empty() {
            let mut index = 0;
            self.classes.retain(|_| {
                index += 1;
                !gone.contains(&(index - 1))
            });
            outcome.changed = true;
        }
        outcome.changed |= self.join_classes(devices, now);
        if !self.classes.is_empty() && self.classes.iter().all(|c| c.state != ClassState::Rolling) {
            self.state = if self
                .classes
                .iter()
                .any(|c| c.state == ClassState::Completed)
            {
                RolloutState::Completed
            } else {
                RolloutState::Reverted
            };
            self.finished_at = Some(now);
            outcome.finished = true;
            outcome.changed = true;
        }
        if outcome.changed {
            self.updated_at = now;
        }
        outcome
    }

    /// The class's devices on the new version that reported since its step began, and those on the old version.
    fn figures(&self, class: &ClassRollout, devices: &[DeviceReport]) -> (Figures, Figures) {
        let (mut candidate, mut baseline) = (Figures::default(), Figures::default());
        let runs = |report: &DeviceReport, version: &str| {
            report.running.iter().any(|r| {
                matches!(&r.key, super::ComponentKey::Model(m) if m.name == self.model && m.version == version)
            })
        };
        for report in devices
            .iter()
            .filter(|r| r.hardware_class == class.hardware_class)
        {
            if runs(report, &self.version) {
                if report.received_at >= class.step_started_at {
                    candidate.add(report);
                }
            } else if runs(report, &self.from_version) {
                baseline.add(report);
            }
        }
        (candidate, baseline)
    }

    fn judge(&self, candidate: &Figures, baseline: &Figures) -> Verdict {
        let gate = &self.gate;
        if candidate.devices < u64::from(gate.min_reports) {
            return Verdict::Wait(format!(
                "waiting for reports: {} of {} from devices on {}",
                candidate.devices, gate.min_reports, self.version
            ));
        }
        if let Some(rate) = candidate.error_rate()
            && rate > gate.max_error_rate
        {
            return Verdict::Fail(format!(
                "error rate {:.2} % on {} is above the gate's {:.2} % ({} of {} requests; {} on {})",
                rate * 100.0,
                self.version,
                gate.max_error_rate * 100.0,
                candidate.errors,
                candidate.requests,
                baseline
                    .error_rate()
                    .map_or("no figure".to_string(), |r| format!("{:.2} %", r * 100.0)),
                self.from_version
            ));
        }
        if let (Some(new), Some(old)) = (candidate.p99_ms, baseline.p99_ms)
            && old > 0.0
            && new / old > gate.max_p99_ratio
        {
            return Verdict::Fail(format!(
                "p99 latency {new:.1} ms on {} is {:.2}× the {old:.1} ms on {}, above the gate's {:.2}×",
                self.version,
                new / old,
                self.from_version,
                gate.max_p99_ratio
            ));
        }
        Verdict::Pass
    }

    /// Stops the steps; the cohorts stay where they are.
    pub fn pause(&mut self, now: DateTime<Utc>) -> Result<(), Refusal> {
        match self.state {
            RolloutState::Running => {
                self.state = RolloutState::Paused;
                self.paused_at = Some(now);
                self.touch(now);
                Ok(())
            }
            RolloutState::Paused => Ok(()),
            _ => Err(self.finished_refusal("pause")),
        }
    }

    /// Runs the steps again; each class's step clock moves on by the pause, so no step is cut short by it.
    pub fn resume(&mut self, now: DateTime<Utc>) -> Result<(), Refusal> {
        match self.state {
            RolloutState::Paused => {
                let paused = now - self.paused_at.unwrap_or(now);
                for class in &mut self.classes {
                    class.step_started_at += paused;
                }
                self.state = RolloutState::Running;
                self.paused_at = None;
                self.touch(now);
                Ok(())
            }
            RolloutState::Running => Ok(()),
            _ => Err(self.finished_refusal("resume")),
        }
    }

    /// Ends the rollout with every device back on the old version; the alias never moved.
    pub fn abort(&mut self, now: DateTime<Utc>) -> Result<(), Refusal> {
        if !self.state.is_active() {
            return Err(self.finished_refusal("abort"));
        }
        self.state = RolloutState::Aborted;
        for class in &mut self.classes {
            if class.state == ClassState::Rolling {
                class.state = ClassState::Reverted;
                class.threshold = 0;
                class.reason = Some("the rollout was aborted".into());
            }
        }
        self.finished_at = Some(now);
        self.paused_at = None;
        self.touch(now);
        Ok(())
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
    }

    fn finished_refusal(&self, what: &str) -> Refusal {
        Refusal::RolloutFinished(format!(
            "rollout {} is {}: there is nothing to {what}",
            self.id,
            match self.state {
                RolloutState::Completed => "completed",
                RolloutState::Reverted => "reverted",
                _ => "aborted",
            }
        ))
    }

    /// Where the alias ends, and the record its history keeps of the rollout.
    pub fn outcome(&self) -> RolloutOutcome {
        let of = |state| {
            self.classes
                .iter()
                .filter(|c| c.state == state)
                .map(|c| c.hardware_class.clone())
                .collect()
        };
        RolloutOutcome {
            id: self.id.clone(),
            state: self.state,
            version: self.version.clone(),
            completed: of(ClassState::Completed),
            reverted: of(ClassState::Reverted),
        }
    }
}

/// A rollout's end, as the alias's history records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutOutcome {
    pub id: String,
    pub state: RolloutState,
    /// The version it rolled out.
    pub version: String,
    /// Hardware classes that completed, and that reverted.
    pub completed: Vec<String>,
    pub reverted: Vec<String>,
}

enum Verdict {
    Pass,
    Wait(String),
    Fail(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::device_report::parse_report;

    fn started(id: &str, steps: &[u32], devices: &[DeviceReport], at: DateTime<Utc>) -> Rollout {
        let plan = plan(steps).validate().unwrap();
        Rollout::start(id.into(), plan, "1".into(), "t", devices, at).unwrap()
    }

    /// The same reports, as received again at `at`.
    fn received_at(reports: &[DeviceReport], at: DateTime<Utc>) -> Vec<DeviceReport> {
        reports
            .iter()
            .map(|d| DeviceReport {
                received_at: at,
                ..d.clone()
            })
            .collect()
    }

    fn plan(steps: &[u32]) -> RolloutPlan {
        RolloutPlan {
            model: "m".into(),
            alias: "production".into(),
            version: "2".into(),
            steps: steps.to_vec(),
            step_seconds: 60,
            gate: Gate::default(),
        }
    }

    fn report(
        id: &str,
        arch: &str,
        version: &str,
        requests: u64,
        errors: u64,
        p99: f64,
        at: DateTime<Utc>,
    ) -> DeviceReport {
        let body = serde_json::json!({
            "device": {"platform": {"os": "linux", "arch": arch}},
            "running": [{"kind": "model", "name": "m", "version": version}],
            "health": {"requests": requests, "errors": errors, "p99Ms": p99},
        });
        parse_report(id, body.to_string().as_bytes(), "t", at).unwrap()
    }

    fn fleet(n: usize, arch: &str, version: &str, at: DateTime<Utc>) -> Vec<DeviceReport> {
        (0..n)
            .map(|i| report(&format!("{arch}-{i}"), arch, version, 100, 0, 10.0, at))
            .collect()
    }

    #[test]
    fn plans_are_checked_and_end_at_the_whole_class() {
        assert_eq!(plan(&[10, 50]).validate().unwrap().steps, vec![10, 50, 100]);
        for bad in [&[][..], &[0], &[50, 50], &[60, 10], &[101]] {
            assert!(plan(bad).validate().is_err(), "{bad:?}");
        }
        let mut p = plan(&[10]);
        p.gate.max_p99_ratio = 0.5;
        assert!(p.validate().is_err());
    }

    #[test]
    fn cohorts_are_deterministic_and_sized_exactly() {
        let now = crate::domain::now();
        let devices = fleet(200, "arm64", "1", now);
        let r = started("r1", &[10, 50], &devices, now);
        let on_new = |r: &Rollout| {
            devices
                .iter()
                .filter(|d| r.version_for(&d.id, &d.hardware_class) == "2")
                .count()
        };
        assert_eq!(on_new(&r), 20);
        let again = started("r1", &[10, 50], &devices, now);
        for d in &devices {
            assert_eq!(
                r.version_for(&d.id, &d.hardware_class),
                again.version_for(&d.id, &d.hardware_class)
            );
        }
        // Another rollout slices the class otherwise.
        let other = started("r2", &[10, 50], &devices, now);
        assert!(
            devices
                .iter()
                .any(|d| r.version_for(&d.id, &d.hardware_class)
                    != other.version_for(&d.id, &d.hardware_class))
        );
    }

    #[test]
    fn a_degraded_class_reverts_while_the_others_complete() {
        let t0 = crate::domain::now();
        let mut devices = fleet(20, "arm64", "1", t0);
        devices.extend(fleet(20, "amd64", "1", t0));
        let mut r = started("r", &[50], &devices, t0);
        assert_eq!(r.classes.len(), 2);
        let t1 = t0 + chrono::Duration::seconds(61);
        // Each device runs what the rollout gives it; the amd64 devices on the new version fail half their requests.
        let reports: Vec<DeviceReport> = devices
            .iter()
            .map(|d| {
                let v = r.version_for(&d.id, &d.hardware_class).to_string();
                let bad = v == "2" && d.id.starts_with("amd64");
                report(
                    &d.id,
                    if d.id.starts_with("arm64") {
                        "arm64"
                    } else {
                        "amd64"
                    },
                    &v,
                    100,
                    if bad { 50 } else { 0 },
                    10.0,
                    t1,
                )
            })
            .collect();
        let outcome = r.tick(&reports, t1);
        assert_eq!(outcome.aborted.len(), 1);
        assert_eq!(outcome.aborted[0].hardware_class, "linux/amd64/v1");
        assert!(
            outcome.aborted[0].reason.contains("error rate 50.00 %"),
            "{}",
            outcome.aborted[0].reason
        );
        assert!(
            reports
                .iter()
                .filter(|d| d.id.starts_with("amd64"))
                .all(|d| r.version_for(&d.id, &d.hardware_class) == "1")
        );
        assert_eq!(r.percent(&r.classes[1]), 100);
        let t2 = t1 + chrono::Duration::seconds(61);
        let reports = received_at(&reports, t2);
        let outcome = r.tick(&reports, t2);
        assert!(outcome.finished);
        assert_eq!(r.state, RolloutState::Completed);
        assert_eq!(r.outcome().reverted, vec!["linux/amd64/v1".to_string()]);
    }

    #[test]
    fn a_slow_new_version_reverts_and_missing_reports_wait() {
        let t0 = crate::domain::now();
        let devices = fleet(10, "arm64", "1", t0);
        let mut r = started("r", &[50], &devices, t0);
        let t1 = t0 + chrono::Duration::seconds(61);
        // Nobody reported since the step began: the class waits.
        let outcome = r.tick(&devices, t1);
        assert!(outcome.aborted.is_empty());
        assert!(
            r.classes[0]
                .reason
                .as_deref()
                .unwrap()
                .starts_with("waiting for reports")
        );
        let reports: Vec<DeviceReport> = devices
            .iter()
            .map(|d| {
                let v = r.version_for(&d.id, &d.hardware_class).to_string();
                report(
                    &d.id,
                    "arm64",
                    &v,
                    100,
                    0,
                    if v == "2" { 30.0 } else { 10.0 },
                    t1,
                )
            })
            .collect();
        let outcome = r.tick(&reports, t1);
        assert!(
            outcome.aborted[0].reason.contains("3.00×"),
            "{}",
            outcome.aborted[0].reason
        );
        assert_eq!(r.state, RolloutState::Reverted);
        assert!(
            r.outcome().completed.is_empty(),
            "no class completed: the alias stays on 1"
        );
    }

    #[test]
    fn pauses_do_not_cut_steps_short_and_finished_rollouts_refuse() {
        let t0 = crate::domain::now();
        let devices = fleet(10, "arm64", "1", t0);
        let mut r = started("r", &[50], &devices, t0);
        r.pause(t0 + chrono::Duration::seconds(30)).unwrap();
        assert_eq!(
            r.tick(&devices, t0 + chrono::Duration::seconds(90)),
            TickOutcome::default()
        );
        r.resume(t0 + chrono::Duration::seconds(90)).unwrap();
        assert_eq!(
            r.classes[0].step_started_at,
            t0 + chrono::Duration::seconds(60)
        );
        r.abort(t0 + chrono::Duration::seconds(91)).unwrap();
        assert!(
            devices
                .iter()
                .all(|d| r.version_for(&d.id, &d.hardware_class) == "1")
        );
        assert!(matches!(r.pause(t0), Err(Refusal::RolloutFinished(_))));
    }

    #[test]
    fn classes_are_those_running_the_model_and_a_class_whose_devices_left_lets_the_rollout_end() {
        let t0 = crate::domain::now();
        let mut devices = fleet(4, "arm64", "1", t0);
        // A device that runs another model makes no class.
        let mut other = report("pc-0", "amd64", "1", 1, 0, 1.0, t0);
        other.running[0].key = crate::domain::ComponentKey::model("other", "1").unwrap();
        devices.push(other);
        let mut r = started("r", &[50], &devices, t0);
        assert_eq!(r.classes.len(), 1, "{:?}", r.classes);
        // A class of the model appears, then its devices expire before its step ends.
        let pc = fleet(2, "amd64", "1", t0);
        r.tick(&[devices.clone(), pc].concat(), t0);
        assert_eq!(r.classes.len(), 2);
        let t1 = t0 + chrono::Duration::seconds(61);
        let reports: Vec<DeviceReport> = devices[..4]
            .iter()
            .map(|d| {
                let v = r.version_for(&d.id, &d.hardware_class).to_string();
                report(&d.id, "arm64", &v, 100, 0, 10.0, t1)
            })
            .collect();
        r.tick(&reports, t1);
        assert_eq!(r.classes.len(), 1, "the amd64 class left with its devices");
        let t2 = t1 + chrono::Duration::seconds(61);
        let reports = received_at(&reports, t2);
        assert!(r.tick(&reports, t2).finished);
        assert_eq!(r.state, RolloutState::Completed);
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let t0 = crate::domain::now();
        let big = crate::domain::device_report::MAX_COUNT;
        let devices: Vec<DeviceReport> = (0..6000)
            .map(|i| report(&format!("d{i}"), "arm64", "1", big, 0, 10.0, t0))
            .collect();
        let mut r = started("r", &[50], &devices, t0);
        let t1 = t0 + chrono::Duration::seconds(61);
        let reports: Vec<DeviceReport> = devices
            .iter()
            .map(|d| {
                let v = r.version_for(&d.id, &d.hardware_class).to_string();
                report(&d.id, "arm64", &v, big, 0, 10.0, t1)
            })
            .collect();
        r.tick(&reports, t1);
        let candidate = r.classes[0].candidate.clone().unwrap();
        assert_eq!(candidate.requests, u64::MAX);
        assert!(
            (candidate.p99_ms.unwrap() - 10.0).abs() < 1e-9,
            "{candidate:?}"
        );
        assert_eq!(r.classes[0].step, 1, "judged and passed");
    }
}

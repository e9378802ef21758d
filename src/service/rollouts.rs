//! Staged alias moves: start, pause, resume and abort a rollout, step every open rollout on the ticker (on every
//! replica: saves are compare-and-set, so one wins each step), apply an ended rollout to its alias, and answer a
//! device asking for an alias with its cohort's version.

use std::time::Duration;

use super::devices::MAX_DEVICES_LISTED;
use super::{RepositoryService, ServiceError};
use crate::domain::rollout::{ClassState, Rollout, RolloutPlan, RolloutState};
use crate::domain::{ComponentKey, DeviceReport, EventDraft, EventType, Refusal};
use crate::store::{DeviceQuery, StoreError};

/// How often open rollouts are stepped unless configured.
pub const DEFAULT_ROLLOUT_TICK: Duration = Duration::from_secs(1);
/// Longest time between two reads of the fleet's reports while a rollout is open.
const COHORT_REFRESH: Duration = Duration::from_secs(10);
/// Attempts at a caller's change when the ticker (or another replica) saves the rollout in between.
const SAVE_ATTEMPTS: usize = 8;

impl RepositoryService {
    /// Starts moving `plan.alias` from where it points to `plan.version`, class by class; `by` is the caller's
    /// token label.
    pub async fn start_rollout(
        &self,
        plan: RolloutPlan,
        by: &str,
    ) -> Result<Rollout, ServiceError> {
        self.writable()?;
        let plan = plan.validate()?;
        let from = self.resolve_alias(&plan.model, &plan.alias).await?;
        let ComponentKey::Model(from) = from else {
            return Err(ServiceError::internal(
                "an alias resolved to a key that is no model",
            ));
        };
        let target = ComponentKey::model(plan.model.clone(), plan.version.clone())?;
        self.check_alias_target(&target, &plan.alias).await?;
        let devices = self.live_reports().await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let rollout = Rollout::start(id, plan, from.version, by, &devices, crate::domain::now())?;
        let event = EventDraft::rollout(EventType::RolloutStarted, &rollout, None)?;
        self.store
            .rollouts()
            .insert_rollout(&rollout, event)
            .await?;
        Ok(rollout)
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<Rollout>, ServiceError> {
        Ok(self.store.rollouts().rollout(id).await?)
    }

    /// The rollouts of a model, newest first.
    pub async fn rollouts(&self, model: &str) -> Result<Vec<Rollout>, ServiceError> {
        Ok(self.store.rollouts().rollouts(model).await?)
    }

    pub async fn pause_rollout(&self, id: &str) -> Result<Rollout, ServiceError> {
        self.change_rollout(id, |r, now| r.pause(now)).await
    }

    pub async fn resume_rollout(&self, id: &str) -> Result<Rollout, ServiceError> {
        self.change_rollout(id, |r, now| r.resume(now)).await
    }

    /// Ends a rollout with every device back on the old version.
    pub async fn abort_rollout(&self, id: &str) -> Result<Rollout, ServiceError> {
        let rollout = self.change_rollout(id, |r, now| r.abort(now)).await?;
        self.settle_rollout(rollout).await
    }

    /// Applies `change` to the stored rollout and saves it, reading again when someone saved in between.
    async fn change_rollout(
        &self,
        id: &str,
        change: impl Fn(&mut Rollout, chrono::DateTime<chrono::Utc>) -> Result<(), Refusal>,
    ) -> Result<Rollout, ServiceError> {
        self.writable()?;
        for _ in 0..SAVE_ATTEMPTS {
            let mut rollout = self
                .rollout(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("rollout {id} not found")))?;
            let before = rollout.clone();
            change(&mut rollout, crate::domain::now()).map_err(StoreError::from)?;
            if rollout == before {
                return Ok(rollout);
            }
            rollout.revision += 1;
            if self
                .store
                .rollouts()
                .save_rollout(&rollout, false, Vec::new())
                .await?
            {
                return Ok(rollout);
            }
        }
        Err(ServiceError::Conflict(format!(
            "rollout {id} kept changing while this change was saved; try again"
        )))
    }

    /// The live reports of the whole fleet: what cohorts are cut from and gates judge.
    async fn live_reports(&self) -> Result<Vec<DeviceReport>, ServiceError> {
        let query = DeviceQuery {
            since: self.live_since(),
            limit: MAX_DEVICES_LISTED * 10,
            ..DeviceQuery::default()
        };
        Ok(self.store.devices().reports(&query).await?)
    }

    /// Steps every open rollout once; returns how many changed. Runs on every replica.
    pub async fn tick_rollouts(&self) -> Result<u64, ServiceError> {
        if self.writable().is_err() {
            return Ok(0);
        }
        let open = self.store.rollouts().open_rollouts().await?;
        if open.is_empty() {
            return Ok(0);
        }
        // Reading the fleet's reports costs a pass over them: done when a class is due to be judged, and now and
        // then to take in new classes and keep cohorts the right size as devices come and go.
        let now = crate::domain::now();
        let refresh = {
            let mut last = self
                .rollout_refresh
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let stale = last.is_none_or(|at| at.elapsed() >= COHORT_REFRESH);
            let due = stale || open.iter().any(|r| r.due(now));
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if !refresh && open.iter().all(|r| r.state.is_active()) {
            return Ok(0);
        }
        let devices = if refresh {
            self.live_reports().await?
        } else {
            Vec::new()
        };
        let mut changed = 0;
        for mut rollout in open {
            if rollout.state.is_active() && refresh {
                let outcome = rollout.tick(&devices, now);
                if !outcome.changed {
                    continue;
                }
                rollout.revision += 1;
                let mut events = Vec::new();
                for aborted in &outcome.aborted {
                    tracing::warn!(
                        rollout = %rollout.id, class = %aborted.hardware_class, reason = %aborted.reason,
                        "a hardware class failed its rollout's gate and reverted"
                    );
                    events.push(EventDraft::rollout(
                        EventType::RolloutClassAborted,
                        &rollout,
                        Some(aborted),
                    )?);
                }
                // The end is saved before it is applied to the alias: a pause or an abort saved in between wins
                // the compare-and-set, and the alias never moves for a rollout that did not end so. Until it is
                // applied, the ended rollout still answers every device that gives its id.
                if !self
                    .store
                    .rollouts()
                    .save_rollout(&rollout, false, events)
                    .await?
                {
                    // Another replica (or a caller) saved it first.
                    continue;
                }
                changed += 1;
            }
            if !rollout.state.is_active() {
                self.settle_rollout(rollout).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Applies an ended rollout to its alias (moved when some class completed, its history told either way) and
    /// closes it. Each step is idempotent, so a replica that dies half way leaves it to the next tick.
    async fn settle_rollout(&self, mut rollout: Rollout) -> Result<Rollout, ServiceError> {
        self.apply_end(&rollout).await?;
        rollout.revision += 1;
        rollout.settled = true;
        // `rollout_ended` is written once the alias is where the rollout left it.
        let ended = EventDraft::rollout(EventType::RolloutEnded, &rollout, None)?;
        self.store
            .rollouts()
            .save_rollout(&rollout, true, vec![ended])
            .await?;
        Ok(rollout)
    }

    /// Moves the alias to where an ended rollout leaves it and records the outcome in its history; both are
    /// idempotent.
    async fn apply_end(&self, rollout: &Rollout) -> Result<(), ServiceError> {
        let by = format!("rollout {}", rollout.id);
        if rollout.state == RolloutState::Completed {
            self.store
                .aliases()
                .move_alias(
                    &rollout.model,
                    &rollout.alias,
                    Some(&rollout.version),
                    &by,
                    None,
                )
                .await?;
        }
        self.store
            .aliases()
            .record_rollout(&rollout.model, &rollout.alias, &rollout.outcome(), &by)
            .await?;
        Ok(())
    }

    /// The version of `alias` a device gets: its cohort's while a rollout moves the alias (the old version for
    /// a device that never reported, or whose class the rollout has not taken in yet), and after a rollout that
    /// reverted some classes, the old version for theirs. Without a device, where the alias points.
    pub async fn resolve_alias_for(
        &self,
        name: &str,
        alias: &str,
        device: Option<&str>,
    ) -> Result<ComponentKey, ServiceError> {
        let stable = self.resolve_alias(name, alias).await?;
        let Some(device) = device else {
            return Ok(stable);
        };
        crate::domain::device_report::validate_device_id(device)?;
        let ComponentKey::Model(model) = &stable else {
            return Ok(stable);
        };
        let Some(rollout) = self.deciding_rollout(name, alias, &model.version).await? else {
            return Ok(stable);
        };
        let Some(report) = self.device(device).await? else {
            return Ok(stable);
        };
        let mut version = rollout
            .version_for(device, &report.hardware_class)
            .to_string();
        if rollout.state.is_active() && version == rollout.from_version {
            // Out of this rollout's cohort, the device stays where it was before it began: a class an earlier
            // rollout reverted stays on that rollout's old version.
            version = self
                .pinned_before(&rollout, &report.hardware_class)
                .await?
                .unwrap_or(version);
        }
        Ok(ComponentKey::model(name, version)?)
    }

    /// The version an earlier completed rollout pins `class` to, when the alias still named that rollout's
    /// version as `rollout` began and the class had reverted in it.
    async fn pinned_before(
        &self,
        rollout: &Rollout,
        class: &str,
    ) -> Result<Option<String>, ServiceError> {
        let earlier = self.store.rollouts().rollouts(&rollout.model).await?;
        // The last that completed before it; the others left the alias where it was.
        let Some(r) = earlier.iter().find(|r| {
            r.alias == rollout.alias
                && r.id != rollout.id
                && r.started_at <= rollout.started_at
                && r.state == RolloutState::Completed
        }) else {
            return Ok(None);
        };
        let reverted = r
            .classes
            .iter()
            .any(|c| c.hardware_class == class && c.state == ClassState::Reverted);
        Ok((r.version == rollout.from_version && reverted).then(|| r.from_version.clone()))
    }

    /// The rollout that decides what a device gets of an alias now pointing at `current`: one that moves it, or
    /// has ended without its end applied yet (so no device flips back in between), or the last that completed
    /// with reverted classes while the alias still names its version (their pins hold until the alias moves).
    /// Rollouts that ended without moving the alias (reverted, aborted) are passed over.
    async fn deciding_rollout(
        &self,
        name: &str,
        alias: &str,
        current: &str,
    ) -> Result<Option<Rollout>, ServiceError> {
        let deciding = |r: &Rollout| {
            if r.state.is_active() || !r.settled {
                return Some(true);
            }
            match r.state {
                RolloutState::Completed => Some(
                    r.version == current
                        && r.classes.iter().any(|c| c.state == ClassState::Reverted),
                ),
                _ => None,
            }
        };
        let Some(latest) = self.store.rollouts().latest_rollout(name, alias).await? else {
            return Ok(None);
        };
        match deciding(&latest) {
            Some(true) => return Ok(Some(latest)),
            Some(false) => return Ok(None),
            None => {}
        }
        // The newest rollout left the alias where it was: an older completed one may still pin classes.
        for rollout in self.store.rollouts().rollouts(name).await? {
            if rollout.alias != alias || rollout.id == latest.id {
                continue;
            }
            match deciding(&rollout) {
                Some(true) => return Ok(Some(rollout)),
                Some(false) => return Ok(None),
                None => {}
            }
        }
        Ok(None)
    }

    /// Refuses a move of `alias` of `model` while a rollout moves it.
    pub(super) async fn check_no_rollout(
        &self,
        model: &str,
        alias: &str,
    ) -> Result<(), ServiceError> {
        match self.store.rollouts().latest_rollout(model, alias).await? {
            Some(r) if r.state.is_active() => Err(ServiceError::RolloutActive(format!(
                "rollout {} is moving alias {alias} of model {model}: pause, abort or let it finish first",
                r.id
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses deleting a model version an active rollout moves an alias from or to.
    pub(super) async fn check_not_rolled_out(
        &self,
        key: &ComponentKey,
    ) -> Result<(), ServiceError> {
        let ComponentKey::Model(model) = key else {
            return Ok(());
        };
        let rollouts = self.store.rollouts().rollouts(&model.name).await?;
        match rollouts.iter().find(|r| {
            r.state.is_active() && (r.version == model.version || r.from_version == model.version)
        }) {
            Some(r) => Err(ServiceError::RolloutActive(format!(
                "rollout {} moves alias {} between {} and {}: abort it or let it finish first",
                r.id, r.alias, r.from_version, r.version
            ))),
            None => Ok(()),
        }
    }
}

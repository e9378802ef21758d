//! Rollouts in GraphQL: `startRollout`, `pauseRollout`, `resumeRollout`, `abortRollout`, `rollout(id)`,
//! `rollouts(model)`, and what rollout events carry.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use crate::api::error::GqlResultExt;
use crate::domain::rollout::{self as domain, RolloutPlan};
use crate::service::RepositoryService;

/// Where a rollout is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::domain::rollout::RolloutState")]
pub enum RolloutState {
    /// Classes are stepping.
    Running,
    /// No class steps until `resumeRollout`; cohorts stay as they are.
    Paused,
    /// Every class completed or reverted, at least one completed: the alias names the new version (devices of
    /// reverted classes that give their id keep the old one).
    Completed,
    /// Every class reverted: the alias still names the old version.
    Reverted,
    /// Stopped by `abortRollout`: every device is back on the old version.
    Aborted,
}

/// Where one hardware class of a rollout is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::domain::rollout::ClassState")]
pub enum RolloutClassState {
    /// Stepping through the rollout's steps (`percent` of its devices on the new version).
    Rolling,
    /// All its devices run the new version.
    Completed,
    /// It failed the gate (or the rollout was aborted): all its devices run the old version; `reason` says why.
    Reverted,
}

/// When a class may go on to its next step.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "RolloutGateInput")]
pub struct RolloutGate {
    /// Errors per request of the class's devices on the new version, at most (0.05 = 5 %).
    #[graphql(default = 0.05)]
    pub max_error_rate: f64,
    /// Their p99 latency over that of the class's devices on the old version, at most.
    #[graphql(default = 1.5)]
    pub max_p99_ratio: f64,
    /// Reports from devices on the new version, sent since the step began, needed to judge; until then it waits.
    #[graphql(default = 1)]
    pub min_reports: u32,
}

/// How a group of devices did, from their latest reports.
#[derive(SimpleObject, Clone)]
pub struct RolloutFigures {
    pub devices: u64,
    pub requests: u64,
    pub errors: u64,
    /// Errors per request; null without requests.
    pub error_rate: Option<f64>,
    /// The request-weighted mean of the devices' p99 latencies, in ms; null without requests.
    pub p99_ms: Option<f64>,
}

impl From<domain::Figures> for RolloutFigures {
    fn from(f: domain::Figures) -> Self {
        Self {
            error_rate: f.error_rate(),
            devices: f.devices,
            requests: f.requests,
            errors: f.errors,
            p99_ms: f.p99_ms,
        }
    }
}

/// One hardware class of a rollout.
#[derive(SimpleObject)]
pub struct RolloutClass {
    /// As devices report it (`devices { hardwareClass }`).
    pub hardware_class: String,
    /// Share of the class's live devices on the new version.
    pub percent: u32,
    /// Index of its current step in `steps`.
    pub step: u32,
    pub state: RolloutClassState,
    pub step_started_at: DateTime<Utc>,
    /// Why it waits, or why it reverted.
    pub reason: Option<String>,
    /// At the last judgement: its devices on the new version, and those on the old one.
    pub candidate: Option<RolloutFigures>,
    pub baseline: Option<RolloutFigures>,
}

/// A staged move of a model's alias to a new version, hardware class by hardware class.
#[derive(SimpleObject)]
pub struct Rollout {
    pub id: ID,
    pub model: String,
    pub alias: String,
    /// Where the alias pointed when the rollout started.
    pub from_version: String,
    /// The version it rolls out.
    pub version: String,
    /// Percent of each class's devices on the new version, step by step; the last is 100.
    pub steps: Vec<u32>,
    pub step_seconds: u64,
    pub gate: RolloutGate,
    pub state: RolloutState,
    pub classes: Vec<RolloutClass>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The label of the token that started it.
    pub started_by: String,
    /// Its end is applied: the alias is where it left it and its history says so (a moment after the end).
    pub applied: bool,
}

impl From<domain::Rollout> for Rollout {
    fn from(r: domain::Rollout) -> Self {
        let classes = r
            .classes
            .iter()
            .map(|c| RolloutClass {
                hardware_class: c.hardware_class.clone(),
                percent: r.percent(c),
                step: c.step as u32,
                state: c.state.into(),
                step_started_at: c.step_started_at,
                reason: c.reason.clone(),
                candidate: c.candidate.clone().map(Into::into),
                baseline: c.baseline.clone().map(Into::into),
            })
            .collect();
        Self {
            id: ID(r.id),
            model: r.model,
            alias: r.alias,
            from_version: r.from_version,
            version: r.version,
            steps: r.steps,
            step_seconds: r.step_seconds,
            gate: RolloutGate {
                max_error_rate: r.gate.max_error_rate,
                max_p99_ratio: r.gate.max_p99_ratio,
                min_reports: r.gate.min_reports,
            },
            state: r.state.into(),
            classes,
            started_at: r.started_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            started_by: r.started_by,
            applied: r.settled,
        }
    }
}

/// A rollout to start.
#[derive(InputObject)]
pub struct StartRolloutInput {
    pub model: String,
    /// An alias of the model that exists: the rollout moves it from where it points.
    pub alias: String,
    /// The version to roll out.
    pub version: String,
    /// Increasing percentages of each class's devices, e.g. `[10, 50, 100]`; 100 is added when missing.
    pub steps: Vec<u32>,
    /// How long each step lasts before its class is judged.
    pub step_seconds: u64,
    pub gate: Option<RolloutGate>,
}

/// What a rollout event tells.
#[derive(SimpleObject)]
pub struct EventRollout {
    pub id: ID,
    pub alias: String,
    pub from_version: String,
    /// The rollout's state when the event was written.
    pub state: RolloutState,
    /// For `ROLLOUT_CLASS_ABORTED`: the class, why, and the figures it was judged on.
    pub hardware_class: Option<String>,
    pub reason: Option<String>,
    pub candidate: Option<RolloutFigures>,
    pub baseline: Option<RolloutFigures>,
}

impl From<crate::domain::EventRollout> for EventRollout {
    fn from(e: crate::domain::EventRollout) -> Self {
        Self {
            id: ID(e.id),
            alias: e.alias,
            from_version: e.from_version,
            state: e.state.into(),
            hardware_class: e.hardware_class,
            reason: e.reason,
            candidate: e.candidate.map(Into::into),
            baseline: e.baseline.map(Into::into),
        }
    }
}

fn service<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<RepositoryService>> {
    ctx.data::<Arc<RepositoryService>>()
}

pub async fn start(
    ctx: &Context<'_>,
    input: StartRolloutInput,
    by: &str,
) -> async_graphql::Result<Rollout> {
    let gate = input
        .gate
        .map_or_else(domain::Gate::default, |g| domain::Gate {
            max_error_rate: g.max_error_rate,
            max_p99_ratio: g.max_p99_ratio,
            min_reports: g.min_reports,
        });
    let plan = RolloutPlan {
        model: input.model,
        alias: input.alias,
        version: input.version,
        steps: input.steps,
        step_seconds: input.step_seconds,
        gate,
    };
    Ok(service(ctx)?.start_rollout(plan, by).await.gql()?.into())
}

pub async fn rollout(ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Rollout>> {
    Ok(service(ctx)?.rollout(&id).await.gql()?.map(Into::into))
}

pub async fn rollouts(ctx: &Context<'_>, model: String) -> async_graphql::Result<Vec<Rollout>> {
    let found = service(ctx)?.rollouts(&model).await.gql()?;
    Ok(found.into_iter().map(Into::into).collect())
}

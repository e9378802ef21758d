//! The change feed's events: what happened to which component, in one strictly increasing sequence.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rollout::{ClassAborted, Figures, Rollout, RolloutState};
use super::{AliasMove, Component, ComponentKey, Device, DomainError, Kind, Needs, StoredFile};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Created,
    Updated,
    /// A component got its first file.
    FileUploaded,
    /// A component's file was replaced by another.
    FileReplaced,
    Deleted,
    /// An alias of a model was pointed at this version (created or moved).
    AliasSet,
    /// An alias of a model was removed; the key is the version it named.
    AliasDeleted,
    /// The component was locked for good.
    Locked,
    /// A signature was attached to one of the component's files (the event's `file`).
    SignatureAdded,
    /// A rollout of an alias to this version began (edge mirrors fetch the version before devices switch).
    RolloutStarted,
    /// A hardware class failed its rollout's gate and went back to the old version; the event says why.
    RolloutClassAborted,
    /// A rollout to this version ended: completed, reverted or aborted.
    RolloutEnded,
}

impl EventType {
    pub const ALL: [EventType; 12] = [
        EventType::Created,
        EventType::Updated,
        EventType::FileUploaded,
        EventType::FileReplaced,
        EventType::Deleted,
        EventType::AliasSet,
        EventType::AliasDeleted,
        EventType::Locked,
        EventType::SignatureAdded,
        EventType::RolloutStarted,
        EventType::RolloutClassAborted,
        EventType::RolloutEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "created",
            EventType::Updated => "updated",
            EventType::FileUploaded => "file_uploaded",
            EventType::FileReplaced => "file_replaced",
            EventType::Deleted => "deleted",
            EventType::AliasSet => "alias_set",
            EventType::AliasDeleted => "alias_deleted",
            EventType::Locked => "locked",
            EventType::SignatureAdded => "signature_added",
            EventType::RolloutStarted => "rollout_started",
            EventType::RolloutClassAborted => "rollout_class_aborted",
            EventType::RolloutEnded => "rollout_ended",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The file a change left in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFile {
    pub sha256: String,
    pub size: u64,
}

/// The move an alias event records, as the alias's history has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAlias {
    pub alias: String,
    /// The version it named before (null when it is new).
    pub from: Option<String>,
    /// The version it names now (null when it was deleted).
    pub to: Option<String>,
    /// The label of the token that moved it.
    pub by: String,
}

/// What a rollout event tells: which rollout, and for a class that failed its gate, which class, why and the
/// figures it was judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRollout {
    pub id: String,
    pub alias: String,
    pub from_version: String,
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Figures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Figures>,
}

/// An event before the store has given it a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub key: ComponentKey,
    pub file: Option<EventFile>,
    /// The needs after the change (of the deleted component, for a deletion): what `runnableOn` matches.
    #[serde(default)]
    pub needs: Option<Needs>,
    /// The needs before an update, so a subscriber learns of a component that stopped being runnable.
    #[serde(default)]
    pub previous_needs: Option<Needs>,
    /// For alias events, the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<EventAlias>,
    /// For rollout events, the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<EventRollout>,
}

impl EventDraft {
    pub fn created(component: &Component) -> Self {
        Self {
            event_type: EventType::Created,
            key: component.key.clone(),
            file: component.file.as_ref().map(|f| EventFile {
                sha256: f.sha256.clone(),
                size: f.size,
            }),
            needs: component.spec.needs().cloned(),
            previous_needs: None,
            alias: None,
            rollout: None,
        }
    }

    /// `component` was locked.
    pub fn locked(component: &Component) -> Self {
        Self {
            event_type: EventType::Locked,
            ..Self::created(component)
        }
    }

    /// An alias move, keyed by the version the alias names after it (before it, for a deletion); `target` is
    /// that version when the alias was set, whose file the event carries.
    pub fn alias_moved(target: Option<&Component>, moved: &AliasMove) -> Result<Self, DomainError> {
        let version = moved
            .to
            .as_ref()
            .or(moved.from.as_ref())
            .ok_or_else(|| DomainError::new("alias", "an alias move names no version"))?;
        let key = ComponentKey::model(moved.model.clone(), version.clone())?;
        let base = match target {
            Some(target) => Self::created(target),
            None => Self::bare(EventType::AliasDeleted, key.clone()),
        };
        Ok(Self {
            event_type: if moved.to.is_some() {
                EventType::AliasSet
            } else {
                EventType::AliasDeleted
            },
            key,
            needs: None,
            alias: Some(EventAlias {
                alias: moved.alias.clone(),
                from: moved.from.clone(),
                to: moved.to.clone(),
                by: moved.by.clone(),
            }),
            ..base
        })
    }

    pub fn updated(before: &Component, after: &Component) -> Self {
        Self {
            event_type: EventType::Updated,
            previous_needs: before.spec.needs().cloned(),
            ..Self::created(after)
        }
    }

    /// A file attached to `after`; `replaced` when the component had one before.
    pub fn file(after: &Component, replaced: bool) -> Self {
        Self {
            event_type: if replaced {
                EventType::FileReplaced
            } else {
                EventType::FileUploaded
            },
            ..Self::created(after)
        }
    }

    /// `file` attached to `after`, as its default file or as one of its platform variants; `replaced` when it took
    /// the place of another.
    pub fn attached(after: &Component, file: &StoredFile, replaced: bool) -> Self {
        Self {
            file: Some(EventFile {
                sha256: file.sha256.clone(),
                size: file.size,
            }),
            ..Self::file(after, replaced)
        }
    }

    /// A signature attached to `file` of `after`.
    pub fn signature_added(after: &Component, file: &StoredFile) -> Self {
        Self {
            event_type: EventType::SignatureAdded,
            ..Self::attached(after, file, false)
        }
    }

    pub fn deleted(component: &Component) -> Self {
        Self {
            event_type: EventType::Deleted,
            file: None,
            ..Self::created(component)
        }
    }

    /// A deletion whose details are lost (a writer crashed in the middle; see the MongoDB store).
    pub fn bare(event_type: EventType, key: ComponentKey) -> Self {
        Self {
            event_type,
            key,
            file: None,
            needs: None,
            previous_needs: None,
            alias: None,
            rollout: None,
        }
    }

    /// An event of `rollout` (keyed by the version it rolls out): started, ended, or one class aborted.
    pub fn rollout(
        event_type: EventType,
        rollout: &Rollout,
        aborted: Option<&ClassAborted>,
    ) -> Result<Self, DomainError> {
        let key = ComponentKey::model(rollout.model.clone(), rollout.version.clone())?;
        Ok(Self {
            rollout: Some(EventRollout {
                id: rollout.id.clone(),
                alias: rollout.alias.clone(),
                from_version: rollout.from_version.clone(),
                state: rollout.state,
                hardware_class: aborted.map(|a| a.hardware_class.clone()),
                reason: aborted.map(|a| a.reason.clone()),
                candidate: aborted.map(|a| a.candidate.clone()),
                baseline: aborted.map(|a| a.baseline.clone()),
            }),
            ..Self::bare(event_type, key)
        })
    }

    pub fn at(self, sequence: u64, at: DateTime<Utc>) -> Event {
        Event {
            sequence,
            at,
            draft: self,
        }
    }
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub sequence: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub draft: EventDraft,
}

impl Event {
    pub fn kind(&self) -> Kind {
        self.draft.key.kind()
    }

    /// The event as SSE data and webhook bodies carry it: the fields of GraphQL's `ComponentEvent`.
    pub fn to_json(&self) -> serde_json::Value {
        let d = &self.draft;
        let mut value = serde_json::json!({
            "sequence": self.sequence,
            "at": self.at,
            "type": d.event_type.as_str(),
            "kind": self.kind().as_str(),
        });
        match &d.key {
            ComponentKey::Model(m) => {
                value["name"] = serde_json::json!(m.name);
                value["version"] = serde_json::json!(m.version);
            }
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => value["id"] = serde_json::json!(id),
        }
        if let Some(file) = &d.file {
            value["file"] = serde_json::json!({ "sha256": file.sha256, "size": file.size });
        }
        if let Some(alias) = &d.alias {
            value["alias"] = serde_json::json!({
                "alias": alias.alias, "from": alias.from, "to": alias.to, "by": alias.by,
            });
        }
        if let Some(rollout) = &d.rollout {
            value["rollout"] = serde_json::to_value(rollout).unwrap_or_default();
        }
        value
    }
}

/// Which events a consumer wants; empty lists mean all.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kinds: Vec<Kind>,
    pub types: Vec<EventType>,
    /// Only components the device can run, before or after the change (models have no needs: never).
    pub runnable_on: Option<Device>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        let kind_ok = self.kinds.is_empty() || self.kinds.contains(&event.kind());
        let type_ok = self.types.is_empty() || self.types.contains(&event.draft.event_type);
        let device_ok = self.runnable_on.as_ref().is_none_or(|device| {
            let d = &event.draft;
            if event.kind() == Kind::Model {
                return false;
            }
            // A deletion whose details were lost is delivered: the consumer may have held the component.
            if d.needs.is_none() && d.previous_needs.is_none() {
                return d.event_type == EventType::Deleted;
            }
            [&d.needs, &d.previous_needs]
                .into_iter()
                .flatten()
                .any(|needs| device.satisfies(needs))
        });
        kind_ok && type_ok && device_ok
    }
}

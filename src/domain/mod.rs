//! Types, validation and needs matching. No I/O: everything here is plain data and rules.

mod alias;
mod component;
mod device_file;
pub mod device_report;
mod digest;
mod error;
mod event;
mod filter;
mod fit;
mod key;
pub mod oci;
pub mod pipeline;
mod pipeline_file;
mod platform;
pub mod rollout;
pub mod signing;
pub mod version;
mod webhook;
mod write;

pub use alias::{AliasMove, AliasRecord, MAX_ALIAS_BYTES, validate_alias, validate_new_version};
pub use component::{
    Component, InferencerSpec, MAX_ENTRIES, MAX_TEXT_BYTES, ModelSpec, Needs, ServiceSpec, Spec,
    SpecUpdate, StoredFile, TransformationSpec,
};
pub use device_file::parse_device;
pub use device_report::{DeviceReport, Health, Running, hardware_class};
pub use digest::Sha256;
pub use error::DomainError;
pub use event::{Event, EventAlias, EventDraft, EventFile, EventFilter, EventRollout, EventType};
pub use filter::{
    ComponentFilter, Device, LibraryWanted, Matcher, ModelWanted, NeedCode, NeedsFilter, Unmet,
};
pub use fit::{Chosen, file_needs, has_file_needs};
pub use key::{ComponentKey, Kind, MAX_KEY_BYTES, ModelKey, validate_key_part};
pub use pipeline_file::parse_pipeline_file;
pub use platform::{DevicePlatform, FileNeeds, Platform, Variant, file_for, split_platform};
pub use webhook::{Delivery, DeliveryStatus, Webhook, is_forbidden_destination};
pub use write::{Deletion, FilePolicy, FilePut, Refusal, UpdateError, Updated};

/// The current time at millisecond precision: the precision every backend stores (BSON dates have no more), so a
/// timestamp reads back exactly as it was returned when it was written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}

//! Types, validation and needs matching. No I/O: everything here is plain data and rules.

mod component;
mod error;
mod filter;
mod key;
pub mod version;

pub use component::{
    Component, InferencerSpec, MAX_ENTRIES, MAX_TEXT_BYTES, ModelSpec, Needs, ServiceSpec, Spec,
    StoredFile, TransformationSpec,
};
pub use error::DomainError;
pub use filter::{ComponentFilter, Device, LibraryWanted, ModelWanted, NeedsFilter};
pub use key::{ComponentKey, Kind, MAX_KEY_BYTES, ModelKey, validate_key_part};

//! What only the tests need beside the test kit (`testkit`, shared with the examples and benchmarks): archives,
//! the browser tools, MongoDB targets, slow clients. The kit's server and client ([`TestApp`]) and its tools are
//! re-exported here, so a test says `common::TestApp`.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod archive;
pub mod browser;
pub mod mongo;
pub mod oci;
pub mod slow;

#[allow(unused_imports)] // each test crate uses a different part
pub use testkit::app::*;
#[allow(unused_imports)]
pub use testkit::{bytes, chaos, eventually, process, sha256_hex, wait_for, ws};

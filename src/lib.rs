//! component-repository: stores the reusable parts of ML inference pipelines (models, data transformations,
//! services, inferencers) and hands them to the machines that run them.
//!
//! Layers, each depending only on the ones before it: [`domain`] (types, validation, needs matching) ->
//! [`store`] (the storage trait and its backends) -> [`service`] (use cases) -> [`api`] (GraphQL, REST) ->
//! [`config`] (the server's settings as plain values) -> [`server`] -> [`cli`] (flags to a `Config`) and the binary.
//! [`zero_copy`] is no layer: the embedded store's downloads and the server's connections meet there.

pub mod api;
pub mod blocking;
pub mod cli;
pub mod config;
pub mod domain;
pub mod runtime;
pub mod server;
pub mod service;
pub mod store;
pub mod zero_copy;

//! The contract suite on the MongoDB backend, plus what only this backend can show: the original service's layout,
//! GridFS housekeeping and a database that goes away. See `common::mongo` for which server the tests use.

mod common;
mod contract;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use common::mongo::{self, DropDatabases};
use common::{Options, TestApp};

fn start(options: Options) -> Pin<Box<dyn Future<Output = TestApp> + Send>> {
    Box::pin(async move {
        let target = mongo::target().expect("checked by the skip rule");
        let (store, config) = mongo::store(target).await;
        let mut app =
            TestApp::start(Arc::new(store), tempfile::tempdir().unwrap(), None, options).await;
        app.guard = Some(Box::new(DropDatabases(config)));
        app
    })
}

/// What the wire server used in CI does not do as MongoDB does, by test.
const WIRE_SERVER_GAPS: &[(&str, &str)] = &[
    (
        "refuses_duplicate_keys",
        "nx-27017 ignores unique indexes on a field named `id` (its SQLite tables use an `id` column), so \
         duplicate ids are not refused there; MongoDB enforces the index",
    ),
    (
        "concurrent_creates_have_one_winner",
        "nx-27017 ignores unique indexes on a field named `id`, so concurrent creates of one id all succeed there",
    ),
];

/// Why a test cannot run here, if it cannot.
fn skip(test: &str) -> Option<String> {
    match mongo::target() {
        Err(reason) => Some(reason),
        Ok(target) if target.is_wire() => WIRE_SERVER_GAPS
            .iter()
            .find(|(name, _)| *name == test)
            .map(|(_, reason)| reason.to_string()),
        Ok(_) => None,
    }
}

contract_suite!(start, skip);

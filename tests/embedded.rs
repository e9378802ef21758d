//! The contract suite on the embedded store, plus what only the embedded store can show: its files on disk.

mod common;
mod contract;

use std::future::Future;
use std::pin::Pin;

use common::{Options, TestApp};

fn start(options: Options) -> Pin<Box<dyn Future<Output = TestApp> + Send>> {
    Box::pin(common::embedded(options))
}

contract_suite!(start);

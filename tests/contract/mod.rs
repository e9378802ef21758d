//! The contract every storage backend passes, driven over HTTP. A backend's test file instantiates it with
//! `contract_suite!(starter)`, where `starter` starts a server on that backend.

mod addressing;
mod builds;
mod catalogue;
mod crud;
mod devices;
mod events;
mod faults;
mod files;
mod guards;
mod listing;
mod oci;
mod pipelines;
mod rest;
mod rollouts;
mod signatures;
mod webhooks;

pub use addressing::*;
pub use builds::*;
pub use catalogue::*;
pub use crud::*;
pub use devices::*;
pub use events::*;
pub use faults::*;
pub use files::*;
pub use guards::*;
pub use listing::*;
pub use oci::*;
pub use pipelines::*;
pub use rest::*;
pub use rollouts::*;
pub use signatures::*;
pub use webhooks::*;

use std::future::Future;
use std::pin::Pin;

use crate::common::{Config, TestApp};

/// Starts a fresh server (with empty storage) on the backend under test.
pub type Starter = fn(Config) -> Pin<Box<dyn Future<Output = TestApp> + Send>>;

/// Asserts that `value` matches the committed snapshot `tests/contract/snapshots/<name>.snap`. Every backend checks
/// the same file, so they answer alike; `redactions` (insta selectors, e.g. `.**.storage_id`) replace what varies
/// from run to run: ids, times, digests. `cargo insta review` (or `INSTA_UPDATE=always`) writes a changed one.
pub fn assert_json_snapshot(name: &str, value: &serde_json::Value, redactions: &[(&str, &str)]) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (selector, replacement) in redactions {
        settings.add_redaction(selector, *replacement);
    }
    settings.bind(|| insta::assert_json_snapshot!(name, value));
}

/// The contract tests written in `tests/contract/*.rs`: every `pub async fn` that takes a [`Starter`].
pub fn contract_tests_in_files() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // mod.rs holds the suite and this scan, no contract test.
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("mod.rs") {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices("pub async fn ") {
            let rest = &text[at + "pub async fn ".len()..];
            let Some(open) = rest.find('(') else { continue };
            let name = rest[..open].trim();
            // The parameters, however rustfmt wraps them.
            let params = rest[open..].split(')').next().unwrap_or_default();
            if params.contains("Starter") {
                found.push((file.clone(), name.to_string()));
            }
        }
    }
    found.sort();
    found
}

/// Fails naming every contract test that `listed` (the suite a backend runs) leaves out.
pub fn assert_all_listed(listed: &[&str]) {
    let written = contract_tests_in_files();
    // The other way round (a listed name with no such function) does not compile; here it shows a broken parser.
    let unseen: Vec<&&str> = listed
        .iter()
        .filter(|name| !written.iter().any(|(_, found)| found == *name))
        .collect();
    assert!(unseen.is_empty(), "the file scan missed {unseen:?}");
    let missing: Vec<String> = written
        .iter()
        .filter(|(_, name)| !listed.contains(&name.as_str()))
        .map(|(file, name)| format!("{name} ({file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "contract tests not in `contract_suite!` (tests/contract/mod.rs), so never run: {}",
        missing.join(", ")
    );
}

#[macro_export]
macro_rules! contract_suite {
    ($starter:path) => {
        $crate::contract_suite!($starter, |_test: &str| -> Option<String> { None });
    };
    // `skip(test)` names a reason when a test cannot run on this backend here; the test then says so loudly.
    ($starter:path, $skip:expr) => {
        $crate::contract_suite!(@tests $starter, $skip;
            health_and_readiness_answer,
            device_reports_are_stored_and_listed_by_class,
            device_reports_expire_after_their_ttl,
            deleting_what_live_devices_run_is_refused_unless_forced,
            device_tokens_report_and_read_but_cannot_write,
            rollouts_give_each_class_its_share_and_a_degraded_class_reverts,
            rollouts_pause_resume_abort_and_hold_their_alias,
            device_tokens_follow_rollouts_but_cannot_steer_them,
            creates_and_fetches_every_kind,
            refuses_duplicate_keys,
            concurrent_creates_have_one_winner,
            refuses_invalid_keys,
            updates_only_what_is_given,
            deletes_component_and_file,
            errors_have_codes,
            malformed_library_requirements_are_refused,
            stale_writes_are_refused_with_the_current_revision,
            uploads_and_downloads_files,
            serves_conditional_and_range_requests,
            serves_ranges_across_chunk_boundaries,
            serves_empty_files_and_multiple_ranges,
            downloads_in_progress_survive_replace_and_delete,
            a_client_that_disconnects_mid_upload_leaves_nothing,
            concurrent_upload_download_and_delete_stay_consistent,
            missing_files_are_clean_404s,
            oversize_uploads_are_refused_and_keep_the_previous_file,
            uploads_to_missing_components_are_not_found,
            forged_and_malformed_uploads_are_refused,
            identical_bytes_are_deduplicated_per_component,
            model_meta_route_keeps_the_original_shape,
            graphql_over_get_runs_queries_only,
            filters_by_needs,
            filters_by_library_versions_as_versions,
            filters_models_and_inferencers,
            paginates_with_cursors,
            runnable_on_matches_devices,
            runnable_on_paginates_across_kinds,
            available_models_resolve_to_models,
            original_rest_api_round_trip,
            original_rest_api_errors,
            rest_bodies_must_be_json_objects,
            truncated_rest_uploads_are_refused,
            feed_records_every_change_in_order,
            concurrent_writers_feed_subscribers_in_order,
            sse_resumes_with_last_event_id,
            websocket_subscription_resumes_and_filters,
            identical_websocket_subscribers_each_get_every_event_once,
            expired_feed_positions_answer_events_expired,
            cursors_beyond_the_head_answer_events_ahead,
            webhooks_deliver_signed_events_in_order_with_retries,
            webhooks_to_private_networks_are_refused,
            filtered_out_events_cost_webhooks_no_writes,
            webhooks_are_capped,
            webhook_deliveries_are_pruned,
            finds_any_version_and_overlapping_ranges,
            paginates_while_the_store_changes,
            counts_match_a_brute_force_filter,
            blobs_are_served_by_digest,
            model_aliases_move_with_history,
            immutable_files_refuse_replacement_and_deletion,
            locked_components_keep_their_file,
            builds_are_chosen_by_what_the_device_holds,
            build_needs_are_checked_at_upload,
            pipeline_subscribers_hear_of_changes_to_what_the_device_fetches,
            variants_are_chosen_by_platform,
            variant_bytes_are_served_by_digest,
            a_variant_downloads_under_its_own_name,
            alias_moves_and_locks_are_on_the_feed,
            every_operation_is_authorized_alike_on_every_transport,
            every_root_field_is_in_the_matrix,
            truncated_graphql_uploads_are_refused,
            oci_clients_pull_what_rest_serves,
            oci_platform_pull_gets_the_variant,
            oci_routes_answer_in_the_spec_shape,
            oci_routes_are_authorized_like_rest,
            oras_push_creates_the_model_version,
            signatures_are_referrers_of_the_signed_manifest,
            signatures_are_attached_kept_and_judged,
            enforce_mode_serves_only_verified_files,
            inference_server_use_cases_resolve_to_the_files_it_fetches,
            inference_server_use_cases_fail_on_unfit_devices_with_named_problems,
            a_deleted_model_version_is_a_missing_model_version,
            parts_requiring_incompatible_versions_are_a_library_conflict,
            the_lock_changes_exactly_when_a_fetched_file_does,
            pipeline_requests_of_another_shape_are_refused_naming_the_field,
            pipeline_resolution_is_a_read_on_every_transport,
        );
    };
    (@tests $starter:path, $skip:expr; $($name:ident),* $(,)?) => {
        /// A contract test nobody lists above never runs: this fails naming it.
        #[test]
        fn every_contract_test_is_in_the_suite() {
            contract::assert_all_listed(&[$(stringify!($name)),*]);
        }
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(reason) = ($skip)(stringify!($name)) {
                    common::report_skip(stringify!($name), &reason);
                    return;
                }
                contract::$name($starter).await;
            }
        )*
    };
}

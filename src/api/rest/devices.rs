//! `POST /devices/{id}/report`: a device says what it is, what it runs and how that went since its last report.
//! Device and write tokens may send it (`auth::rest_guard`).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::{Body, Path};
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::domain::DeviceReport;

/// A report as REST and the README show it: camelCase, like the body sent.
pub fn report_json(report: &DeviceReport) -> Value {
    let h = &report.hardware;
    json!({
        "id": report.id,
        "hardwareClass": report.hardware_class,
        "receivedAt": report.received_at,
        "reportedBy": report.reported_by,
        "device": {
            "platform": h.platform.as_ref().map(|p| json!({
                "os": p.os,
                "arch": p.arch,
                "variant": p.variant,
                "accelerators": p.accelerators.iter()
                    .map(|(name, version)| json!({"name": name, "version": version}))
                    .collect::<Vec<_>>(),
            })),
            "gpu": h.gpu,
            "gpuMemory": h.gpu_memory,
            "ram": h.ram,
            "storage": h.storage,
            "libraries": h.libraries.iter()
                .map(|(name, version)| json!({"name": name, "version": version}))
                .collect::<Vec<_>>(),
        },
        "running": report.running,
        "health": report.health,
    })
}

pub(super) async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let by = state.tokens.access(&headers)?.caller;
    let report = state.service.report_device(&id, &body, &by).await?;
    Ok(Json(report_json(&report)))
}

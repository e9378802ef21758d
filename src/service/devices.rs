//! Device reports: devices say what they are, what they run and how it goes; reads see only live reports (newer
//! than `--device-report-ttl`), and deletions of what live devices run are refused unless forced.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{RepositoryService, ServiceError};
use crate::domain::device_report::{check_in_use, parse_report, running_slot, validate_device_id};
use crate::domain::{ComponentKey, DeviceReport};
use crate::store::DeviceQuery;

/// How long a report keeps a device live unless configured.
pub const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(15 * 60);
/// Most devices one listing returns.
pub const MAX_DEVICES_LISTED: usize = 10_000;

/// Which devices a listing returns.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub hardware_class: Option<String>,
    pub running: Option<ComponentKey>,
    pub limit: Option<usize>,
}

impl RepositoryService {
    /// Reports older than this are no longer live: reads leave them out, sweeps remove them.
    pub fn device_report_ttl(&self) -> Duration {
        self.device_report_ttl
    }

    pub(super) fn live_since(&self) -> DateTime<Utc> {
        let ttl =
            chrono::Duration::from_std(self.device_report_ttl).unwrap_or(chrono::Duration::MAX);
        crate::domain::now()
            .checked_sub_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Stores `body` as device `id`'s latest report, sent by `by`. Works on an edge mirror too: devices report
    /// to the server they download from.
    pub async fn report_device(
        &self,
        id: &str,
        body: &[u8],
        by: &str,
    ) -> Result<DeviceReport, ServiceError> {
        let report = parse_report(id, body, by, crate::domain::now())?;
        self.store.devices().put_report(&report).await?;
        Ok(report)
    }

    /// The live device `id`'s latest report; `None` when it has none, or it expired.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceReport>, ServiceError> {
        validate_device_id(id)?;
        let since = self.live_since();
        Ok(self
            .store
            .devices()
            .report(id)
            .await?
            .filter(|r| r.received_at >= since))
    }

    /// The live devices that match `filter`, by id.
    pub async fn devices(&self, filter: DeviceFilter) -> Result<Vec<DeviceReport>, ServiceError> {
        let query = DeviceQuery {
            hardware_class: filter.hardware_class,
            running_slot: filter.running.as_ref().map(running_slot),
            since: self.live_since(),
            limit: filter
                .limit
                .unwrap_or(MAX_DEVICES_LISTED)
                .min(MAX_DEVICES_LISTED),
        };
        Ok(self.store.devices().reports(&query).await?)
    }

    /// How many live devices report running `key`.
    pub async fn devices_running(&self, key: &ComponentKey) -> Result<u64, ServiceError> {
        Ok(self
            .store
            .devices()
            .count_running(&running_slot(key), self.live_since())
            .await?)
    }

    /// Removes expired reports; returns how many.
    pub async fn expire_device_reports(&self) -> Result<u64, ServiceError> {
        Ok(self
            .store
            .devices()
            .expire_reports(self.live_since())
            .await?)
    }

    /// Deletes a component unless live devices report running it (then 409 `IN_USE` with their count), or
    /// `force` says delete anyway. The count is read just before the delete: a device that starts reporting
    /// it in between is not counted, which is no worse than a device that downloads it a moment later.
    pub async fn delete_unless_in_use(
        &self,
        key: &ComponentKey,
        force: bool,
    ) -> Result<crate::domain::Component, ServiceError> {
        self.writable()?;
        self.check_not_rolled_out(key).await?;
        if !force {
            let live = self.devices_running(key).await?;
            check_in_use(key, live, force).map_err(crate::store::StoreError::from)?;
        }
        self.delete(key).await
    }
}

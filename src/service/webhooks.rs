//! Webhooks: management, and the dispatcher that pushes the change feed to them.
//!
//! Each webhook is served by one worker at a time (a lease in the store, so with several servers on one MongoDB
//! database each delivery is sent by one of them). The worker follows the feed after the webhook's cursor and
//! delivers matching events one by one, in order: a failed delivery is retried with exponential backoff and holds
//! back the later ones until it succeeds or is given up on. Every delivery is stored, and the cursor with it, so a
//! restart resumes where it stopped. Events a webhook filters out cost no write: the cursor moves past them in
//! memory and is saved at most every [`WebhookConfig::cursor_save_interval`] (or [`CURSOR_SAVE_EVENTS`] events),
//! so after a restart a worker may look at them again, never send one twice. The feed is read once for all
//! workers ([`SharedFeed`]): a worker reads the store itself only while it is behind (after a restart, or a long
//! retry). Sends happen on background tasks with a bounded timeout: a slow or dead receiver never slows the API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{RepositoryService, ServiceError};
use crate::domain::{Delivery, DeliveryStatus, Event, EventType, Kind, Webhook};

/// Longest wait for a receiver's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay; it doubles with each failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Attempts before a delivery is given up on (about 1.5 hours of retries).
pub const MAX_ATTEMPTS: u32 = 16;
/// How long a worker's claim on a webhook lasts; renewed well before it runs out.
const LEASE: Duration = Duration::from_secs(30);
/// How often the dispatcher looks for webhooks without a worker.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How often an idle worker looks at the feed without being woken.
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// Deliveries listed per webhook at most.
pub const MAX_DELIVERIES_LISTED: usize = 100;
/// Filtered-out events a worker passes before it saves its cursor, whatever the interval.
pub const CURSOR_SAVE_EVENTS: u64 = 10_000;

pub use crate::domain::is_forbidden_destination;

/// Resolves webhook hosts and keeps only the addresses they may reach, so a name that resolves to a private
/// address (or is changed to one later: DNS rebinding) is refused at every connection.
#[derive(Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let refused = resolved
                .iter()
                .any(|a| !allow_private && is_forbidden_destination(a.ip()));
            if refused || resolved.is_empty() {
                return Err(format!(
                    "{host} resolves to a loopback, private or link-local address: refused"
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(resolved.into_iter());
            Ok(addresses)
        })
    }
}

/// How webhooks are sent, how many there may be, and how long their deliveries are kept.
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    /// Let webhooks reach loopback, private and link-local addresses (tests, closed networks).
    pub allow_private_networks: bool,
    /// Most webhooks at once; creating one more is refused with `LIMIT_EXCEEDED`.
    pub max_webhooks: usize,
    /// Longest a worker keeps its progress past filtered-out events in memory only.
    pub cursor_save_interval: Duration,
    /// Settled deliveries older than this are removed.
    pub delivery_max_age: Duration,
    /// Settled deliveries kept per webhook at most (the newest).
    pub deliveries_kept: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            max_webhooks: 100,
            cursor_save_interval: Duration::from_secs(5),
            delivery_max_age: Duration::from_secs(30 * 86_400),
            deliveries_kept: 1000,
        }
    }
}

/// Deliveries by outcome since start-up, for metrics.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub gave_up: AtomicU64,
    /// Cursor saves by the workers, for metrics (and to show that filtered-out events cost none).
    pub cursor_saves: AtomicU64,
    /// Events the workers looked at, wanted or not.
    pub events_examined: AtomicU64,
}

/// What a client gives to create a webhook.
pub struct NewWebhook {
    pub url: String,
    pub secret: String,
    pub kinds: Vec<Kind>,
    pub types: Vec<EventType>,
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

impl RepositoryService {
    /// Checks where a webhook may send: an http(s) URL whose host resolves only to addresses it may reach.
    async fn check_destination(&self, url: &str) -> Result<(), ServiceError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ServiceError::InvalidInput(format!("url: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| ServiceError::InvalidInput("url: no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if self.webhook_config.allow_private_networks {
            return Ok(());
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| {
                    ServiceError::InvalidInput(format!("url: {host} does not resolve: {e}"))
                })?
                .collect(),
        };
        if addresses.iter().any(|a| is_forbidden_destination(a.ip())) {
            return Err(ServiceError::InvalidInput(format!(
                "url: {host} is a loopback, private or link-local address; webhooks may not reach those \
                 (see --webhooks-allow-private-networks)"
            )));
        }
        Ok(())
    }

    pub async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, ServiceError> {
        let webhook = Webhook {
            id: uuid::Uuid::new_v4().simple().to_string(),
            url: new.url.trim().to_string(),
            secret: new.secret,
            kinds: new.kinds,
            types: new.types,
            created_at: crate::domain::now(),
            // Events from now on: a new webhook does not replay the history.
            cursor: self.store.feed().last_sequence().await?,
        };
        webhook.validate()?;
        self.check_destination(&webhook.url).await?;
        let max = self.webhook_config.max_webhooks;
        let too_many = || {
            ServiceError::LimitExceeded(format!(
                "there are already {max} webhooks, the most this server keeps (--max-webhooks); delete one first"
            ))
        };
        let _one_at_a_time = self.webhook_creation.lock().await;
        if self.store.webhooks().list_webhooks().await?.len() >= max {
            return Err(too_many());
        }
        self.store.webhooks().insert_webhook(&webhook).await?;
        // Other servers on the same database may have passed the check at the same time: whoever then sees too
        // many takes theirs back, so the cap holds (at worst both back off, and a retry succeeds).
        if self.store.webhooks().list_webhooks().await?.len() > max {
            self.store.webhooks().delete_webhook(&webhook.id).await?;
            return Err(too_many());
        }
        // Not the URL: it may carry credentials.
        tracing::info!(id = %webhook.id, "webhook created");
        Ok(webhook)
    }

    /// Removes the settled deliveries that the retention no longer keeps, of every webhook; returns how many.
    pub async fn prune_deliveries(&self) -> Result<u64, ServiceError> {
        let config = &self.webhook_config;
        let now = crate::domain::now();
        let before = chrono::Duration::from_std(config.delivery_max_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut removed = 0;
        for webhook in self.store.webhooks().list_webhooks().await? {
            removed += self
                .store
                .webhooks()
                .prune_deliveries(&webhook.id, before, config.deliveries_kept)
                .await?;
        }
        Ok(removed)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, ServiceError> {
        Ok(self.store.webhooks().list_webhooks().await?)
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<(), ServiceError> {
        if self.store.webhooks().delete_webhook(id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("webhook {id} not found")))
        }
    }

    pub async fn deliveries(
        &self,
        webhook_id: &str,
        first: Option<i32>,
    ) -> Result<Vec<Delivery>, ServiceError> {
        let limit = first
            .map_or(20, |n| n.max(0) as usize)
            .min(MAX_DELIVERIES_LISTED);
        Ok(self.store.webhooks().deliveries(webhook_id, limit).await?)
    }

    pub fn delivery_counts(&self) -> &DeliveryCounts {
        &self.delivery_counts
    }
}

/// Batches of the feed kept for workers that fall behind a little; one further behind reads the store.
const SHARED_BATCHES: usize = 32;

/// Events `after` < sequence <= `next_after`, as read once for every worker.
struct SharedBatch {
    after: u64,
    next_after: u64,
    events: Vec<Event>,
}

/// What a worker follows: the batches read for all, and how far they go.
struct SharedFeed {
    batches: tokio::sync::broadcast::Receiver<Arc<SharedBatch>>,
    /// Every event up to here has been published (a worker below it catches up from the store).
    position: tokio::sync::watch::Receiver<u64>,
}

/// Reads the feed once per change for all workers, while there are any; stops with the service.
async fn read_feed_for_workers(
    service: Weak<RepositoryService>,
    batches: tokio::sync::broadcast::Sender<Arc<SharedBatch>>,
    position_tx: tokio::sync::watch::Sender<u64>,
) {
    let Some(mut signal) = service.upgrade().map(|s| s.store.feed().event_signal()) else {
        return;
    };
    // None while no worker listens: then nothing is read, and reading resumes from the feed's end.
    let mut position: Option<u64> = None;
    loop {
        let Some(service) = service.upgrade() else {
            return;
        };
        if batches.receiver_count() == 0 {
            position = None;
        } else {
            signal.borrow_and_update();
            let after = match position {
                Some(after) => Ok(after),
                None => service.store.feed().last_sequence().await,
            };
            let read = match after {
                Ok(after) => {
                    if position.is_none() {
                        // Reading starts (again) at the feed's end: workers before it catch up themselves.
                        position = Some(after);
                        position_tx.send_replace(after);
                    }
                    service
                        .store
                        .feed()
                        .events(after, 100)
                        .await
                        .map(|b| (after, b))
                }
                Err(e) => Err(e),
            };
            match read {
                Ok((after, batch)) if batch.next_after > after => {
                    position = Some(batch.next_after);
                    let _ = batches.send(Arc::new(SharedBatch {
                        after,
                        next_after: batch.next_after,
                        events: batch.events,
                    }));
                    position_tx.send_replace(batch.next_after);
                    continue;
                }
                Ok(_) => {}
                // Workers behind find it out themselves; the shared reading goes on from the end.
                Err(crate::store::StoreError::EventsExpired { .. }) => position = None,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed for webhooks failed; retrying")
                }
            }
        }
        drop(service);
        // New events wake the reader; the timeout also catches an event of another replica that was still
        // pending at the last read and has been settled since.
        let _ = tokio::time::timeout(IDLE_RECHECK, signal.changed()).await;
    }
}

/// Runs the webhook dispatcher for as long as the service lives.
pub fn spawn_dispatcher(service: &Arc<RepositoryService>) {
    let weak = Arc::downgrade(service);
    let allow_private = service.webhook_config.allow_private_networks;
    let cursor_save_interval = service.webhook_config.cursor_save_interval;
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("component-repository/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for webhooks: none will be sent");
                return;
            }
        };
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let (batches, _) = tokio::sync::broadcast::channel(SHARED_BATCHES);
        let (position_tx, position) = tokio::sync::watch::channel(0);
        tokio::spawn(read_feed_for_workers(
            weak.clone(),
            batches.clone(),
            position_tx,
        ));
        let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let Some(service) = weak.upgrade() else {
                for (_, worker) in workers {
                    worker.abort();
                }
                return;
            };
            workers.retain(|_, worker| !worker.is_finished());
            match service.store.webhooks().list_webhooks().await {
                Ok(webhooks) => {
                    // The worker of a deleted webhook stops here rather than by looking itself up.
                    workers.retain(|id, worker| {
                        let exists = webhooks.iter().any(|w| &w.id == id);
                        if !exists {
                            worker.abort();
                        }
                        exists
                    });
                    for webhook in webhooks {
                        if workers.contains_key(&webhook.id) {
                            continue;
                        }
                        let until = crate::domain::now()
                            + chrono::Duration::from_std(LEASE).unwrap_or_default();
                        match service
                            .store
                            .webhooks()
                            .lease_webhook(&webhook.id, &owner, until)
                            .await
                        {
                            Ok(true) => {
                                let worker = Worker {
                                    service: Arc::downgrade(&service),
                                    client: client.clone(),
                                    owner: owner.clone(),
                                    webhook_id: webhook.id.clone(),
                                    cursor_save_interval,
                                    feed: tokio::sync::Mutex::new(SharedFeed {
                                        batches: batches.subscribe(),
                                        position: position.clone(),
                                    }),
                                };
                                workers.insert(webhook.id, tokio::spawn(worker.run()));
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "leasing a webhook failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing webhooks failed; retrying"),
            }
            drop(service);
            tokio::time::sleep(SCAN_INTERVAL).await;
        }
    });
}

struct Worker {
    service: Weak<RepositoryService>,
    client: reqwest::Client,
    owner: String,
    webhook_id: String,
    cursor_save_interval: Duration,
    feed: tokio::sync::Mutex<SharedFeed>,
}

/// How far a worker got: `handled` in memory, `saved` in the store (behind it only past filtered-out events).
struct Progress {
    handled: u64,
    saved: u64,
    saved_at: Instant,
    leased_at: Instant,
}

/// Why a worker stops.
enum Stop {
    /// The service is gone, the webhook was deleted, or another server holds it now.
    Done,
}

impl Worker {
    async fn run(self) {
        if let Err(e) = self.work().await {
            match e {
                Ok(Stop::Done) => {}
                Err(e) => {
                    tracing::warn!(webhook = %self.webhook_id, error = %e, "webhook worker stopped; it restarts")
                }
            }
        }
    }

    fn service(&self) -> Result<Arc<RepositoryService>, Result<Stop, ServiceError>> {
        self.service.upgrade().ok_or(Ok(Stop::Done))
    }

    /// Renews the lease; stops when another server holds it (or, on a shared store, the webhook is gone).
    async fn renew(&self) -> Result<(), Result<Stop, ServiceError>> {
        let until = crate::domain::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let leased = self
            .service()?
            .store
            .webhooks()
            .lease_webhook(&self.webhook_id, &self.owner, until)
            .await
            .map_err(|e| Err(e.into()))?;
        if leased { Ok(()) } else { Err(Ok(Stop::Done)) }
    }

    /// The webhook as stored now, with the lease renewed; stops when either is gone.
    async fn current(&self) -> Result<Webhook, Result<Stop, ServiceError>> {
        let service = self.service()?;
        let until = crate::domain::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let leased = service
            .store
            .webhooks()
            .lease_webhook(&self.webhook_id, &self.owner, until)
            .await
            .map_err(|e| Err(e.into()))?;
        let webhook = service
            .store
            .webhooks()
            .list_webhooks()
            .await
            .map_err(|e| Err(e.into()))?
            .into_iter()
            .find(|w| w.id == self.webhook_id);
        match webhook {
            Some(webhook) if leased => Ok(webhook),
            _ => Err(Ok(Stop::Done)),
        }
    }

    /// Saves the cursor: the webhook's progress survives a restart up to `sequence`.
    async fn save_cursor(&self, sequence: u64) -> Result<(), Result<Stop, ServiceError>> {
        let service = self.service()?;
        service
            .store
            .webhooks()
            .advance_webhook(&self.webhook_id, sequence)
            .await
            .map_err(|e| Err(e.into()))?;
        service
            .delivery_counts
            .cursor_saves
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn work(&self) -> Result<(), Result<Stop, ServiceError>> {
        let mut feed = self.feed.lock().await;
        // A webhook never changes but for its cursor, which this worker alone moves while it holds the lease.
        let webhook = self.current().await?;
        let mut progress = Progress {
            handled: webhook.cursor,
            saved: webhook.cursor,
            saved_at: Instant::now(),
            leased_at: Instant::now(),
        };
        loop {
            if progress.leased_at.elapsed() >= LEASE / 3 {
                self.renew().await?;
                progress.leased_at = Instant::now();
            }
            // A batch is sent before the position moves past it, so a worker that takes the batches received
            // by the time it sees the position is never behind, and never reads the store.
            self.take_received(&webhook, &mut feed.batches, &mut progress)
                .await?;
            let published = *feed.position.borrow_and_update();
            if progress.handled < published {
                self.take_received(&webhook, &mut feed.batches, &mut progress)
                    .await?;
            }
            if progress.handled < published {
                // Behind the shared reading: catch up from the store.
                let before = progress.handled;
                self.catch_up(&webhook, &mut progress).await?;
                self.save_if_due(&mut progress).await?;
                if progress.handled > before {
                    continue;
                }
            }
            let mut wait = IDLE_RECHECK;
            if progress.handled > progress.saved {
                wait = wait.min(
                    self.cursor_save_interval
                        .saturating_sub(progress.saved_at.elapsed())
                        .max(Duration::from_millis(10)),
                );
            }
            let SharedFeed { batches, position } = &mut *feed;
            tokio::select! {
                biased;
                received = batches.recv() => match received {
                    Ok(batch) => self.apply(&webhook, &batch, &mut progress).await?,
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Err(Ok(Stop::Done)),
                },
                changed = position.changed() => {
                    if changed.is_err() {
                        // The shared reading is gone: so is the service.
                        return Err(Ok(Stop::Done));
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
            self.save_if_due(&mut progress).await?;
        }
    }

    /// Applies the shared batches received so far.
    async fn take_received(
        &self,
        webhook: &Webhook,
        batches: &mut tokio::sync::broadcast::Receiver<Arc<SharedBatch>>,
        progress: &mut Progress,
    ) -> Result<(), Result<Stop, ServiceError>> {
        loop {
            match batches.try_recv() {
                Ok(batch) => self.apply(webhook, &batch, progress).await?,
                // Skipped batches leave a gap that the position shows.
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Closed) => return Err(Ok(Stop::Done)),
            }
        }
    }

    /// Handles a shared batch when it continues this worker's progress. One that starts past it leaves a gap:
    /// the position shows it, and the store fills it.
    async fn apply(
        &self,
        webhook: &Webhook,
        batch: &SharedBatch,
        progress: &mut Progress,
    ) -> Result<(), Result<Stop, ServiceError>> {
        if batch.after <= progress.handled && batch.next_after > progress.handled {
            self.handle(webhook, &batch.events, progress).await?;
            progress.handled = progress.handled.max(batch.next_after);
        }
        Ok(())
    }

    /// Reads the events after this worker's progress from the store and handles them.
    async fn catch_up(
        &self,
        webhook: &Webhook,
        progress: &mut Progress,
    ) -> Result<(), Result<Stop, ServiceError>> {
        let batch = self
            .service()?
            .store
            .feed()
            .events(progress.handled, 100)
            .await
            .map_err(|e| Err(e.into()));
        match batch {
            Ok(batch) => {
                self.handle(webhook, &batch.events, progress).await?;
                progress.handled = progress.handled.max(batch.next_after);
                Ok(())
            }
            Err(Err(ServiceError::EventsExpired(_))) => {
                // Events were removed before they could be sent: skip to what is retained.
                let last = self
                    .service()?
                    .store
                    .feed()
                    .last_sequence()
                    .await
                    .map_err(|e| Err(e.into()))?;
                tracing::warn!(webhook = %webhook.id, "events expired before delivery; skipping to the current sequence");
                self.save_cursor(last).await?;
                progress.handled = last;
                progress.saved = last;
                progress.saved_at = Instant::now();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Delivers the events after `progress` that the webhook wants, saving the cursor after each delivery; the
    /// others only move the progress in memory.
    async fn handle(
        &self,
        webhook: &Webhook,
        events: &[Event],
        progress: &mut Progress,
    ) -> Result<(), Result<Stop, ServiceError>> {
        let from = progress.handled;
        for event in events.iter().filter(|e| e.sequence > from) {
            self.service()?
                .delivery_counts
                .events_examined
                .fetch_add(1, Ordering::Relaxed);
            progress.handled = event.sequence;
            if webhook.wants(event) {
                // Not deleted meanwhile, and still ours.
                self.current().await?;
                progress.leased_at = Instant::now();
                self.deliver(webhook, event).await?;
                self.save_cursor(event.sequence).await?;
                progress.saved = event.sequence;
                progress.saved_at = Instant::now();
            }
        }
        Ok(())
    }

    /// Saves progress past filtered-out events once enough of them, or enough time, went by.
    async fn save_if_due(&self, progress: &mut Progress) -> Result<(), Result<Stop, ServiceError>> {
        if progress.handled > progress.saved
            && (progress.handled - progress.saved >= CURSOR_SAVE_EVENTS
                || progress.saved_at.elapsed() >= self.cursor_save_interval)
        {
            self.save_cursor(progress.handled).await?;
            progress.saved = progress.handled;
            progress.saved_at = Instant::now();
        }
        Ok(())
    }

    /// Sends one event until the receiver takes it or it is given up on.
    async fn deliver(
        &self,
        webhook: &Webhook,
        event: &Event,
    ) -> Result<(), Result<Stop, ServiceError>> {
        let service = self.service()?;
        // A delivery already under way (before a restart) keeps its attempts; one settled just before a restart
        // that left the cursor behind it is not sent again.
        let latest = service
            .store
            .webhooks()
            .deliveries(&webhook.id, 1)
            .await
            .map_err(|e| Err(e.into()))?
            .into_iter()
            .find(|d| d.sequence == event.sequence);
        let mut delivery = match latest {
            Some(d) if d.status != DeliveryStatus::Pending => return Ok(()),
            Some(d) => d,
            None => Delivery::new(webhook, event, crate::domain::now()),
        };
        drop(service);
        let body = serde_json::to_vec(&event.to_json()).unwrap_or_default();
        let signature = sign(&webhook.secret, &body);
        loop {
            if let Some(next) = delivery.next_attempt_at {
                let wait = (next - crate::domain::now()).to_std().unwrap_or_default();
                // Sleeps in slices, renewing the lease and noticing a deletion.
                let mut left = wait;
                while !left.is_zero() {
                    let slice = left.min(LEASE / 3);
                    tokio::time::sleep(slice).await;
                    left -= slice;
                    self.current().await?;
                }
            }
            delivery.attempts += 1;
            delivery.last_attempt_at = Some(crate::domain::now());
            let sent = self
                .client
                .post(&webhook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Repository-Event", event.draft.event_type.as_str())
                .header("X-Repository-Delivery", &delivery.id)
                .header("X-Repository-Signature-256", &signature)
                .body(body.clone())
                .send()
                .await;
            let service = self.service()?;
            let counts = &service.delivery_counts;
            match sent {
                Ok(response) if response.status().is_success() => {
                    delivery.status = DeliveryStatus::Delivered;
                    delivery.last_status = Some(response.status().as_u16());
                    delivery.last_error = None;
                    delivery.delivered_at = Some(crate::domain::now());
                    delivery.next_attempt_at = None;
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                }
                outcome => {
                    let (status, error) = match outcome {
                        Ok(response) => (
                            Some(response.status().as_u16()),
                            format!("the receiver answered {}", response.status()),
                        ),
                        // The error's chain, never the request: the URL may hold credentials, never the secret.
                        Err(e) => (None, describe(&e)),
                    };
                    delivery.last_status = status;
                    delivery.last_error = Some(error);
                    if delivery.attempts >= MAX_ATTEMPTS {
                        delivery.status = DeliveryStatus::Failed;
                        delivery.next_attempt_at = None;
                        counts.gave_up.fetch_add(1, Ordering::Relaxed);
                    } else {
                        delivery.next_attempt_at = Some(
                            crate::domain::now()
                                + chrono::Duration::from_std(backoff(delivery.attempts))
                                    .unwrap_or_default(),
                        );
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            service
                .store
                .webhooks()
                .save_delivery(&delivery)
                .await
                .map_err(|e| Err(e.into()))?;
            if delivery.status != DeliveryStatus::Pending {
                return Ok(());
            }
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_githubs_scheme() {
        // The example of GitHub's documentation on validating webhook deliveries.
        assert_eq!(
            sign("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}

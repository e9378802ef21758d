//! Group commit: every write of the embedded store goes through one dedicated thread, which takes all the writes
//! waiting in its queue, applies them in order in ONE redb transaction, commits once (one fsync for all of them),
//! publishes their catalogue changes, raises the feed's signal, removes the blobs they left unreferenced, and only
//! then answers each caller. Under load many writes share each commit; alone, a write costs what it did before.
//!
//! A write is a closure over the open transaction that checks everything it may refuse (missing, taken, locked,
//! invalid) *before* it writes anything, so a refused write leaves nothing and never affects the others in its
//! batch (redb savepoints exist only before a transaction's first write, so validate-then-apply is the way).
//! A storage failure (I/O, a damaged record) aborts the whole transaction: every write applied in it is answered
//! with that failure and nothing of it is committed; the writes not yet applied go on in the next transaction.
//!
//! Blobs: an upload places its file in `blobs/` before its write is queued and holds a [`Pin`] on its digest until
//! its batch has committed. A blob is removed only when no committed record refers to it and no write in flight
//! pins it, checked under the pins' lock, so a blob being attached is never reclaimed by a concurrent delete of a
//! component with the same bytes, without any store-wide lock.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::blobs::BlobDir;
use super::catalog::Catalog;
use super::journal::{self, Committed, Entry};
use super::{BLOB_REFS, Change, OrBackend};
use crate::store::{EventSignal, StoreError};

/// Writes applied in one transaction at most: bounds how long the first of them waits for its answer.
const MAX_BATCH: usize = 512;

/// What a write did, for the writer to publish and clean up after its commit.
pub(super) struct Applied<T> {
    /// The caller's answer.
    pub value: T,
    pub change: Change,
    /// The sequence of the event it appended, if any.
    pub event: Option<u64>,
    /// Digests whose reference count it lowered: removed after the commit unless something still uses them.
    pub released: Vec<String>,
    /// Blobs whose bytes it wrote into the journal: their files are synced after the commit.
    pub journaled: Vec<Entry>,
}

impl<T> Applied<T> {
    pub fn new(value: T, change: Change) -> Self {
        Self {
            value,
            change,
            event: None,
            released: Vec::new(),
            journaled: Vec::new(),
        }
    }

    pub fn event(mut self, sequence: u64) -> Self {
        self.event = Some(sequence);
        self
    }

    pub fn released(mut self, digests: impl IntoIterator<Item = String>) -> Self {
        self.released.extend(digests);
        self
    }

    pub fn journaled(mut self, entries: Vec<Entry>) -> Self {
        self.journaled.extend(entries);
        self
    }
}

/// Digests that writes in flight are about to refer to: their blobs are never reclaimed meanwhile.
#[derive(Default)]
pub(super) struct Pins {
    state: Mutex<PinState>,
    /// Signalled when a blob's removal has finished.
    removed: Condvar,
}

#[derive(Default)]
struct PinState {
    /// digest -> writes in flight that refer to it.
    held: HashMap<String, usize>,
    /// Blobs being removed right now: a pin of one waits until its file is gone, then places it anew.
    removing: HashSet<String>,
}

/// A write in flight's hold on a blob, released when dropped (by the writer, after the write's commit).
pub(super) struct Pin {
    pins: Arc<Pins>,
    digest: String,
}

impl Pins {
    /// Pins `digest`; blocks while its blob is being removed, so call it off the async threads.
    pub fn pin(self: &Arc<Self>, digest: &str) -> Pin {
        let mut state = self.lock();
        while state.removing.contains(digest) {
            state = self.removed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        *state.held.entry(digest.to_string()).or_default() += 1;
        Pin {
            pins: Arc::clone(self),
            digest: digest.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PinState> {
        // The state holds plain counts and names: one left by a panicking holder is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.pins.lock();
        if let Some(count) = state.held.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                state.held.remove(&self.digest);
            }
        }
    }
}

/// What running a queued write gave: applied (answered after the commit) or refused (answered with its error).
enum Step {
    Applied {
        change: Change,
        event: Option<u64>,
        released: Vec<String>,
        journaled: Vec<Entry>,
        answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    },
    Refused {
        error: StoreError,
        answer: Box<dyn FnOnce(StoreError) + Send>,
    },
}

/// A queued write: run it in the open transaction, or answer it with a failure without running it.
trait Work: Send {
    fn run(self: Box<Self>, txn: &WriteTransaction) -> Step;
    fn fail(self: Box<Self>, error: StoreError);
}

struct Queued<T, F> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for Queued<T, F>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<Applied<T>, StoreError> + Send,
{
    fn run(self: Box<Self>, txn: &WriteTransaction) -> Step {
        let Queued { work, reply } = *self;
        match work(txn) {
            Ok(applied) => {
                let value = applied.value;
                Step::Applied {
                    change: applied.change,
                    event: applied.event,
                    released: applied.released,
                    journaled: applied.journaled,
                    answer: Box::new(move |committed| {
                        let _ = reply.send(committed.map(|()| value));
                    }),
                }
            }
            Err(error) => Step::Refused {
                error,
                answer: Box::new(move |error| {
                    let _ = reply.send(Err(error));
                }),
            },
        }
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

struct Job {
    work: Box<dyn Work>,
    pins: Vec<Pin>,
    /// Whether its answer means "on disk": a transaction of housekeeping only commits without a flush.
    durable: bool,
}

/// The writer thread and the queue into it, and the journal's syncer; dropping it lets the writer finish what is
/// queued and stop, and then the syncer.
pub(super) struct Writer {
    queue: Option<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

/// A handle on the writer's queue, usable from any thread.
#[derive(Clone)]
pub(super) struct Queue(mpsc::UnboundedSender<Job>);

/// A handle on the writer's queue that does not keep the writer running.
pub(super) struct WeakQueue(mpsc::WeakUnboundedSender<Job>);

impl WeakQueue {
    pub fn upgrade(&self) -> Option<Queue> {
        self.0.upgrade().map(Queue)
    }
}

/// The answer to a queued write, once its transaction has committed and its change is visible to readers.
pub(super) type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

/// What the writer thread works with.
pub(super) struct Shared {
    pub db: Arc<Database>,
    pub catalog: Arc<Catalog>,
    pub signal: Arc<EventSignal>,
    pub blobs: BlobDir,
    pub pins: Arc<Pins>,
}

/// What the writer thread works with, the syncer's end included.
struct Running {
    shared: Shared,
    committed: Committed,
}

fn stopped() -> StoreError {
    StoreError::Backend("the store's writer has stopped".into())
}

impl Writer {
    pub fn start(shared: Shared) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::unbounded_channel();
        let (committed, syncer) =
            journal::start_syncer(shared.blobs.clone(), WeakQueue(queue.downgrade()))?;
        let running = Running { shared, committed };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(running, jobs))?;
        Ok(Self {
            queue: Some(Queue(queue)),
            thread: Some(thread),
            syncer: Some(syncer),
        })
    }

    pub fn queue(&self) -> Result<Queue, StoreError> {
        self.queue.clone().ok_or_else(stopped)
    }

    /// Queues `work` and waits for its answer (see [`Queue::submit`]).
    pub async fn write<T: Send + 'static>(
        &self,
        pins: Vec<Pin>,
        work: impl FnOnce(&WriteTransaction) -> Result<Applied<T>, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        wait(self.queue()?.submit(pins, work)?).await
    }
}

/// Waits for a queued write's answer.
pub(super) async fn wait<T>(answer: Answer<T>) -> Result<T, StoreError> {
    answer.await.map_err(|_| stopped())?
}

impl Queue {
    /// Queues `work`, which must return a refusal only before it has written anything; `pins` are held until its
    /// transaction has committed. The write happens whether or not anyone waits for the answer.
    pub fn submit<T: Send + 'static>(
        &self,
        pins: Vec<Pin>,
        work: impl FnOnce(&WriteTransaction) -> Result<Applied<T>, StoreError> + Send + 'static,
    ) -> Result<Answer<T>, StoreError> {
        self.send(pins, work, true)
    }

    /// Queues housekeeping that a crash may undo (the next durable commit persists it): a transaction of such
    /// writes alone commits without waiting for the disk.
    pub fn submit_lazy(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<Applied<()>, StoreError> + Send + 'static,
    ) -> Result<Answer<()>, StoreError> {
        self.send(Vec::new(), work, false)
    }

    fn send<T: Send + 'static>(
        &self,
        pins: Vec<Pin>,
        work: impl FnOnce(&WriteTransaction) -> Result<Applied<T>, StoreError> + Send + 'static,
        durable: bool,
    ) -> Result<Answer<T>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let work = Box::new(Queued { work, reply });
        self.0
            .send(Job {
                work,
                pins,
                durable,
            })
            .map_err(|_| stopped())?;
        Ok(answer)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        // Finishes the batch in progress, so the database is closed when the store is gone.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The writer's end of the syncer went with its thread: the syncer finishes its round and stops.
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

fn run(running: Running, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut pending = VecDeque::new();
    loop {
        if pending.is_empty() {
            match jobs.blocking_recv() {
                Some(job) => pending.push_back(job),
                None => return,
            }
        }
        // Whatever queued up while the previous commit was on its way to the disk goes into this one.
        while pending.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => break,
            }
        }
        commit_batch(&running, &mut pending);
    }
}

/// A storage failure rather than a refusal of the write itself: the transaction cannot go on.
fn is_failure(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend(_) | StoreError::Io(_))
}

/// Applies the writes at the front of `pending` in one transaction and commits it; writes not applied because
/// a storage failure aborted the transaction stay in `pending`.
fn commit_batch(running: &Running, pending: &mut VecDeque<Job>) {
    let shared = &running.shared;
    let writer = shared.catalog.writer();
    let txn = match shared.db.begin_write().or_backend() {
        Ok(txn) => txn,
        Err(e) => {
            let failure = e.to_string();
            for job in pending.drain(..) {
                job.work.fail(StoreError::Backend(failure.clone()));
            }
            return;
        }
    };
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    let mut pins = Vec::new();
    let mut candidates = BTreeSet::new();
    let mut journaled = Vec::new();
    let mut durable = false;
    let mut failure = None;
    while let Some(job) = pending.pop_front() {
        pins.extend(job.pins);
        durable |= job.durable;
        match job.work.run(&txn) {
            Step::Applied {
                change,
                event,
                released,
                journaled: entries,
                answer,
            } => {
                candidates.extend(released);
                journaled.extend(entries);
                applied.push((change, event, answer));
            }
            Step::Refused { error, answer } if is_failure(&error) => {
                failure = Some(error.to_string());
                answer(error);
                break;
            }
            Step::Refused { error, answer } => refused.push((error, answer)),
        }
        if applied.len() + refused.len() >= MAX_BATCH {
            break;
        }
    }
    candidates.extend(pins.iter().map(|pin| pin.digest.clone()));
    let committed = match failure {
        Some(failure) => {
            drop(txn);
            Err(failure)
        }
        None => commit(txn, durable),
    };
    let mut last_event = None;
    let answers = match committed {
        Ok(()) => {
            let mut answers = Vec::with_capacity(applied.len());
            let mut changes = Vec::with_capacity(applied.len());
            for (change, event, answer) in applied {
                changes.push(change);
                last_event = last_event.max(event);
                answers.push(answer);
            }
            writer.publish(|snapshot| {
                for change in changes {
                    change.apply_to(snapshot);
                }
            });
            running.committed.send(std::mem::take(&mut journaled));
            Ok(answers)
        }
        Err(failure) => Err((failure, applied)),
    };
    drop(writer);
    if let Some(sequence) = last_event {
        shared.signal.raise(sequence);
    }
    drop(pins);
    // Before the answers: when a write is answered, the files it left unreferenced are gone (a refused upload
    // leaves nothing behind).
    if let Err(e) = reclaim(shared, candidates) {
        tracing::warn!(error = %e, "removing unreferenced blobs failed; the next start-up removes them");
    }
    match answers {
        Ok(answers) => answers.into_iter().for_each(|answer| answer(Ok(()))),
        Err((failure, applied)) => {
            for (_, _, answer) in applied {
                answer(Err(StoreError::Backend(failure.clone())));
            }
        }
    }
    for (error, answer) in refused {
        answer(error);
    }
}

fn commit(mut txn: WriteTransaction, durable: bool) -> Result<(), String> {
    if !durable {
        txn.set_durability(Durability::None)
            .map_err(|e| e.to_string())?;
    }
    txn.commit().or_backend().map_err(|e| e.to_string())
}

/// Removes each blob among `digests` that no committed record refers to and no write in flight pins.
fn reclaim(shared: &Shared, digests: BTreeSet<String>) -> Result<(), StoreError> {
    if digests.is_empty() {
        return Ok(());
    }
    let txn = shared.db.begin_read().or_backend()?;
    let refs = txn.open_table(BLOB_REFS).or_backend()?;
    for digest in digests {
        // Decided under the pins' lock, removed outside it (an unlink can wait on a busy disk): an upload of these
        // bytes pins them before placing its file, so it either keeps the file from being removed here, or waits
        // until it is gone and places it anew.
        {
            let mut state = shared.pins.lock();
            if state.held.contains_key(&digest) || refs.get(digest.as_str()).or_backend()?.is_some()
            {
                continue;
            }
            state.removing.insert(digest.clone());
        }
        let removed = shared.blobs.remove(&digest);
        shared.pins.lock().removing.remove(&digest);
        shared.pins.removed.notify_all();
        removed?;
    }
    Ok(())
}

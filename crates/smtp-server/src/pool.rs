//! [`VerifyPool`]: a bounded set of worker threads for CPU-heavy or blocking credential checks
//! (argon2, bcrypt, PAM, a blocking LDAP bind), Dovecot's `auth_worker_max_count` for this
//! crate.
//!
//! Without it every login would take a thread of tokio's blocking pool (up to 512): 100
//! concurrent argon2 verifications then run at once, each with its own 19 MiB, thrash the
//! caches and hold gigabytes. With it at most `workers` checks run at a time (default: the
//! number of cores), so hashing memory is bounded by `workers` × the hash's memory, and the
//! others wait in a FIFO queue of at most `max_queue` jobs:
//!
//! - a job whose caller went away while it waited (the client disconnected, the AUTH timeout
//!   expired) is skipped, never run ([`VerifyPool::skipped`] counts them);
//! - a full queue answers `None` at once (the server then replies 454 4.7.0).
//!
//! ```
//! use smtp_server::VerifyPool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = VerifyPool::new(2);
//! let ok = pool.run(|| "expensive check" == "expensive check").await;
//! assert_eq!(ok, Some(true));
//! assert_eq!(pool.completed(), 1);
//! # }
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The default queue bound of [`VerifyPool::new`].
pub const DEFAULT_MAX_QUEUE: usize = 4096;

type Job = Box<dyn FnOnce(&Counters) + Send>;

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicUsize,
    skipped: AtomicU64,
    completed: AtomicU64,
}

struct Inner {
    tx: SyncSender<Job>,
    counters: Arc<Counters>,
    workers: usize,
}

/// A bounded pool of verification threads. Cheap to clone: clones share the threads, which
/// end when the last clone is dropped.
#[derive(Clone)]
pub struct VerifyPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("workers", &self.inner.workers)
            .field("queued", &self.queued())
            .field("skipped", &self.skipped())
            .field("completed", &self.completed())
            .finish()
    }
}

/// The number of cores, the default number of workers.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl VerifyPool {
    /// `workers` threads (at least one) and a queue of [`DEFAULT_MAX_QUEUE`] jobs.
    pub fn new(workers: usize) -> Self {
        Self::with_queue(workers, DEFAULT_MAX_QUEUE)
    }

    /// `workers` threads and a queue of at most `max_queue` waiting jobs.
    pub fn with_queue(workers: usize, max_queue: usize) -> Self {
        let workers = workers.max(1);
        let (tx, rx) = sync_channel::<Job>(max_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        for i in 0..workers {
            let rx = rx.clone();
            let counters = counters.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("smtp-verify-{i}"))
                .spawn(move || work(&rx, &counters));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a verification worker");
            }
        }
        Self {
            inner: Arc::new(Inner {
                tx,
                counters,
                workers,
            }),
        }
    }

    /// Runs `f` on a worker and waits for its result. `None` when the queue is full or the
    /// pool is gone. Dropping the returned future before `f` started means `f` never runs.
    pub async fn run<T, F>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |counters: &Counters| {
            if tx.is_closed() {
                // The caller gave up while queued: its place is not worth a hash.
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let result = f();
            // Counted before the caller can see the result, so a caller that awaited its job
            // always finds it counted.
            counters.completed.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(result);
        });
        let counters = &self.inner.counters;
        counters.queued.fetch_add(1, Ordering::Relaxed);
        match self.inner.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!("verification queue full: temporary failure");
                return None;
            }
        }
        rx.await.ok()
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Jobs waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.inner.counters.queued.load(Ordering::Relaxed)
    }

    /// Jobs skipped because their caller had gone.
    pub fn skipped(&self) -> u64 {
        self.inner.counters.skipped.load(Ordering::Relaxed)
    }

    /// Jobs run to completion.
    pub fn completed(&self) -> u64 {
        self.inner.counters.completed.load(Ordering::Relaxed)
    }
}

fn work(rx: &Mutex<Receiver<Job>>, counters: &Counters) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else {
            return; // every VerifyPool clone is gone
        };
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        job(counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn more_jobs_than_workers_all_complete_in_order() {
        let pool = VerifyPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..20u32 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            handles.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                })
                .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some(i as u32));
        }
        assert!(
            peak.load(Ordering::SeqCst) <= 2,
            "never more than the workers at once"
        );
        assert_eq!(pool.completed(), 20);
        assert_eq!(pool.queued(), 0);
    }

    /// Occupies the pool's only worker until the returned sender is used (or 10 s pass).
    async fn occupy(
        pool: &VerifyPool,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Option<()>>,
    ) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = started_tx.send(());
                    let _ = gate.recv_timeout(Duration::from_secs(10));
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the worker started the first job");
        (release, busy)
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_is_skipped() {
        let pool = VerifyPool::new(1);
        let (release, busy) = occupy(&pool).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            pool.run(move || r2.fetch_add(1, Ordering::SeqCst)),
        )
        .await;
        assert!(waiting.is_err(), "still queued when the caller gave up");
        release.send(()).unwrap();
        busy.await.unwrap();
        // The next job runs after the skipped one.
        assert_eq!(pool.run(|| 7).await, Some(7));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the abandoned job never ran");
        assert_eq!(pool.skipped(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_answers_at_once() {
        let pool = VerifyPool::with_queue(1, 1);
        let (release, busy) = occupy(&pool).await;
        let second = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| 2).await })
        };
        while pool.queued() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.run(|| 3).await, None, "queue full");
        release.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(second.await.unwrap(), Some(2));
    }
}

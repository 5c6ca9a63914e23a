//! Message bodies that do not pile up in memory: [`Body`] is either the bytes themselves (a
//! small message) or a spool file (a large one, or any one while the server-wide budget for
//! in-memory bodies is spent). The server fills it while the message arrives ([`BodySink`]);
//! the handler reads it as bytes or as a stream. A spool file is removed when the last `Body`
//! holding it is dropped, so a refused message or a dropped connection leaves nothing behind.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
#[cfg(feature = "tokio")]
use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter};

/// Where a handler wants a message's body written while it arrives (see
/// [`Handler::body_target`](crate::Handler::body_target)): a new file at `path` that starts with
/// `prefix` (a trace header, say). The body is then never held in memory and never copied: the
/// handler can rename the finished file into place.
#[derive(Debug, Clone)]
pub struct BodyTarget {
    /// The file to create (it must not exist).
    pub path: PathBuf,
    /// Octets written before the body (not part of [`Body`]'s contents).
    pub prefix: Bytes,
}

/// Sees a message's body while it arrives (see
/// [`Handler::body_observer`](crate::Handler::body_observer)): a digest, a signature's body
/// hash, a scanner, computed in the same pass as the body is stored, so nothing reads the
/// body a second time. The finished observer reaches the DATA hook as
/// [`Envelope::observed`](crate::Envelope::observed); downcast it to the handler's own type
/// (`(&**o as &dyn Any).downcast_ref::<T>()`).
pub trait BodyObserver: std::any::Any + Send + Sync + std::fmt::Debug {
    /// The next piece of the body, in order (after dot-unstuffing or BDAT reassembly; the
    /// pieces together are exactly [`Body`]'s contents).
    fn update(&mut self, chunk: &[u8]);
    /// The body is complete: called once, before the DATA hook runs.
    fn finish(&mut self) {}
}

/// A spool file; removed from disk when dropped (unless the handler moved it away first).
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    len: u64,
    /// Octets before the body (a handler's prefix).
    offset: u64,
}

impl SpoolFile {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The octets before the body: a [`BodyTarget`]'s prefix.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A message body (after dot-unstuffing or BDAT reassembly).
#[derive(Debug, Clone)]
pub enum Body {
    /// In memory.
    Memory(Bytes),
    /// In a spool file (removed once every clone of this `Body` is dropped).
    Spooled(Arc<SpoolFile>),
}

impl Default for Body {
    fn default() -> Self {
        Self::Memory(Bytes::new())
    }
}

impl Body {
    /// Its length in octets.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::Spooled(f) => f.len,
        }
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when the body is in memory.
    pub fn as_memory(&self) -> Option<&Bytes> {
        match self {
            Self::Memory(b) => Some(b),
            Self::Spooled(_) => None,
        }
    }

    /// The spool file's path, when the body is spooled.
    pub fn spool_path(&self) -> Option<&Path> {
        match self {
            Self::Memory(_) => None,
            Self::Spooled(f) => Some(f.path()),
        }
    }

    /// The whole body as bytes (read from the spool file when needed: mind the size).
    #[cfg(feature = "tokio")]
    pub async fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            Self::Memory(b) => Ok(b.clone()),
            Self::Spooled(f) => tokio::fs::read(&f.path)
                .await
                .map(|v| Bytes::from(v).slice(f.offset as usize..)),
        }
    }

    /// The body as a stream.
    #[cfg(feature = "tokio")]
    pub async fn reader(&self) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(match self {
            Self::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
            Self::Spooled(f) => {
                use tokio::io::AsyncSeekExt;
                let mut file = tokio::fs::File::open(&f.path).await?;
                file.seek(std::io::SeekFrom::Start(f.offset)).await?;
                Box::new(file)
            }
        })
    }

    /// The body as a blocking reader (for a writer on a blocking thread).
    pub fn blocking_reader(&self) -> io::Result<Box<dyn std::io::Read + Send>> {
        Ok(match self {
            Self::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
            Self::Spooled(f) => {
                use std::io::Seek;
                let mut file = std::fs::File::open(&f.path)?;
                file.seek(std::io::SeekFrom::Start(f.offset))?;
                Box::new(file)
            }
        })
    }
}

#[cfg(feature = "tokio")]
/// The server-wide budget for message bytes held in memory.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

#[cfg(feature = "tokio")]
impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(feature = "tokio")]
/// Budget bytes held by a body in memory; given back when dropped.
#[derive(Debug)]
pub(crate) struct BudgetHold {
    budget: Arc<MemoryBudget>,
    n: u64,
}

#[cfg(feature = "tokio")]
impl Drop for BudgetHold {
    fn drop(&mut self) {
        self.budget.give_back(self.n);
    }
}

#[cfg(feature = "tokio")]
/// A spool file being written; removed if it is never finished.
struct Spooling {
    file: BufWriter<tokio::fs::File>,
    guard: SpoolFile,
}

/// Collects a body as it arrives: in memory up to `threshold` octets and while the budget
/// allows, in a spool file beyond.
#[cfg(feature = "tokio")]
pub(crate) struct BodySink {
    threshold: usize,
    dir: Arc<Path>,
    budget: Arc<MemoryBudget>,
    /// The body while in memory; its capacity (not only its length) is what the budget holds.
    memory: Vec<u8>,
    held: u64,
    spool: Option<Spooling>,
    len: u64,
    /// The handler's target, opened at the first octet.
    target: Option<BodyTarget>,
}

#[cfg(feature = "tokio")]
fn spool_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "smtp-spool-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(feature = "tokio")]
impl BodySink {
    pub(crate) fn new(threshold: usize, dir: Arc<Path>, budget: Arc<MemoryBudget>) -> Self {
        Self {
            threshold,
            dir,
            budget,
            memory: Vec::new(),
            held: 0,
            spool: None,
            len: 0,
            target: None,
        }
    }

    /// Writes the body into the handler's file instead (straight, whatever its size).
    pub(crate) fn with_target(mut self, target: Option<BodyTarget>) -> Self {
        self.target = target;
        self
    }

    async fn open(&mut self) -> io::Result<()> {
        let (path, prefix) = match self.target.take() {
            Some(t) => (t.path, t.prefix),
            None => (self.dir.join(spool_name()), Bytes::new()),
        };
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        let mut spool = Spooling {
            file: BufWriter::with_capacity(64 * 1024, file),
            guard: SpoolFile {
                path,
                len: 0,
                offset: prefix.len() as u64,
            },
        };
        spool.file.write_all(&prefix).await?;
        spool.file.write_all(&self.memory).await?;
        self.memory = Vec::new();
        self.budget.give_back(self.held);
        self.held = 0;
        self.spool = Some(spool);
        Ok(())
    }

    /// Adds a piece of the body.
    pub(crate) async fn push(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.len += chunk.len() as u64;
        if self.spool.is_none() && self.target.is_some() {
            self.open().await?;
        }
        if let Some(s) = &mut self.spool {
            return s.file.write_all(chunk).await;
        }
        let needed = self.memory.len() + chunk.len();
        if needed <= self.threshold {
            // Grow by doubling, capped at the threshold, and take the budget for the capacity
            // itself: the budget bounds memory, not just the octets written into it.
            let cap = self.memory.capacity();
            let new_cap = if needed > cap {
                needed.max((cap * 2).min(self.threshold))
            } else {
                cap
            };
            let extra = (new_cap - cap) as u64;
            if extra == 0 || self.budget.try_take(extra) {
                if extra > 0 {
                    self.held += extra;
                    self.memory.reserve_exact(new_cap - self.memory.len());
                    // reserve_exact may round up: hold that too when the budget allows.
                    let over = (self.memory.capacity() - new_cap) as u64;
                    if over > 0 {
                        if self.budget.try_take(over) {
                            self.held += over;
                        } else {
                            self.memory.shrink_to(new_cap);
                        }
                    }
                }
                self.memory.extend_from_slice(chunk);
                return Ok(());
            }
        }
        // Spill: too large for memory, or the server's budget is spent.
        self.open().await?;
        match &mut self.spool {
            Some(s) => s.file.write_all(chunk).await,
            None => Err(io::ErrorKind::Other.into()),
        }
    }

    /// The body, and the budget it holds while in memory.
    pub(crate) async fn finish(mut self) -> io::Result<(Body, Option<BudgetHold>)> {
        if self.spool.is_none() && self.target.is_some() {
            // An empty body still gets its file (with the prefix).
            self.open().await?;
        }
        match self.spool.take() {
            Some(mut s) => {
                s.file.flush().await?;
                s.guard.len = self.len;
                Ok((Body::Spooled(Arc::new(s.guard)), None))
            }
            None => {
                let hold = BudgetHold {
                    budget: self.budget.clone(),
                    n: std::mem::take(&mut self.held),
                };
                Ok((
                    Body::Memory(Bytes::from(std::mem::take(&mut self.memory))),
                    Some(hold),
                ))
            }
        }
    }
}

#[cfg(feature = "tokio")]
impl Drop for BodySink {
    fn drop(&mut self) {
        // A body that was never finished (refused, connection gone): its budget goes back;
        // its spool file, if any, is removed by `SpoolFile`'s drop.
        self.budget.give_back(self.held);
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("smtp-body-{}", spool_name()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_and_large_ones_spill_to_disk() {
        let d = dir();
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let mut small = BodySink::new(1024, Arc::from(d.as_path()), budget.clone());
        small.push(b"hello ").await.unwrap();
        small.push(b"world").await.unwrap();
        let (body, hold) = small.finish().await.unwrap();
        assert_eq!(body.as_memory().unwrap(), &b"hello world"[..]);
        // The budget holds the buffer's capacity: 11 octets grew it to 12.
        assert_eq!(budget.used(), 12);
        drop(hold);
        assert_eq!(budget.used(), 0);

        let mut big = BodySink::new(1024, Arc::from(d.as_path()), budget.clone());
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let chunk = vec![b'a' + i % 26; 100];
            expected.extend_from_slice(&chunk);
            big.push(&chunk).await.unwrap();
        }
        let (body, hold) = big.finish().await.unwrap();
        assert!(hold.is_none());
        assert_eq!(budget.used(), 0, "spilling gave the budget back");
        let path = body.spool_path().unwrap().to_path_buf();
        assert_eq!(body.len(), 10_000);
        assert_eq!(body.to_bytes().await.unwrap(), expected);
        let mut streamed = Vec::new();
        body.reader()
            .await
            .unwrap()
            .read_to_end(&mut streamed)
            .await
            .unwrap();
        assert_eq!(streamed, expected);
        let copy = body.clone();
        drop(body);
        assert!(path.exists(), "a clone keeps the file");
        drop(copy);
        assert!(!path.exists(), "the last one removes it");
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_spent_budget_spills_and_an_unfinished_body_leaves_nothing() {
        let d = dir();
        let budget = Arc::new(MemoryBudget::new(100));
        let mut a = BodySink::new(1 << 20, Arc::from(d.as_path()), budget.clone());
        a.push(&[b'x'; 80]).await.unwrap();
        let mut b = BodySink::new(1 << 20, Arc::from(d.as_path()), budget.clone());
        b.push(&[b'y'; 80]).await.unwrap(); // over the budget: spooled
        assert_eq!(budget.used(), 80);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        drop(b); // never finished
        drop(a);
        assert_eq!(budget.used(), 0);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(d);
    }
}

//! Delivery: Maildir (atomic: tmp/, fsync, rename into new/, fsync the directory, all before
//! the 250), relay to an upstream server, or discard.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A unique message id: seconds, microseconds, process and a counter.
pub fn queue_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Maildir (<https://cr.yp.to/proto/maildir.html>).
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Opens the Maildir, creating `tmp/`, `new/` and `cur/` when missing.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes one message durably; returns its path in `new/`. Blocking.
    pub fn store(&self, id: &str, hostname: &str, parts: &[&[u8]]) -> std::io::Result<PathBuf> {
        let host: String = hostname
            .chars()
            .map(|c| if c == '/' || c == ':' { '_' } else { c })
            .collect();
        let name = format!("{id}.{host}");
        let tmp = self.root.join("tmp").join(&name);
        let new = self.root.join("new").join(&name);
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &new)?;
            std::fs::File::open(self.root.join("new"))?.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_atomically_into_new() {
        let dir = std::env::temp_dir().join(format!("smtpd-maildir-{}", queue_id()));
        let md = Maildir::open(&dir).unwrap();
        let p = md
            .store(&queue_id(), "host", &[b"Received: x\r\n", b"body\r\n"])
            .unwrap();
        assert!(p.starts_with(dir.join("new")));
        assert_eq!(std::fs::read(&p).unwrap(), b"Received: x\r\nbody\r\n");
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ids_are_unique() {
        let a = queue_id();
        let b = queue_id();
        assert_ne!(a, b);
    }
}

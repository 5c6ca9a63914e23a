//! Maildir delivery (<https://cr.yp.to/proto/maildir.html>): atomic (tmp/, fsync, rename
//! into new/, fsync the directory, all before the 250). The body is written straight into
//! `tmp/` behind the `Received:` header while it arrives ([`Delivery::body_target`]), so
//! delivering it is a rename; a submission that lacks `Date:` or `Message-ID:` is the one case
//! written again, with the fields added after the `Received:` header.

use std::path::{Path, PathBuf};

use smtp_server::{Body, BodyTarget};

#[cfg(test)]
use super::queue_id;
use super::{Delivery, DeliveryError, DeliveryFuture, Message};

/// A host name as it may appear in a Maildir file name.
fn sanitize(hostname: &str) -> String {
    hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect()
}

/// The suffix of a message moved aside while it is written again with added fields.
const ASIDE: &str = ".orig";

/// The writer's pid when `name` is one of this server's own Maildir names for `host` (or such
/// a name moved aside, [`ASIDE`]).
fn own_writer_pid(name: &str, host: &str) -> Option<u32> {
    let name = name.strip_suffix(ASIDE).unwrap_or(name);
    let id = name.strip_suffix(host)?.strip_suffix('.')?;
    let (secs, rest) = id.split_once(".M")?;
    let (_usec, rest) = rest.split_once('P')?;
    let (pid, counter) = rest.split_once('Q')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(secs) && digits(counter))
        .then(|| pid.parse().ok())
        .flatten()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
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

    /// Removes stale files from `tmp/` (at start): any file older than 36 hours (the Maildir
    /// convention), and this server's own partial writes whose process is gone (names
    /// `<secs>.M<usec>P<pid>Q<n>.<hostname>`, or that name moved aside with `.orig` while the
    /// message is written again, whose pid no longer runs: a crash or `kill -9` during a
    /// write). Returns how many were removed.
    pub fn clean_tmp(&self, hostname: &str) -> std::io::Result<usize> {
        let host = sanitize(hostname);
        let old = std::time::Duration::from_secs(36 * 3600);
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > old);
            let name = entry.file_name().to_string_lossy().into_owned();
            let crashed = own_writer_pid(&name, &host)
                .is_some_and(|pid| pid != std::process::id() && !process_alive(pid));
            if (stale || crashed) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `tmp/` path of message `id` (where a body can be written while it arrives).
    pub fn tmp_path(&self, id: &str, hostname: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{id}.{}", sanitize(hostname)))
    }

    /// The queue id of a message file this server named with [`Maildir::tmp_path`].
    pub fn queue_id_of(&self, path: &Path, hostname: &str) -> Option<String> {
        let name = path.file_name()?.to_str()?;
        let id = name.strip_suffix(&sanitize(hostname))?.strip_suffix('.')?;
        Some(id.to_owned())
    }

    /// Delivers a message written completely at `tmp` (a path from [`Maildir::tmp_path`]):
    /// fsync, rename into `new/`, fsync the directory. Blocking.
    pub fn commit(&self, tmp: &Path) -> std::io::Result<PathBuf> {
        let name = tmp
            .file_name()
            .ok_or_else(|| std::io::Error::other("no file name"))?;
        if tmp.parent() != Some(&self.root.join("tmp")) {
            return Err(std::io::Error::other("not in this Maildir's tmp/"));
        }
        std::fs::File::open(tmp)?.sync_all()?;
        let new = self.root.join("new").join(name);
        std::fs::rename(tmp, &new)?;
        std::fs::File::open(self.root.join("new"))?.sync_all()?;
        Ok(new)
    }

    /// Writes one message durably; returns its path in `new/`. Blocking.
    pub fn store(&self, id: &str, hostname: &str, parts: &[&[u8]]) -> std::io::Result<PathBuf> {
        let joined: Vec<u8> = parts.concat();
        self.store_from(id, hostname, &mut &joined[..])
    }

    /// Writes one message durably from a reader (a spooled body is copied through a small
    /// buffer, never held whole); returns its path in `new/`. Blocking.
    pub fn store_from(
        &self,
        id: &str,
        hostname: &str,
        message: &mut dyn std::io::Read,
    ) -> std::io::Result<PathBuf> {
        let name = format!("{id}.{}", sanitize(hostname));
        let tmp = self.root.join("tmp").join(&name);
        let new = self.root.join("new").join(&name);
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            std::io::copy(message, &mut f)?;
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

/// [`Maildir`] as a [`Delivery`]: the directory and the host name its file names carry.
#[derive(Debug, Clone)]
pub struct MaildirDelivery {
    dir: Maildir,
    hostname: String,
}

impl MaildirDelivery {
    /// Opens (creating) the Maildir at `path` and removes its stale `tmp/` files.
    pub fn open(path: &Path, hostname: &str) -> Result<Self, String> {
        let dir =
            Maildir::open(path).map_err(|e| format!("delivery.path {}: {e}", path.display()))?;
        match dir.clean_tmp(hostname) {
            Ok(0) => {}
            Ok(n) => tracing::info!(target: "smtpd::app",
                removed = n,
                dir = %path.join("tmp").display(),
                "removed stale files from the Maildir's tmp/ (crashed writes, or older than 36 hours)"
            ),
            Err(e) => {
                tracing::warn!(target: "smtpd::app", error = %e, "could not clean the Maildir's tmp/")
            }
        }
        Ok(Self {
            dir,
            hostname: hostname.to_owned(),
        })
    }

    /// The Maildir.
    pub fn maildir(&self) -> &Maildir {
        &self.dir
    }
}

impl Delivery for MaildirDelivery {
    fn kind(&self) -> &'static str {
        "maildir"
    }

    fn body_target(&self, header: &dyn Fn(&str) -> bytes::Bytes) -> Option<BodyTarget> {
        let id = super::queue_id();
        Some(BodyTarget {
            path: self.dir.tmp_path(&id, &self.hostname),
            prefix: header(&id),
        })
    }

    fn written(&self, body: &Body) -> Option<String> {
        let path = body.spool_path()?;
        (path.parent() == Some(&self.dir.root().join("tmp"))).then(|| {
            self.dir
                .queue_id_of(path, &self.hostname)
                .unwrap_or_default()
        })
    }

    fn deliver<'a>(&'a self, m: Message<'a>) -> DeliveryFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (dir, host, id, header) = (
                self.dir.clone(),
                self.hostname.clone(),
                m.id.to_owned(),
                m.header.to_owned(),
            );
            let body = &m.envelope.body;
            let task = match (self.written(body).is_some(), body.spool_path()) {
                // Written into tmp/ behind its Received header: renamed into place, or
                // written again with the added fields after that header.
                (true, Some(path)) => {
                    let path = path.to_path_buf();
                    let offset = match body {
                        Body::Spooled(f) => f.offset(),
                        Body::Memory(_) => 0,
                    };
                    tokio::task::spawn_blocking(move || {
                        if header.is_empty() {
                            return dir.commit(&path);
                        }
                        with_added_fields(&dir, &path, offset, &header, &id, &host)
                    })
                }
                // The header, then the body streamed from memory or its spool file.
                _ => {
                    let body = body.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut message = std::io::Read::chain(
                            std::io::Cursor::new(header.into_bytes()),
                            body.blocking_reader()?,
                        );
                        dir.store_from(&id, &host, &mut message)
                    })
                }
            };
            match task.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(DeliveryError::Local(format!("maildir: {e}"))),
                Err(e) => Err(DeliveryError::Local(format!("maildir task: {e}"))),
            }
        })
    }
}

/// Writes the message at `tmp` again with `additions` after its first `offset` octets (the
/// `Received:` header), into `new/` under the same name. Blocking.
fn with_added_fields(
    md: &Maildir,
    tmp: &Path,
    offset: u64,
    additions: &str,
    id: &str,
    hostname: &str,
) -> std::io::Result<PathBuf> {
    use std::io::Read;
    // The name is the new file's: the original moves aside while it is read.
    let mut aside = tmp.as_os_str().to_owned();
    aside.push(ASIDE);
    let aside = PathBuf::from(aside);
    std::fs::rename(tmp, &aside)?;
    let result = (|| {
        let mut original = std::fs::File::open(&aside)?;
        let mut prefix = vec![0u8; usize::try_from(offset).unwrap_or(0)];
        original.read_exact(&mut prefix)?;
        let mut message = std::io::Cursor::new(prefix)
            .chain(std::io::Cursor::new(additions.as_bytes()))
            .chain(original);
        md.store_from(id, hostname, &mut message)
    })();
    let _ = std::fs::remove_file(&aside);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_crashed_tmp_files_are_removed_at_start() {
        let dir = std::env::temp_dir().join(format!("smtpd-clean-{}", queue_id()));
        let md = Maildir::open(&dir).unwrap();
        let tmp = dir.join("tmp");
        // A partial write of a process that no longer exists (pid beyond pid_max).
        std::fs::write(tmp.join("1790000000.M1P4999999Q3.mx.test"), "half a mes").unwrap();
        // The same process's message moved aside while written again with added fields.
        std::fs::write(tmp.join("1790000000.M2P4999999Q5.mx.test.orig"), "whole").unwrap();
        // A write in progress of a live process (ours stands in for another smtpd).
        let live = format!("1790000000.M1P{}Q4.mx.test", std::process::id());
        std::fs::write(tmp.join(&live), "in progress").unwrap();
        // Another program's fresh file, and a 3-day-old one.
        std::fs::write(tmp.join("someone-else"), "x").unwrap();
        let old = tmp.join("ancient");
        std::fs::write(&old, "x").unwrap();
        let three_days = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(three_days)
            .unwrap();
        assert_eq!(md.clean_tmp("mx.test").unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![live, "someone-else".to_string()]);
        let _ = std::fs::remove_dir_all(dir);
    }

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

    #[tokio::test]
    async fn a_message_from_memory_is_its_header_then_its_body_in_new() {
        let dir = std::env::temp_dir().join(format!("smtpd-deliver-{}", queue_id()));
        let d = MaildirDelivery::open(&dir, "mx.test").unwrap();
        assert_eq!(d.kind(), "maildir");
        let session = smtp_server::Session::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mut envelope = smtp_server::Envelope::default();
        envelope.body = Body::Memory(bytes::Bytes::from_static(b"Subject: x\r\n\r\nhi\r\n"));
        // Not written into tmp/: delivered as header + body.
        assert_eq!(d.written(&envelope.body), None);
        let m = Message {
            session: &session,
            envelope: &envelope,
            id: "1.M2P3Q4",
            header: "Received: by mx.test\r\n",
        };
        d.deliver(m).await.unwrap();
        let new: Vec<_> = std::fs::read_dir(dir.join("new")).unwrap().collect();
        assert_eq!(new.len(), 1);
        let file = new[0].as_ref().unwrap().path();
        assert!(
            file.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("1.M2P3Q4.")
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"Received: by mx.test\r\nSubject: x\r\n\r\nhi\r\n"
        );
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        // A target in tmp/ names the file the rename will find.
        let t = d
            .body_target(&|id| bytes::Bytes::from(format!("Received: {id}\r\n")))
            .unwrap();
        assert_eq!(t.path.parent().unwrap(), dir.join("tmp"));
        let name = t.path.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            t.prefix,
            format!("Received: {}\r\n", name.split_once(".mx").unwrap().0)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

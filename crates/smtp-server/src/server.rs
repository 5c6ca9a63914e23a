//! [`Server`]: the accept loop, connection limits and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::auth::{AuthLimiter, Authenticator, ProviderAuthenticator, address_key};
use crate::config::ServerConfig;
use crate::conn::{self, BoxIo};
use crate::{Handler, replies};

pub(crate) struct Shared<H> {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) handler: H,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) per_ip: Arc<ConnectionCounts>,
    pub(crate) budget: Arc<crate::body::MemoryBudget>,
}

/// An SMTP server: a configuration, a [`Handler`] and optionally an [`Authenticator`].
pub struct Server<H> {
    shared: Shared<H>,
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .field("authenticator", &self.shared.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// A server with no authenticator: AUTH is parsed and every attempt gets 535 5.7.8.
    pub fn new(config: ServerConfig, handler: H) -> Self {
        Self {
            shared: Shared {
                per_ip: Arc::default(),
                budget: Arc::new(crate::body::MemoryBudget::new(config.memory_budget)),
                config: Arc::new(config),
                handler,
                authenticator: None,
            },
        }
    }

    /// Shares an AUTH failure limiter with other servers of the process (one per listener),
    /// so failures count once across all of them: the configuration's limiter is replaced
    /// (the same as [`ServerConfigBuilder::limiter`](crate::ServerConfigBuilder::limiter)).
    pub fn limiter(mut self, limiter: Arc<AuthLimiter>) -> Self {
        Arc::make_mut(&mut self.shared.config).limiter = limiter;
        self
    }

    /// Sets the authenticator (aiosmtpd's `authenticator=`).
    pub fn authenticator(mut self, a: impl Authenticator) -> Self {
        self.shared.authenticator = Some(Arc::new(a));
        self
    }

    /// Serves one connection that is already open (hyper-style): a TCP stream accepted
    /// elsewhere, a Unix socket, or an in-memory `tokio::io::duplex` in a test. `peer` and
    /// `local` are the addresses the session reports (PROXY protocol, when on, replaces
    /// `peer`). Every write is bounded by `read_timeout`; there is no shutdown signal (drop
    /// the future to end the connection). Connections served this way share the server's
    /// AUTH limiter, per-address counts and memory budget.
    pub async fn serve_connection<I>(&self, io: I, peer: SocketAddr, local: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io = crate::io::WriteDeadline::new(io, self.shared.config.read_timeout);
        conn::run(&self.shared, Box::new(io) as BoxIo, peer, local, None).await;
    }

    /// Sets an `AuthProvider` service as the authenticator (Ok → 235, Invalid → 535,
    /// Failure → 454).
    pub fn provider<P>(self, provider: P) -> Self
    where
        ProviderAuthenticator<P>: Authenticator,
    {
        self.authenticator(ProviderAuthenticator::new(provider))
    }

    /// Serves until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops accepting, answers
    /// idle sessions 421 4.3.2, lets a DATA in flight finish within `shutdown_grace`.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let grace = self.shared.config.shutdown_grace;
        let shared = Arc::new(self.shared);
        let (tx, rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(shared.config.max_connections));
        let mut sessions = JoinSet::new();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let shared = shared.clone();
                    let rx = rx.clone();
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        if let Some(o) = &shared.config.observer {
                            o.connection_refused(crate::Refusal::MaxConnections);
                        }
                        sessions.spawn(refuse(stream));
                        continue;
                    };
                    let span = tracing::info_span!("smtp", %peer);
                    sessions.spawn(
                        async move {
                            let _permit = permit;
                            let timeout = shared.config.read_timeout;
                            let io = crate::io::WriteDeadline::new(stream, timeout);
                            conn::run(&shared, Box::new(io) as BoxIo, peer, local, Some(rx)).await;
                        }
                        .instrument(span),
                    );
                }
            }
        }
        drop(listener);
        let _ = tx.send(true);
        let drained = tokio::time::timeout(grace + Duration::from_secs(1), async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            sessions.abort_all();
        }
        Ok(())
    }
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream
        .write_all(&replies::too_many_connections().to_bytes())
        .await;
    let _ = stream.shutdown().await;
}

/// Binds a listener (a convenience for examples and tests).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Connections per address (IPv6: per /64) in progress; an entry exists only while it has
/// connections, so the table is bounded by `max_connections`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    map: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.counts.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl ConnectionCounts {
    /// A slot for `ip`, or `None` when it already has `max` (0: no limit).
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let key = address_key(ip);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if max > 0 && *n >= max {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            counts: self.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_counts_are_per_address_and_released() {
        let c = Arc::new(ConnectionCounts::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let s1 = c.acquire(a, 2).unwrap();
        let _s2 = c.acquire(a, 2).unwrap();
        assert!(c.acquire(a, 2).is_none());
        assert!(c.acquire("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(s1);
        assert!(c.acquire(a, 2).is_some());
        assert!(c.acquire(a, 0).is_some(), "0: no limit");
    }
}

//! Starting and stopping the server: storage, TLS, the module registry, the
//! listeners and their accept loops, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::core::Core;
use crate::registry::{Module, Registry};
use crate::storage::{Db, StorageError};
use crate::tls::{TlsContext, TlsError};

/// Every protocol module, in registration order.
pub fn modules() -> Vec<Module> {
    vec![
        crate::xep::disco::MODULE,
        crate::roster::MODULE,
        crate::presence::MODULE,
        crate::message::MODULE,
        crate::xep::ping::MODULE,
        crate::xep::version::MODULE,
        crate::xep::time::MODULE,
        crate::xep::vcard::MODULE,
        crate::xep::session::MODULE,
        crate::xep::carbons::MODULE,
        crate::xep::csi::MODULE,
        crate::sm::MODULE,
        crate::blocking::MODULE,
        crate::mam::MODULE,
        crate::component::MODULE,
        crate::push::MODULE,
        crate::upload::MODULE,
        crate::muc::MODULE,
        crate::xep::fast::MODULE,
        crate::xep::caps::MODULE,
        crate::pubsub::MODULE,
        crate::xep::avatar::MODULE,
        crate::xep::private::MODULE,
        crate::xep::bookmarks::MODULE,
    ]
}

/// Open the database with the migrations of the core and every module.
pub async fn open_db(config: &Config, registry: &Registry) -> Result<Db, StorageError> {
    let mut migrators = crate::storage::core_migrators();
    migrators.extend_from_slice(registry.migrators());
    Db::open(&config.data_dir, &migrators).await
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} ({listener}): {err}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        err: std::io::Error,
    },
}

/// The addresses the listeners actually bound (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    pub c2s: Option<SocketAddr>,
    pub c2s_tls: Option<SocketAddr>,
    pub s2s: Option<SocketAddr>,
    pub s2s_tls: Option<SocketAddr>,
    /// The external-component listener (XEP-0114).
    pub component: Option<SocketAddr>,
}

/// A running server.
pub struct Server {
    core: Arc<Core>,
    shutdown: watch::Sender<bool>,
    alive: mpsc::Receiver<()>,
    accept_tasks: Vec<JoinHandle<()>>,
    addrs: BoundAddrs,
}

impl Server {
    /// Open storage, load TLS, bind the listeners and start accepting.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let registry = Registry::new(&modules());
        let db = open_db(&config, &registry).await?;
        let tls = TlsContext::load(&config)?;
        let clock = Arc::new(crate::clock::Clock::new(&config.time_sync));
        let secret = db
            .server_secret("scram-unknown-user", || {
                crate::core::random_hex(32).into_bytes()
            })
            .await?;
        // Bind everything before accepting anything, so a bad port fails start-up.
        let c2s = bind("c2s", config.listen.c2s).await?;
        let c2s_tls = bind("c2s_tls", config.listen.c2s_tls).await?;
        // Federation: TLS material and listeners only when it is on.
        let s2s_tls = if config.s2s.enabled {
            Some(crate::s2s::S2sTls::load(
                &config,
                tls.store.clone(),
                clock.clone(),
            )?)
        } else {
            tracing::info!(target: "kith::federation", "federation is turned off");
            None
        };
        let on = |a: Option<SocketAddr>| a.filter(|_| config.s2s.enabled);
        let s2s = bind("s2s", on(config.listen.s2s)).await?;
        let s2s_direct = bind("s2s_tls", on(config.listen.s2s_tls)).await?;
        let component = bind("component", config.listen.component).await?;
        // `http` and `https` are bound by the web pod (`kith-web`).
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (alive_tx, alive) = mpsc::channel(1);
        let core = Arc::new(Core::new(
            config,
            db,
            registry,
            tls,
            secret,
            shutdown_rx.clone(),
            alive_tx,
            clock.clone(),
        ));
        // Says whether time is confirmed, and when it becomes so.
        tokio::spawn(async move { clock.watch(shutdown_rx).await });
        if let Some(t) = s2s_tls {
            let _ = core.s2s.set(Arc::new(crate::s2s::S2sState::new(
                t,
                Arc::downgrade(&core),
                &core.config.s2s,
            )));
        }
        // Module background tasks (pruners); each returns on shutdown.
        for t in core.registry.background_tasks() {
            tokio::spawn(t(core.clone()));
        }
        let mut addrs = BoundAddrs::default();
        let mut accept_tasks = Vec::new();
        for (listener, direct, slot) in [
            (s2s, false, &mut addrs.s2s),
            (s2s_direct, true, &mut addrs.s2s_tls),
        ] {
            if let Some(l) = listener {
                *slot = l.local_addr().ok();
                tracing::info!(target: "kith::federation", addr = ?slot, direct_tls = direct, "listening for servers");
                accept_tasks.push(tokio::spawn(s2s_accept_loop(core.clone(), l, direct)));
            }
        }
        for (listener, direct, slot) in [
            (c2s, false, &mut addrs.c2s),
            (c2s_tls, true, &mut addrs.c2s_tls),
        ] {
            if let Some(l) = listener {
                *slot = l.local_addr().ok();
                tracing::info!(addr = ?slot, direct_tls = direct, "listening for clients");
                accept_tasks.push(tokio::spawn(accept_loop(core.clone(), l, direct)));
            }
        }
        if let Some(l) = component {
            addrs.component = l.local_addr().ok();
            tracing::info!(addr = ?addrs.component, "listening for components");
            accept_tasks.push(tokio::spawn(accept_components(core.clone(), l)));
        }
        Ok(Server {
            core,
            shutdown,
            alive,
            accept_tasks,
            addrs,
        })
    }

    /// Where the listeners are.
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// The certificate store every listener presents (c2s, s2s, HTTPS):
    /// certificate provisioning installs new certificates there.
    pub fn cert_store(&self) -> Arc<crate::tls::CertStore> {
        self.core.tls.store.clone()
    }

    /// A handle for the web pod; drop it before [`Server::shutdown`].
    pub fn web(&self) -> crate::web::WebHandle {
        crate::web::WebHandle::new(self.core.clone())
    }

    /// Put new limits in force without a restart (`limits.*` settings; see
    /// [`crate::config_file::applies_live`]). New streams use them; open ones
    /// keep the stanza sizes and timeouts they started with.
    pub fn set_limits(&self, limits: crate::Limits) {
        self.core.set_limits(limits);
    }

    /// Number of bound sessions.
    pub fn session_count(&self) -> usize {
        self.core.sessions.count()
    }

    /// Stop accepting, close every stream with `<system-shutdown/>`, wait (at
    /// most `grace`) for sessions to finish, and close storage.
    pub async fn shutdown(self, grace: Duration) {
        let Server {
            core,
            shutdown,
            mut alive,
            accept_tasks,
            ..
        } = self;
        for t in &accept_tasks {
            t.abort();
        }
        let _ = shutdown.send(true);
        let db = core.db.clone();
        drop(core);
        // Every connection task holds a sender; recv() returns None when all are gone.
        if tokio::time::timeout(grace, alive.recv()).await.is_err() {
            tracing::warn!("some sessions did not finish in time");
        }
        db.close().await;
        tracing::info!("server stopped");
    }
}

async fn bind(
    name: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, StartError> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|err| StartError::Bind {
                listener: name,
                addr,
                err,
            }),
    }
}

async fn accept_loop(core: Arc<Core>, listener: TcpListener, direct_tls: bool) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(crate::stream::c2s::serve(
                    core.clone(),
                    tcp,
                    peer,
                    direct_tls,
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_components(core: Arc<Core>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(crate::component::serve(core.clone(), tcp, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn s2s_accept_loop(core: Arc<Core>, listener: TcpListener, direct_tls: bool) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(crate::s2s::incoming::serve(
                    core.clone(),
                    tcp,
                    peer,
                    direct_tls,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

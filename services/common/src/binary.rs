//! The shape of every `main`: telemetry → config (exit 64 on bad config) → bind →
//! `run(listener, config, shutdown)`. `--health-check` probes a running instance instead
//! (for container HEALTHCHECKs) and exits 0 when it is serving.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::config::{self, ConfigError, ServerConfig};
use crate::shutdown::Shutdown;

/// Everything a service's `run` needs besides its own configuration.
pub struct Launch {
    pub listener: TcpListener,
    pub server: ServerConfig,
    pub shutdown: Shutdown,
}

pub fn main<C, L, F, Fut>(binary: &'static str, default_port: u16, load: L, run: F) -> !
where
    L: FnOnce() -> Result<C, ConfigError>,
    F: FnOnce(Launch, C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Several TLS users (MongoDB Atlas, rediss://, OpenAI over HTTPS, OTLP) share one
    // rustls; with more than one backend compiled in, it needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = config::or_exit(binary, ServerConfig::from_env(default_port));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    };

    if config::cli_flag("--health-check") {
        let mut addr = server.addr;
        if addr.ip().is_unspecified() {
            addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port());
        }
        let ok = runtime.block_on(crate::server::probe_health(addr, ""));
        std::process::exit(if ok { 0 } else { 1 });
    }

    let code = runtime.block_on(async move {
        let _telemetry = confab_telemetry::init(binary);
        let service_config = config::or_exit(binary, load());
        let listener = match TcpListener::bind(server.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %server.addr, error = %e, "cannot listen");
                eprintln!("{binary}: cannot listen on {}: {e}", server.addr);
                return 69;
            }
        };
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        let launch = Launch {
            listener,
            server,
            shutdown,
        };
        match run(launch, service_config).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "exiting after a fatal error");
                eprintln!("{binary}: {e:#}");
                1
            }
        }
    });
    // Do not wait for detached blocking tasks (e.g. a model decode) past the drain.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

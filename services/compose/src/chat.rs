//! The standalone chat service (`confab-chat`): the chat library plus its backends, each
//! at its URL or, when that is unset, in this process.

use confab_common::binary::Launch;
use confab_common::config::ConfigError;

use crate::{Backends, BackendsConfig};

/// Everything the `confab-chat` binary reads from the environment, once.
#[derive(Debug, Clone)]
pub struct Config {
    pub chat: confab_chat::Config,
    pub backends: BackendsConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            chat: confab_chat::Config::from_env()?,
            backends: BackendsConfig::from_env()?,
        })
    }
}

/// Serves chat until shutdown. `GET /metrics` (with `CONFAB_METRICS_ADDR`) shows the
/// rate limiter's metrics too when it runs in this process.
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let backends = Backends::build(&config.backends).await?;
    let in_process_limiter = backends.ratelimit_in_process();
    confab_chat::run(launch, config.chat, backends.chat_deps(), move |registry| {
        if in_process_limiter {
            confab_ratelimit::metrics::Metrics::global().register(registry);
        }
    })
    .await
}

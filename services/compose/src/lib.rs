//! The one composition point: builds each Confab service in this process or connects to
//! it at its URL (`CONFAB_<SERVICE>_URL`), in dependency order (rate limit → files →
//! conversation → chat), sharing one instance of each between everything that calls it.
//! The gateway and the standalone `confab-chat` binary ([`chat`]) wire through here; the
//! service libraries only take channels. Every configuration is read once, by
//! [`Config::from_env`] / [`BackendsConfig::from_env`] at a binary's start.
#![forbid(unsafe_code)]

pub mod chat;

use confab_common::GrpcChannel;
use confab_common::channel::{self, RemoteOptions};
use confab_common::config::{ConfigError, ServiceUrls};
use confab_proto::service_names;

/// Where one service runs.
#[derive(Debug, Clone)]
pub enum Wiring<C> {
    /// At this URL (its `CONFAB_<SERVICE>_URL`).
    Remote(String),
    /// In this process, with this configuration.
    InProcess(C),
}

impl<C> Wiring<C> {
    /// Remote when `url` is set, else in-process with `config()`.
    fn choose(
        url: Option<&String>,
        config: impl FnOnce() -> Result<C, ConfigError>,
    ) -> Result<Self, ConfigError> {
        Ok(match url {
            Some(u) => Self::Remote(u.clone()),
            None => Self::InProcess(config()?),
        })
    }

    fn given(url: Option<&String>, config: C) -> Self {
        match url {
            Some(u) => Self::Remote(u.clone()),
            None => Self::InProcess(config),
        }
    }
}

/// The services chat calls.
#[derive(Debug, Clone)]
pub struct BackendsConfig {
    pub conversation: Wiring<confab_conversation::Config>,
    pub files: Wiring<confab_files::Config>,
    pub ratelimit: Wiring<confab_ratelimit::Config>,
    /// How remote channels connect.
    pub remote: RemoteOptions,
}

impl BackendsConfig {
    /// Each URL from the environment; each service without one reads its own
    /// configuration (`Config::from_env` of its crate), now.
    pub fn from_env() -> Result<Self, ConfigError> {
        let urls = ServiceUrls::from_env()?;
        Ok(Self {
            conversation: Wiring::choose(
                urls.conversation.as_ref(),
                confab_conversation::Config::from_env,
            )?,
            files: Wiring::choose(urls.files.as_ref(), confab_files::Config::from_env)?,
            ratelimit: Wiring::choose(urls.ratelimit.as_ref(), confab_ratelimit::Config::from_env)?,
            remote: RemoteOptions::from_env()?,
        })
    }

    /// Each service remote when its URL in `urls` is set, else in-process with the given
    /// configuration (tests, benchmarks).
    pub fn new(
        urls: &ServiceUrls,
        conversation: confab_conversation::Config,
        files: confab_files::Config,
        ratelimit: confab_ratelimit::Config,
    ) -> Self {
        Self {
            conversation: Wiring::given(urls.conversation.as_ref(), conversation),
            files: Wiring::given(urls.files.as_ref(), files),
            ratelimit: Wiring::given(urls.ratelimit.as_ref(), ratelimit),
            remote: RemoteOptions::default(),
        }
    }
}

/// Every service the gateway routes to.
#[derive(Debug, Clone)]
pub struct Config {
    pub chat: Wiring<confab_chat::Config>,
    pub backends: BackendsConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let urls = ServiceUrls::from_env()?;
        Ok(Self {
            chat: Wiring::choose(urls.chat.as_ref(), confab_chat::Config::from_env)?,
            backends: BackendsConfig::from_env()?,
        })
    }

    /// Each service remote when its URL in `urls` is set, else in-process with the given
    /// configuration (tests, benchmarks).
    pub fn new(
        urls: &ServiceUrls,
        chat: confab_chat::Config,
        conversation: confab_conversation::Config,
        files: confab_files::Config,
        ratelimit: confab_ratelimit::Config,
    ) -> Self {
        Self {
            chat: Wiring::given(urls.chat.as_ref(), chat),
            backends: BackendsConfig::new(urls, conversation, files, ratelimit),
        }
    }
}

/// One service as its callers reach it.
#[derive(Clone)]
pub struct Service {
    /// Short name: chat, conversation, files, ratelimit.
    pub name: &'static str,
    /// Fully-qualified gRPC service name.
    pub service: &'static str,
    pub channel: GrpcChannel,
    /// `Some` when remote; `None` when it runs in this process.
    pub url: Option<String>,
}

impl Service {
    fn remote(
        name: &'static str,
        service: &'static str,
        variable: &str,
        url: &str,
        options: &RemoteOptions,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            name,
            service,
            channel: channel::remote_with(variable, url, options)?,
            url: Some(url.to_owned()),
        })
    }

    fn local(name: &'static str, service: &'static str, channel: GrpcChannel) -> Self {
        Self {
            name,
            service,
            channel,
            url: None,
        }
    }
}

/// The services chat calls, each built once.
#[derive(Clone)]
pub struct Backends {
    pub conversation: Service,
    pub files: Service,
    pub ratelimit: Service,
}

impl Backends {
    /// Rate limit → files → conversation (which releases files through the same files
    /// instance).
    pub async fn build(config: &BackendsConfig) -> anyhow::Result<Self> {
        let remote = &config.remote;
        let ratelimit = match &config.ratelimit {
            Wiring::Remote(url) => Service::remote(
                "ratelimit",
                service_names::RATELIMIT,
                "CONFAB_RATELIMIT_URL",
                url,
                remote,
            )?,
            Wiring::InProcess(c) => Service::local(
                "ratelimit",
                service_names::RATELIMIT,
                channel::in_process(confab_ratelimit::server(c.clone()).await?),
            ),
        };
        let files = match &config.files {
            Wiring::Remote(url) => Service::remote(
                "files",
                service_names::FILES,
                "CONFAB_FILES_URL",
                url,
                remote,
            )?,
            Wiring::InProcess(c) => Service::local(
                "files",
                service_names::FILES,
                channel::in_process(confab_files::server(c.clone()).await?),
            ),
        };
        let conversation = match &config.conversation {
            Wiring::Remote(url) => Service::remote(
                "conversation",
                service_names::CONVERSATION,
                "CONFAB_CONVERSATION_URL",
                url,
                remote,
            )?,
            Wiring::InProcess(c) => Service::local(
                "conversation",
                service_names::CONVERSATION,
                channel::in_process(
                    confab_conversation::server_with_files(c.clone(), Some(files.channel.clone()))
                        .await?,
                ),
            ),
        };
        Ok(Self {
            conversation,
            files,
            ratelimit,
        })
    }

    /// The channels chat is given.
    pub fn chat_deps(&self) -> confab_chat::ChatDeps {
        confab_chat::ChatDeps {
            conversation: self.conversation.channel.clone(),
            files: self.files.channel.clone(),
            ratelimit: self.ratelimit.channel.clone(),
        }
    }

    /// Whether the rate limiter runs in this process (its metrics are this process's).
    pub fn ratelimit_in_process(&self) -> bool {
        self.ratelimit.url.is_none()
    }
}

/// All four services, each built once.
#[derive(Clone)]
pub struct Services {
    pub chat: Service,
    pub backends: Backends,
}

impl Services {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let backends = Backends::build(&config.backends).await?;
        let chat = match &config.chat {
            Wiring::Remote(url) => Service::remote(
                "chat",
                service_names::CHAT,
                "CONFAB_CHAT_URL",
                url,
                &config.backends.remote,
            )?,
            Wiring::InProcess(c) => Service::local(
                "chat",
                service_names::CHAT,
                channel::in_process(confab_chat::server(c.clone(), backends.chat_deps())?),
            ),
        };
        Ok(Self { chat, backends })
    }
}

//! Test helpers shared by every crate's integration tests: real child processes
//! (service binaries, redis-server, the MongoDB-wire test server) that die with the test
//! process, free ports, unique names, and gRPC probes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;

/// A listener on 127.0.0.1 with an OS-chosen port.
pub async fn local_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A port that was free a moment ago (for child processes that bind themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `prefix_` + 12 random hex chars: database names, key prefixes, user ids.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until `service` ("" for the whole server) reports SERVING.
pub async fn wait_serving(addr: SocketAddr, service: &str, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if crate::server::probe_health(addr, service).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A plain network channel to a test server.
pub async fn connect(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to test server")
}

/// Service names listed by reflection v1alpha (what grpcurl uses here).
pub async fn reflection_services(addr: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(connect(addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection call")
        .into_inner();
    let mut names = Vec::new();
    while let Some(resp) = stream.message().await.expect("reflection response") {
        if let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response {
            names.extend(list.service.into_iter().map(|s| s.name));
        }
    }
    names
}

/// A child process that is killed when this value drops or when the test process
/// dies (a watchdog shell polls the parent), so no server outlives a test run.
pub struct ChildGuard {
    pid: u32,
    wrapper: tokio::process::Child,
    pub log_path: PathBuf,
}

impl ChildGuard {
    /// Starts `program args` with `env`, its stdout+stderr appended to `log_path`.
    pub async fn spawn(
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, String)],
        log_path: impl Into<PathBuf>,
    ) -> std::io::Result<Self> {
        let log_path = log_path.into();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        // Watchdog: report the child's pid, forward its exit code, kill it if we die.
        // The child's stdout goes to the log: only the pid line may reach our pipe.
        let script = r#"parent=$1; shift
"$@" >&2 &
child=$!
echo $child
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.2; done
kill -0 "$child" 2>/dev/null && kill -9 "$child" 2>/dev/null
wait "$child"; exit $?"#;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(program.as_ref())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut wrapper = cmd.spawn()?;
        let stdout = wrapper.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let pid: u32 = lines
            .next_line()
            .await?
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other("watchdog did not report a pid"))?;
        drop(lines);
        Ok(Self {
            pid,
            wrapper,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a signal by name ("TERM", "INT", "KILL", "STOP", "CONT").
    pub fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status();
    }

    /// Waits for the child to exit; its exit code, or None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        match tokio::time::timeout(timeout, self.wrapper.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

/// A directory for logs of this test run (kept after the run for CI to read).
pub fn test_output_dir() -> PathBuf {
    let dir = std::env::var_os("CONFAB_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("confab-test-output"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A real redis-server on a free port, with nothing persisted.
pub struct RedisServer {
    pub port: u16,
    child: Option<ChildGuard>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut this = Self {
            port: free_port(),
            child: None,
        };
        this.restart().await;
        this
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (for outage tests).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.signal("KILL");
            c.wait_exit(Duration::from_secs(5)).await;
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port.to_string();
        let log = test_output_dir().join(format!("redis-{port}.log"));
        let child = ChildGuard::spawn(
            "redis-server",
            &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            &[],
            log,
        )
        .await
        .expect("redis-server is installed (make test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait_for_tcp(addr, Duration::from_secs(10)).await,
            "redis-server did not start: {}",
            child.log()
        );
        self.child = Some(child);
    }
}

/// Where `make test` installs the MongoDB-wire test server (SecantusDB).
pub fn secantusd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CONFAB_SECANTUSD") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/confab/mongo-venv/bin/secantusd-py")
}

/// A MongoDB-wire server (SecantusDB, in memory) for this test process. One per
/// process: tests isolate themselves with [`unique_name`] databases.
pub struct MongoServer {
    pub port: u16,
    _child: ChildGuard,
}

static MONGO: OnceLock<MongoServer> = OnceLock::new();
static MONGO_START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl MongoServer {
    /// Starts the shared server on first use.
    pub async fn shared() -> &'static MongoServer {
        let _lock = MONGO_START.lock().await;
        if let Some(m) = MONGO.get() {
            return m;
        }
        let port = free_port();
        let bin = secantusd_path();
        let log = test_output_dir().join(format!("secantusd-{port}.log"));
        let child = ChildGuard::spawn(
            &bin,
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
                ":memory:",
            ],
            &[],
            log,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (make test installs it): {e}",
                bin.display()
            )
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait_for_tcp(addr, Duration::from_secs(30)).await,
            "MongoDB-wire server did not start: {}",
            child.log()
        );
        let _ = MONGO.set(MongoServer {
            port,
            _child: child,
        });
        MONGO.get().unwrap()
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

/// Starts a service binary on a free loopback port and waits until it is SERVING.
/// `binary` is `env!("CARGO_BIN_EXE_confab-...")` from the calling test.
pub async fn spawn_service(binary: &str, env: &[(&str, String)]) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let name = Path::new(binary)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log = test_output_dir().join(format!("{name}-{port}.log"));
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "CONFAB_DATA_DIR") {
        let dir = std::env::temp_dir().join(unique_name("confab-data"));
        env.push(("CONFAB_DATA_DIR", dir.to_string_lossy().into_owned()));
    }
    env.push(("LOG_FORMAT", "json".into()));
    let child = ChildGuard::spawn(binary, &["--addr", &addr.to_string()], &env, log)
        .await
        .expect("spawn service binary");
    assert!(
        wait_serving(addr, "", Duration::from_secs(60)).await,
        "{name} did not become SERVING: {}",
        child.log()
    );
    (child, addr)
}

/// Runs a binary to completion (for config-error tests): exit code and stderr.
pub fn run_to_exit(binary: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(binary);
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The contract every service binary keeps: it starts on a free port, reports SERVING,
/// and lists `service` (plus health) through reflection.
pub async fn assert_binary_serves(binary: &str, service: &str) {
    let (_child, addr) = spawn_service(binary, &[]).await;
    let services = reflection_services(addr).await;
    assert!(
        services.iter().any(|s| s == service),
        "reflection lists {services:?}, not {service}"
    );
    assert!(services.iter().any(|s| s == "grpc.health.v1.Health"));
}

/// A configuration error exits 64 with a message naming the variable.
pub fn assert_config_error_exits_64(binary: &str, variable: &str, value: &str) {
    let mut env = vec![(variable, value)];
    if variable != "CONFAB_ADDR" {
        env.push(("CONFAB_ADDR", "127.0.0.1:0"));
    }
    let (code, stderr) = run_to_exit(binary, &env);
    assert_eq!(code, Some(64), "{variable}={value}: stderr: {stderr}");
    assert!(
        stderr.contains(variable),
        "{variable}={value}: stderr: {stderr}"
    );
}

//! Names of every Prometheus metric Confab exports. Dashboards and alarms in `infra/`
//! may reference only these (checked by `infra/checks`).

/// Counter: finished RPCs. Labels: `service`, `method`, `code` (gRPC code name).
pub const RPC_REQUESTS_TOTAL: &str = "confab_rpc_requests_total";
/// Histogram (seconds): RPC latency (to the end of the response or stream). Labels: `service`, `method`.
pub const RPC_DURATION_SECONDS: &str = "confab_rpc_duration_seconds";
/// Gauge: server streams open now. Labels: `service`.
pub const OPEN_STREAMS: &str = "confab_open_streams";
/// Histogram (seconds): time from request to first token. Labels: `model`.
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "confab_time_to_first_token_seconds";
/// Counter: model tokens. Labels: `model`, `kind` (`prompt` | `completion`).
pub const MODEL_TOKENS_TOTAL: &str = "confab_model_tokens_total";
/// Counter: rate-limit decisions. Labels: `result` (`allowed` | `denied`), `limit`
/// (`none` | `requests_per_minute` | `concurrent_streams` | `daily_tokens`).
pub const RATELIMIT_DECISIONS_TOTAL: &str = "confab_ratelimit_decisions_total";
/// Counter: decisions made without Redis (backend unreachable). Labels: `policy` (`open` | `closed`).
pub const RATELIMIT_BACKEND_ERRORS_TOTAL: &str = "confab_ratelimit_backend_errors_total";
/// Counter: uploads finished. Labels: `kind` (pdf, docx, xlsx, csv, text, image), `result` (`ok` | `rejected`).
pub const FILE_UPLOADS_TOTAL: &str = "confab_file_uploads_total";
/// Histogram (seconds): extraction time. Labels: `kind`.
pub const FILE_EXTRACTION_SECONDS: &str = "confab_file_extraction_seconds";
/// Counter: plain HTTP requests at the gateway. Labels: `path`, `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "confab_http_requests_total";

/// Every name above, for checks.
pub const ALL: &[&str] = &[
    RPC_REQUESTS_TOTAL,
    RPC_DURATION_SECONDS,
    OPEN_STREAMS,
    TIME_TO_FIRST_TOKEN_SECONDS,
    MODEL_TOKENS_TOTAL,
    RATELIMIT_DECISIONS_TOTAL,
    RATELIMIT_BACKEND_ERRORS_TOTAL,
    FILE_UPLOADS_TOTAL,
    FILE_EXTRACTION_SECONDS,
    HTTP_REQUESTS_TOTAL,
];

//! The load generator: closed-loop HTTP/1.1 clients, each on its own keep-alive connection,
//! sending requests back to back; and the latency statistics every scenario reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use tokio::sync::Barrier;

/// Latencies of one measurement, sorted.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-quantile (0–1) by nearest rank, in milliseconds; 0 for no samples.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((p * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1].as_secs_f64() * 1e3
    }

    /// The median in milliseconds.
    pub fn p50(&self) -> f64 {
        self.quantile_ms(0.50)
    }

    /// The 99th percentile in milliseconds.
    pub fn p99(&self) -> f64 {
        self.quantile_ms(0.99)
    }

    /// The largest in milliseconds.
    pub fn max(&self) -> f64 {
        self.quantile_ms(1.0)
    }
}

/// What a closed-loop run measured.
pub struct LoadResult {
    /// Requests answered 200 within the window.
    pub ok: u64,
    /// Requests answered otherwise, or that failed.
    pub errors: u64,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
    /// The window's length as measured.
    pub elapsed: Duration,
    /// Latencies of the successful requests.
    pub latencies: Latencies,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `connections` clients each `GET url` back to back for `duration`, with `auth` as the
/// `Authorization` header when given. Every client first opens its connection with one request
/// that is not counted, then all start together, so the window holds no TCP handshakes.
pub async fn closed_loop(
    url: &str,
    auth: Option<HeaderValue>,
    connections: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let mut headers = HeaderMap::new();
    if let Some(auth) = auth {
        headers.insert(AUTHORIZATION, auth);
    }
    let barrier = Arc::new(Barrier::new(connections + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        // One client per task, limited to one idle connection: each task is one keep-alive
        // HTTP/1.1 connection.
        let client = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .default_headers(headers.clone())
            .build()
            .context("building an HTTP client")?;
        let (url, barrier) = (url.to_string(), Arc::clone(&barrier));
        tasks.spawn(async move {
            let warm = one(&client, &url).await;
            barrier.wait().await;
            // Every task reads the same deadline only after the barrier; the window is timed
            // by the caller, which passes the barrier with them.
            let deadline = Instant::now() + duration;
            let mut samples = Vec::with_capacity(4096);
            let (mut errors, mut first_error) = (0u64, warm.err());
            while Instant::now() < deadline {
                let sent = Instant::now();
                match one(&client, &url).await {
                    Ok(()) => samples.push(sent.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (samples, errors, first_error)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let (mut samples, mut errors, mut first_error) = (Vec::new(), 0, None);
    while let Some(done) = tasks.join_next().await {
        let (s, e, f) = done.context("a load task panicked")?;
        samples.extend(s);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    // The last request started before the deadline ends a little after it; that tail counts.
    let elapsed = started.elapsed();
    if samples.is_empty() {
        bail!(
            "no request to {url} succeeded: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(LoadResult {
        ok: samples.len() as u64,
        errors,
        first_error,
        elapsed,
        latencies: Latencies::new(samples),
    })
}

/// One `GET`, its body read to the end; an error unless it answered 200.
async fn one(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

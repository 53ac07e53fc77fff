//! Measures warm `GET /devices/{id}/login` (a QR code pending, so the answer comes from the
//! session without WhatsApp) and `GET /health` on the same run, over real HTTP with PostgreSQL:
//! requests per second with many connections, and the ratio of the two.
//!
//! `cargo run --release --features sandbox --example warm_login_throughput [connections] [seconds]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{Gateway, Options};

/// Requests per second to `url` from `connections` loops over `duration`.
async fn throughput(
    client: &reqwest::Client,
    url: &str,
    auth: Option<(&str, &str)>,
    connections: usize,
    duration: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, url, done) = (client.clone(), url.to_string(), Arc::clone(&done));
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        loops.spawn(async move {
            while Instant::now() < deadline {
                let mut request = client.get(&url);
                if let Some((user, pass)) = &auth {
                    request = request.basic_auth(user, Some(pass));
                }
                let response = request.send().await.expect("an answer");
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.expect("a body");
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    loops.join_all().await;
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let gateway = Gateway::start_with(Options::real_time()).await;
    let (_, credential) = gateway
        .store
        .create_tenant("bench")
        .await
        .expect("a tenant");
    let (user, pass) = (credential.username, credential.secret);
    let api = support::Api::new(&gateway.base, &user, &pass);
    api.create_device("bench").await;
    let first = api.get("/devices/bench/login").await;
    assert!(first.status.is_success(), "{}", first.body);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("a client");

    let login_url = format!("{}/devices/bench/login", gateway.base);
    let health_url = format!("{}/health", gateway.base);
    // Warm both paths and the connection pool first.
    throughput(
        &client,
        &health_url,
        None,
        connections,
        Duration::from_secs(1),
    )
    .await;
    let health = throughput(&client, &health_url, None, connections, duration).await;
    let login = throughput(
        &client,
        &login_url,
        Some((&user, &pass)),
        connections,
        duration,
    )
    .await;
    println!(
        "{connections} connections, {seconds} s each: GET /health {health:.0} req/s, \
         warm GET /devices/{{id}}/login {login:.0} req/s ({:.2} × /health)",
        login / health
    );
}

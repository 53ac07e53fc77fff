//! `wagate-sandbox`: a standalone WhatsApp server simulator, so that a gateway process can
//! restart while "WhatsApp" stays up.

#![deny(unsafe_code)]

use std::net::SocketAddr;

use clap::Parser;
use wagate_sandbox::{Sandbox, SandboxConfig};

/// A WhatsApp server simulator and simulated phone for wagate's tests and demos.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to serve the websocket (/ws/chat) and the control API on.
    #[arg(long, env = "WAGATE_SANDBOX_LISTEN", default_value = "127.0.0.1:3010")]
    listen: SocketAddr,
    /// QR refs handed to each new client.
    #[arg(long, env = "WAGATE_SANDBOX_QR_REFS", default_value_t = 6)]
    qr_refs: usize,
    /// How much faster than real time clients are asked to run their timers.
    #[arg(long, env = "WAGATE_SANDBOX_TIME_SCALE", default_value_t = 1)]
    time_scale: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {} is not a loopback address: the sandbox only serves this machine",
            args.listen
        );
    }
    let sandbox = Sandbox::start_with(SandboxConfig {
        listen: args.listen,
        qr_refs: args.qr_refs,
        time_scale: args.time_scale,
    })
    .await?;
    tracing::info!(
        ws = %sandbox.ws_url(),
        control = %sandbox.http_url(),
        "wagate-sandbox is serving"
    );
    // The control API prints nothing else; a machine reading stdout learns the address here.
    println!("{}", sandbox.ws_url());
    tokio::signal::ctrl_c().await?;
    sandbox.shutdown();
    Ok(())
}

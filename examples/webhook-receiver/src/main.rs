//! Serves `POST /webhook` for wagate and prints one line per event.
//!
//! `WAGATE_WEBHOOK_SECRET` is the endpoint's `whsec_` secret; `RECEIVER_LISTEN` the address to
//! listen on (default `127.0.0.1:8090`).

#![deny(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use poem::Server;
use poem::listener::TcpListener;
use wagate_webhook_receiver::{Receiver, app};

const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(secret) = std::env::var("WAGATE_WEBHOOK_SECRET") else {
        eprintln!(
            "error: WAGATE_WEBHOOK_SECRET is not set: set it to the whsec_ secret wagate returned \
             when the webhook was registered"
        );
        return ExitCode::FAILURE;
    };
    let receiver = match Receiver::new(secret.trim()) {
        Ok(receiver) => Arc::new(receiver),
        Err(err) => {
            eprintln!("error: WAGATE_WEBHOOK_SECRET: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = std::env::var("RECEIVER_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_owned());

    println!("listening on http://{addr}/webhook");
    if let Err(err) = Server::new(TcpListener::bind(addr.as_str()))
        .run(app(receiver))
        .await
    {
        eprintln!("error: could not serve on {addr}: {err}: set RECEIVER_LISTEN to a free address");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

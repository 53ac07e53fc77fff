//! A NATS server with JetStream for the tests: the system's `nats-server` on a free loopback
//! port with its own store directory; it can be stopped and started again on both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running (or stopped) nats-server; killed and its directory removed when dropped.
pub struct NatsServer {
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// A server on a free port.
    pub async fn start() -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("wagate-nats-{}", uuid::Uuid::new_v4()));
        let mut server = Self {
            url: format!("nats://{addr}"),
            addr,
            dir,
            child: None,
        };
        server.resume().await;
        server
    }

    /// Starts the server again on the same port and store (after [`NatsServer::stop`]).
    pub async fn resume(&mut self) {
        let binary = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("nats-server is installed (.ci/run installs it)");
        let child = Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let addr = self.addr;
        super::eventually(&format!("nats-server listening on {addr}"), || async move {
            tokio::net::TcpStream::connect(addr).await.map(drop)
        })
        .await;
    }

    /// Kills the server; its store stays for [`NatsServer::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

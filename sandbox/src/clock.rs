//! Sandbox time for clients.
//!
//! whatsapp-rust times its QR codes itself (60 s for the first, 20 s for each next), so no server
//! can shorten them. A client that runs on [`ScaledRuntime`] sees every one of its timers divided
//! by the sandbox's time scale: QR rotation, exhaustion, keepalive and back-off all run that much
//! faster, which lets tests and demos walk through a whole QR series in seconds.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use wacore::runtime::{AbortHandle, Runtime};

/// A tokio runtime for whatsapp-rust whose sleeps last `1/scale` of what the client asks for.
#[derive(Debug, Clone, Copy)]
pub struct ScaledRuntime {
    scale: u32,
}

impl ScaledRuntime {
    /// A runtime whose timers run `scale` times faster; 0 is taken as 1.
    pub fn new(scale: u32) -> Self {
        Self {
            scale: scale.max(1),
        }
    }

    /// How much faster than real time the client's timers run.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// A client's duration as it passes on this runtime.
    pub fn scaled(&self, duration: Duration) -> Duration {
        duration / self.scale
    }
}

#[async_trait::async_trait]
impl Runtime for ScaledRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) -> AbortHandle {
        let task = tokio::spawn(future);
        AbortHandle::new(move || task.abort())
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(self.scaled(duration)))
    }

    fn spawn_blocking(
        &self,
        f: Box<dyn FnOnce() + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(f).await;
        })
    }

    fn yield_now(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        // Tasks run on a multi-threaded runtime; nothing needs a cooperative yield.
        None
    }
}

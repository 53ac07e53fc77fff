//! An independent client as referee: Baileys, the Node WhatsApp Web library, links against the
//! standalone binary through `sandbox/interop/baileys/referee.mjs`, which says what it saw.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::standalone::Standalone;
use crate::tools::skip_for;

/// Longer than the referee's own limits (four scenarios of at most 45 s each).
const REFEREE_LIMIT: Duration = Duration::from_secs(300);

#[test]
fn baileys_links_by_qr_and_code_reconnects_and_sees_an_unlink_as_logged_out() {
    let referee = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/baileys");
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("install Node 20 or newer (`node`)");
    }
    if !referee.join("node_modules/baileys").is_dir() {
        missing.push("run `cd sandbox/interop/baileys && npm ci`");
    }
    if skip_for(&missing, "run the Baileys referee against the sandbox") {
        return;
    }

    // Baileys keeps WhatsApp's own timers, so the sandbox runs in real time.
    let sandbox = Standalone::start_with_scale(1);
    let mut child = Command::new("node")
        .arg("referee.mjs")
        .arg(&sandbox.base)
        .current_dir(&referee)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));

    let deadline = Instant::now() + REFEREE_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the referee can be waited for") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    println!("referee stdout:\n{stdout}");
    if !stderr.is_empty() {
        println!("referee stderr:\n{stderr}");
    }
    let Some(status) = status else {
        panic!("the referee did not finish within {REFEREE_LIMIT:?} (its output is above)");
    };
    assert!(
        status.success(),
        "the Baileys referee failed ({status}); its output is above"
    );
}

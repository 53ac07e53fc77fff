//! One client socket: the Noise handshake, then a reader that dispatches stanzas and a writer
//! that seals them. Registration (QR refs, pairing codes) and login are decided here from the
//! `ClientPayload`; routine requests are answered by [`crate::iq`].
//!
//! This module creates each connection's [`Conn`] handle and feeds it the client's answers; the
//! handle itself lives in [`crate::conn`], so the registry and the phone can use it without
//! depending on the socket code.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{Message, WebSocketStream};
use tokio::task::JoinHandle;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::conn::{Conn, Outbound, Registration, device_jid, lock};
use crate::noise::{Established, Response};
use crate::shared::Shared;
use crate::stanza::{self, SERVER};
use crate::wire::{FrameReader, SealedDirection, frame};
use crate::{bootstrap, encrypt, history, incidents, iq, pair_code, passkey};

/// How long a client may take over each handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves one websocket until either side closes it or an outage drops it.
pub(crate) async fn serve(shared: Arc<Shared>, socket: WebSocketStream) {
    // Taken before the handshake: its time is part of how long a reconnecting device is away.
    let opened_at_ms = history::now_ms();
    let (mut sink, mut stream) = socket.split();
    let mut outage = shared.outage.subscribe();
    let mut reader = FrameReader::new();

    let established = tokio::select! {
        r = handshake(&shared, &mut sink, &mut stream, &mut reader) => r,
        _ = outage.wait_for(|down| *down) => None,
    };
    let Some(established) = established else {
        return;
    };
    let Established {
        write,
        read,
        client_static,
        payload,
    } = established;
    let mut read = SealedDirection::new(read);

    let registration = registration_of(&payload);
    let login_jid = login_jid_of(&payload);
    let id = lock(&shared.registry).allocate_connection(opened_at_ms);
    let (conn, mut out_rx) = Conn::new(id, client_static, registration, login_jid);
    let conn = Arc::new(conn);
    lock(&shared.registry)
        .connections
        .insert(id, Arc::clone(&conn));

    // The writer owns the send direction; it ends when every sender is gone or on Close.
    let mut write = SealedDirection::new(write);
    let writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            match out {
                Outbound::Node(node) => {
                    let Ok(bytes) = write.seal(&node) else { break };
                    if sink.send(Message::Binary(bytes)).await.is_err() {
                        break;
                    }
                }
                Outbound::Close => break,
            }
        }
        let _ = sink.close().await;
    });
    // No await since the connection was numbered, so this task cannot have been dropped before
    // the guard exists; from here on the guard closes the record however the task ends.
    let live = Live {
        shared: Arc::clone(&shared),
        id,
        writer,
    };

    if incidents::refuse_if_outdated(&shared, &conn).await {
        // Closed; the loop below ends when the writer has sent the failure.
    } else if conn.registration.is_some() {
        if !incidents::refuse_if_rate_limited(&shared, &conn).await {
            start_registration(&shared, &conn).await;
        }
    } else {
        start_login(&shared, &conn).await;
    }

    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = outage.wait_for(|down| *down) => break,
        };
        let data = match message {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        if reader.feed(&data).is_err() {
            break;
        }
        let mut broken = false;
        while let Some(f) = reader.next_frame() {
            match read.open(f) {
                Ok(node) => on_stanza(&shared, &conn, node).await,
                Err(e) => {
                    tracing::warn!("connection {id}: {e}");
                    broken = true;
                    break;
                }
            }
        }
        if broken || live.writer.is_finished() {
            break;
        }
    }
}

/// An established connection's hold on the registry, released when its task ends: by either
/// side closing, an outage, a shutdown, or the task being dropped or panicking.
struct Live {
    shared: Arc<Shared>,
    id: u64,
    writer: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Forgotten before the socket closes, so that a login racing the close cannot count it
        // as a live connection it replaced.
        lock(&self.shared.registry).forget_connection(self.id);
        self.writer.abort();
    }
}

async fn handshake(
    shared: &Shared,
    sink: &mut futures_util::stream::SplitSink<WebSocketStream, Message>,
    stream: &mut futures_util::stream::SplitStream<WebSocketStream>,
    reader: &mut FrameReader,
) -> Option<Established> {
    let hello = next_frame(stream, reader).await?;
    match shared.identity.respond(&hello) {
        Ok(Response::Done {
            server_hello,
            session,
        }) => {
            sink.send(Message::Binary(frame(&server_hello)))
                .await
                .ok()?;
            Some(session)
        }
        Ok(Response::AwaitFinish {
            server_hello,
            pending,
        }) => {
            sink.send(Message::Binary(frame(&server_hello)))
                .await
                .ok()?;
            let finish = next_frame(stream, reader).await?;
            pending
                .finish(&finish)
                .map_err(|e| tracing::warn!("handshake: {e}"))
                .ok()
        }
        Err(e) => {
            tracing::warn!("handshake: {e}");
            None
        }
    }
}

async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<WebSocketStream>,
    reader: &mut FrameReader,
) -> Option<Vec<u8>> {
    loop {
        if let Some(f) = reader.next_frame() {
            return Some(f);
        }
        let message = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Binary(data) = message {
            reader.feed(&data).ok()?;
        }
    }
}

fn registration_of(payload: &wa::ClientPayload) -> Option<Registration> {
    let data = payload.device_pairing_data.as_option()?;
    let identity: [u8; 32] = data.e_ident.as_deref()?.try_into().ok()?;
    Some(Registration { identity })
}

fn login_jid_of(payload: &wa::ClientPayload) -> Option<String> {
    if payload.device_pairing_data.as_option().is_some() {
        return None;
    }
    Some(device_jid(
        &payload.username?.to_string(),
        payload.device.unwrap_or(0),
    ))
}

/// A new device: hand it QR refs (it may also ask for a pairing code).
async fn start_registration(shared: &Shared, conn: &Conn) {
    let refs: Vec<String> = (0..shared.config.qr_refs)
        .map(|_| {
            let random: [u8; 24] = rand::random();
            format!(
                "2@{}",
                base64::engine::general_purpose::STANDARD.encode(random)
            )
        })
        .collect();
    {
        let mut registry = lock(&shared.registry);
        for r in &refs {
            registry.refs.insert(r.clone(), conn.id);
        }
    }
    // Ref contents must be bytes: the client drops refs that decode as strings.
    let children = refs
        .iter()
        .map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build());
    let pair_device = NodeBuilder::new("pair-device").children(children).build();
    let _ = conn
        .send(stanza::iq_set(&conn.next_id(), "md", pair_device))
        .await;
}

/// A registered device: log it in if the sandbox linked it and the key matches.
async fn start_login(shared: &Arc<Shared>, conn: &Conn) {
    let Some(jid) = conn.jid.as_deref() else {
        conn.close_with(stanza::failure(401)).await;
        return;
    };
    // Decide under the lock, act after it: the guard must not live across an await.
    let accepted = {
        let mut registry = lock(&shared.registry);
        match registry.companions.get_mut(jid) {
            Some(companion) if companion.noise_static == conn.client_static => {
                let previous = companion.connection.replace(conn.id);
                let lid = companion.lid.clone();
                let replaced = previous.and_then(|old| registry.connections.get(&old).cloned());
                registry.history.logged_in(conn.id, jid);
                if let Some(old) = &replaced {
                    registry.history.replaced(old.id);
                }
                Some((lid, replaced))
            }
            _ => None,
        }
    };
    let Some((lid, replaced)) = accepted else {
        conn.close_with(stanza::failure(401)).await;
        return;
    };
    if let Some(old) = replaced {
        let conflict = NodeBuilder::new("stream:error")
            .children([NodeBuilder::new("conflict")
                .attr("type", "replaced")
                .build()])
            .build();
        old.close_with(conflict).await;
    }
    let success = NodeBuilder::new("success")
        .attr("t", stanza::now_secs().to_string())
        .attr("lid", lid)
        .attr("props", "1")
        // The versions of the server-side flags: a client refetches them when they change.
        .attr("abprops", "1")
        .attr("group_abprops", "1")
        .attr("location", "sandbox")
        .build();
    let _ = conn.send(success).await;
    // A companion that logged in before the phone got its key share out gets it now.
    bootstrap::advance(shared, conn).await;
}

async fn on_stanza(shared: &Arc<Shared>, conn: &Arc<Conn>, node: Node) {
    match node.tag.as_ref() {
        "iq" => {}
        // The server acknowledges every receipt and message a client sends, as WhatsApp does;
        // a receipt may be the companion's for the phone's key share.
        "receipt" | "message" => {
            if let (Some(jid), Some(id), "receipt") =
                (conn.jid.as_deref(), stanza::id(&node), node.tag.as_ref())
            {
                let kind = stanza::attr(&node, "type").unwrap_or_default();
                bootstrap::on_receipt(shared, jid, &id, &kind);
            }
            let _ = conn.send(stanza::ack(&node)).await;
            return;
        }
        // ib, presence and the client's own acks need no answer from this server.
        _ => return,
    }
    let kind = stanza::attr(&node, "type").unwrap_or_default();
    if kind == "result" || kind == "error" {
        conn.answer_request(node);
        return;
    }
    let xmlns = stanza::attr(&node, "xmlns").unwrap_or_default();
    if xmlns == "md" {
        on_md_request(shared, conn, node).await;
        return;
    }
    if xmlns == "encrypt" {
        encrypt::answer(shared, conn, &node).await;
        return;
    }
    let lid_of = |number: &str| {
        let registry = lock(&shared.registry);
        let phone = registry.phones.get(number)?;
        Some(format!("{}@lid", phone.lid_user))
    };
    let answer = if xmlns == "w:sync:app:state" && incidents::take_app_state_refusal(shared, conn) {
        iq::app_state_refusing(&node, Some(incidents::REFUSED_COLLECTION))
    } else {
        iq::answer(&node, &lid_of)
    };
    let went_active = xmlns == "passive" && stanza::child(&node, "active").is_some();
    let _ = conn.send(answer).await;
    if went_active && conn.jid.is_some() {
        // The client waits for the end of offline delivery after going active; nothing is
        // queued for it here, so the end comes at once. Then the phone's bootstrap may follow:
        // a client counts a history sync only once offline delivery has ended.
        let offline = NodeBuilder::new("ib")
            .attr("from", SERVER)
            .children([NodeBuilder::new("offline").attr("count", "0").build()])
            .build();
        let _ = conn.send(offline).await;
        conn.set_active();
        bootstrap::advance(shared, conn).await;
    }
}

/// Multi-device management requests: pairing codes, passkey links and a companion removing
/// itself.
async fn on_md_request(shared: &Arc<Shared>, conn: &Arc<Conn>, node: Node) {
    if let Some(reg) = stanza::child(&node, "link_code_companion_reg") {
        match stanza::attr(reg, "stage").as_deref() {
            Some("companion_hello") => {
                let answer = pair_code::companion_hello(shared, conn, &node, reg);
                let _ = conn.send(answer).await;
            }
            Some("companion_finish") => {
                let waiter = stanza::child_bytes(reg, "link_code_pairing_ref")
                    .and_then(|r| conn.take_companion_finish_waiter(&r));
                match waiter {
                    Some(w) => {
                        let _ = w.send(node);
                    }
                    None => {
                        let answer = stanza::iq_error(&node, 400, "bad-request");
                        let _ = conn.send(answer).await;
                    }
                }
            }
            _ => {
                let _ = conn.send(stanza::iq_error(&node, 400, "bad-request")).await;
            }
        }
        return;
    }
    if let Some(remove) = stanza::child(&node, "remove-companion-device") {
        let target = stanza::attr(remove, "jid");
        let removed = match (&conn.jid, target) {
            (Some(own), Some(target)) if own == &target => {
                lock(&shared.registry).companions.remove(own).is_some()
            }
            _ => false,
        };
        let answer = if removed {
            stanza::iq_result(&node, Vec::new())
        } else {
            stanza::iq_error(&node, 403, "forbidden")
        };
        let _ = conn.send(answer).await;
        return;
    }
    // A passkey link's steps belong to the phone running that handshake.
    let Some(node) = passkey::divert(conn, node).await else {
        return;
    };
    let _ = conn
        .send(stanza::iq_error(&node, 501, "feature-not-implemented"))
        .await;
}

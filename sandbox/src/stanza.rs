//! Builders for the stanzas the server sends, and small readers for the ones it receives.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Node, NodeContent};

/// The server's own address, as every server stanza names it.
pub const SERVER: &str = "s.whatsapp.net";

/// The `id` attribute of a stanza, if it has one.
pub fn id(node: &Node) -> Option<String> {
    attr(node, "id")
}

/// Any attribute rendered as a string (JID attributes included).
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// The first child with `tag`.
pub fn child<'a>(node: &'a Node, tag: &str) -> Option<&'a Node> {
    node.children()?.iter().find(|c| c.tag == tag)
}

/// The byte (or string) content of a node.
pub fn bytes(node: &Node) -> Option<Vec<u8>> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b.clone()),
        Some(NodeContent::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// The byte content of the child `tag`.
pub fn child_bytes(node: &Node, tag: &str) -> Option<Vec<u8>> {
    child(node, tag).and_then(bytes)
}

/// `<iq type="result">` answering `request`, with optional children.
pub fn iq_result(request: &Node, children: Vec<Node>) -> Node {
    let mut b = NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "result")
        .attr("id", id(request).unwrap_or_default());
    if !children.is_empty() {
        b = b.children(children);
    }
    b.build()
}

/// `<iq type="error">` answering `request`: the shape WhatsApp uses for refused requests.
pub fn iq_error(request: &Node, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "error")
        .attr("id", id(request).unwrap_or_default())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text)
            .build()])
        .build()
}

/// `<ack class=.. id=..>` for a stanza a client sent: the server has taken it.
pub fn ack(received: &Node) -> Node {
    let mut b = NodeBuilder::new("ack")
        .attr("class", received.tag.to_string())
        .attr("id", id(received).unwrap_or_default())
        .attr("from", SERVER);
    if let Some(kind) = attr(received, "type") {
        b = b.attr("type", kind);
    }
    b.build()
}

/// A server-initiated `<iq type="set" xmlns=..>` with one child.
pub fn iq_set(id: &str, xmlns: &'static str, content: Node) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "set")
        .attr("id", id)
        .attr("xmlns", xmlns)
        .children([content])
        .build()
}

/// `<stream:error code=..>`: 515 asks the client to reconnect, 516/401 log it out.
pub fn stream_error(code: u16) -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", code.to_string())
        .build()
}

/// `<stream:error code="401"><conflict type="device_removed"/></stream:error>`: the phone
/// unlinked the companion while it was online. The code is what clients that read it first
/// (Baileys) take as logged out; clients that read the conflict first see the same.
pub fn device_removed() -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", "401")
        .children([NodeBuilder::new("conflict")
            .attr("type", "device_removed")
            .build()])
        .build()
}

/// `<failure reason=..>`: refuses a login; 401 means the device is not (or no longer) linked.
pub fn failure(reason: u16) -> Node {
    NodeBuilder::new("failure")
        .attr("reason", reason.to_string())
        .attr("location", "sandbox")
        .build()
}

/// A fresh message id in WhatsApp's form: `3EB0` and 16 hex digits.
pub fn message_id() -> String {
    format!("3EB0{:016X}", rand::random::<u64>())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
}

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

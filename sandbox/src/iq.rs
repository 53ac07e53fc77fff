//! Answers to the routine requests a logged-in client makes, good enough that it reaches
//! `Connected` and then stays connected and quiet.
//!
//! The client matches answers by id only and stalls on silence (a pending request also holds
//! back its keepalive pings), so every request gets an answer: an unknown one an error.

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::stanza::{self, SERVER};

/// The answer to one `<iq type="get|set">` from a client; `lid_of` names the LID of a phone
/// number the server knows, for LID lookups.
pub fn answer(request: &Node, lid_of: &dyn Fn(&str) -> Option<String>) -> Node {
    let xmlns = stanza::attr(request, "xmlns").unwrap_or_default();
    let first_child = request
        .children()
        .and_then(|c| c.first())
        .map(|c| c.tag.to_string())
        .unwrap_or_default();
    match (xmlns.as_str(), first_child.as_str()) {
        // Keepalive; `t` lets the client measure clock skew.
        ("w:p", _) | ("urn:xmpp:ping", _) => NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "result")
            .attr("id", stanza::id(request).unwrap_or_default())
            .attr("t", stanza::now_secs().to_string())
            .build(),
        // Going active, dirty-bit cleaning, blocklist. Key requests (`encrypt`) are answered
        // from the keys the server holds, in `encrypt`.
        ("passive", _) | ("urn:xmpp:whatsapp:dirty", _) | ("blocklist", _) => {
            stanza::iq_result(request, Vec::new())
        }
        ("abt", _) => stanza::iq_result(request, vec![ab_props(request)]),
        ("privacy", _) => stanza::iq_result(request, vec![NodeBuilder::new("privacy").build()]),
        ("usync", _) if asks_only_for_lids(request) => lid_lookup(request, lid_of),
        // Device lists: an empty list means "unchanged".
        ("usync", _) => stanza::iq_result(
            request,
            vec![
                NodeBuilder::new("usync")
                    .children([NodeBuilder::new("list").build()])
                    .build(),
            ],
        ),
        ("w:sync:app:state", _) => app_state(request),
        _ => stanza::iq_error(request, 501, "feature-not-implemented"),
    }
}

/// The version of the sandbox's A/B configuration; a client that already holds it is told so.
const AB_PROPS_HASH: &str = "5a4e4c";

/// `<props>` as WhatsApp answers an A/B config query: its version (`hash`), how often to ask
/// again, and the entries — none when the client's `hash` is current. The sandbox's entries
/// change nothing: one config no client knows (it names the server as the sandbox) and one
/// sampling entry that turns a telemetry event off.
fn ab_props(request: &Node) -> Node {
    let current = stanza::child(request, "props")
        .and_then(|p| stanza::attr(p, "hash"))
        .is_some_and(|h| h == AB_PROPS_HASH);
    let props = NodeBuilder::new("props")
        .attr("protocol", "1")
        .attr("ab_key", "sandbox")
        .attr("hash", AB_PROPS_HASH)
        .attr("refresh", "86400")
        .attr("refresh_id", "1");
    if current {
        return props.build();
    }
    props
        .children([
            NodeBuilder::new("prop")
                .attr("config_code", "99999")
                .attr("config_value", "wagate-sandbox")
                .build(),
            NodeBuilder::new("prop")
                .attr("event_code", "5138")
                .attr("sampling_weight", "-1")
                .build(),
        ])
        .build()
}

/// Whether a usync query asks for LIDs and nothing else (a client that learns its own account's
/// LID mapping from a message asks this way).
fn asks_only_for_lids(request: &Node) -> bool {
    let protocols: Vec<String> = stanza::child(request, "usync")
        .and_then(|u| stanza::child(u, "query"))
        .and_then(|q| q.children())
        .unwrap_or_default()
        .iter()
        .map(|p| p.tag.to_string())
        .collect();
    protocols == ["lid"]
}

/// `<user jid><lid val/></user>` for every listed user whose LID the server knows.
fn lid_lookup(request: &Node, lid_of: &dyn Fn(&str) -> Option<String>) -> Node {
    let users = stanza::child(request, "usync")
        .and_then(|u| stanza::child(u, "list"))
        .and_then(|l| l.children())
        .unwrap_or_default()
        .iter()
        .filter_map(|user| {
            let jid = stanza::attr(user, "jid")?;
            let number = jid.split(['@', ':']).next()?;
            let lid = lid_of(number)?;
            Some(
                NodeBuilder::new("user")
                    .attr("jid", jid.as_str())
                    .children([NodeBuilder::new("lid").attr("val", lid).build()])
                    .build(),
            )
        })
        .collect::<Vec<_>>();
    stanza::iq_result(
        request,
        vec![
            NodeBuilder::new("usync")
                .children([NodeBuilder::new("list").children(users).build()])
                .build(),
        ],
    )
}

/// App-state sync: every requested collection comes back empty, which the client counts as
/// synced. An error here would hold back `Connected`, so every name asked for is answered.
fn app_state(request: &Node) -> Node {
    app_state_refusing(request, None)
}

/// App-state sync as [`app_state`], except that the collection `refused` (if asked for) is
/// refused with a 400: final for this connection, so the client connects without it.
pub fn app_state_refusing(request: &Node, refused: Option<&str>) -> Node {
    let collections: Vec<Node> = stanza::child(request, "sync")
        .and_then(|s| s.children())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.tag == "collection")
        .filter_map(|c| stanza::attr(c, "name"))
        .map(|name| {
            if refused == Some(name.as_str()) {
                NodeBuilder::new("collection")
                    .attr("name", name)
                    .attr("type", "error")
                    .children([NodeBuilder::new("error")
                        .attr("code", "400")
                        .attr("text", "bad-request")
                        .build()])
                    .build()
            } else {
                NodeBuilder::new("collection").attr("name", name).build()
            }
        })
        .collect();
    stanza::iq_result(
        request,
        vec![NodeBuilder::new("sync").children(collections).build()],
    )
}

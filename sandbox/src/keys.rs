//! The key bundles companions upload, kept the way WhatsApp's server keeps them: the registration
//! id, identity and signed prekey of the latest upload, and the one-time prekeys not yet handed
//! out. The prekey count, the digest and the bundles other devices fetch are all read from here,
//! so a fresh companion is told it holds 0 prekeys until it uploads some.

use sha1::Digest as _;
use thiserror::Error;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::KeyPair;

use crate::stanza;

/// An upload the server cannot use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UploadError {
    /// A required part is missing or has the wrong size.
    #[error("prekey upload has no valid <{0}>")]
    Missing(&'static str),
}

/// A signed prekey as uploaded: its id, public key and the identity key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPrekey {
    /// The key's id (3 bytes on the wire).
    pub id: u32,
    /// The Curve25519 public key, 32 bytes.
    pub public: [u8; 32],
    /// XEdDSA signature by the identity key over the 33-byte serialized public key.
    pub signature: Vec<u8>,
}

impl SignedPrekey {
    /// A fresh signed prekey `id`, signed by `identity` as Signal signs them: over the public key
    /// serialized with its type byte.
    pub fn generate(identity: &KeyPair, id: u32) -> Self {
        let pair = KeyPair::generate(&mut rand::rng());
        let signature = identity
            .private_key
            .calculate_signature(&pair.public_key.serialize(), &mut rand::rng())
            .map(|s| s.to_vec())
            .unwrap_or_default();
        Self {
            id,
            public: key32(pair.public_key.public_key_bytes()).unwrap_or_default(),
            signature,
        }
    }

    /// Reads the `<skey>` of an upload or a rotation.
    pub fn parse(skey: &Node) -> Result<Self, UploadError> {
        Ok(Self {
            id: stanza::child_bytes(skey, "id")
                .and_then(|b| id24(&b))
                .ok_or(UploadError::Missing("skey/id"))?,
            public: stanza::child_bytes(skey, "value")
                .and_then(|b| key32(&b))
                .ok_or(UploadError::Missing("skey/value"))?,
            signature: stanza::child_bytes(skey, "signature")
                .filter(|s| s.len() == 64)
                .ok_or(UploadError::Missing("skey/signature"))?,
        })
    }
}

/// What one device has uploaded, and what of it the server still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBundle {
    /// The device's Signal registration id.
    pub registration_id: u32,
    /// The device's identity public key, 32 bytes.
    pub identity: [u8; 32],
    /// The signed prekey of the latest upload.
    pub signed_prekey: SignedPrekey,
    /// One-time prekeys (id, public key) not yet handed out, oldest first.
    pub prekeys: Vec<(u32, [u8; 32])>,
}

/// A bundle as the server hands it to a device that wants a session: one one-time prekey at most,
/// which nobody else will get.
#[derive(Debug, Clone)]
pub struct FetchedBundle {
    /// The device's registration id.
    pub registration_id: u32,
    /// Its identity public key.
    pub identity: [u8; 32],
    /// Its signed prekey.
    pub signed_prekey: SignedPrekey,
    /// A one-time prekey, while any is left.
    pub prekey: Option<(u32, [u8; 32])>,
}

impl KeyBundle {
    /// Reads an `<iq xmlns="encrypt" type="set">` upload.
    pub fn parse_upload(iq: &Node) -> Result<Self, UploadError> {
        let registration = stanza::child_bytes(iq, "registration")
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .ok_or(UploadError::Missing("registration"))?;
        let identity = stanza::child_bytes(iq, "identity")
            .and_then(|b| key32(&b))
            .ok_or(UploadError::Missing("identity"))?;
        let skey = stanza::child(iq, "skey").ok_or(UploadError::Missing("skey"))?;
        let signed_prekey = SignedPrekey::parse(skey)?;
        let mut prekeys = Vec::new();
        for key in stanza::child(iq, "list")
            .and_then(|l| l.children())
            .unwrap_or_default()
        {
            let id = stanza::child_bytes(key, "id").and_then(|b| id24(&b));
            let public = stanza::child_bytes(key, "value").and_then(|b| key32(&b));
            match (id, public) {
                (Some(id), Some(public)) => prekeys.push((id, public)),
                _ => return Err(UploadError::Missing("list/key")),
            }
        }
        Ok(Self {
            registration_id: u32::from_be_bytes(registration),
            identity,
            signed_prekey,
            prekeys,
        })
    }

    /// Takes a later upload: its identity and signed prekey replace these, its one-time prekeys
    /// join those still held (an id uploaded again replaces the old key).
    pub fn merge(&mut self, upload: KeyBundle) {
        self.registration_id = upload.registration_id;
        self.identity = upload.identity;
        self.signed_prekey = upload.signed_prekey;
        for (id, public) in upload.prekeys {
            self.prekeys.retain(|(held, _)| *held != id);
            self.prekeys.push((id, public));
        }
    }

    /// Hands the bundle out for one new session, using up the oldest one-time prekey.
    pub fn fetch(&mut self) -> FetchedBundle {
        let prekey = (!self.prekeys.is_empty()).then(|| self.prekeys.remove(0));
        FetchedBundle {
            registration_id: self.registration_id,
            identity: self.identity,
            signed_prekey: self.signed_prekey.clone(),
            prekey,
        }
    }

    /// The `<digest>` the server answers a digest query with: the bundle it holds and a SHA-1
    /// over identity, signed prekey, signature and every held prekey in the order listed.
    pub fn digest(&self) -> Node {
        let mut hash = sha1::Sha1::new();
        hash.update(self.identity);
        hash.update(self.signed_prekey.public);
        hash.update(&self.signed_prekey.signature);
        for (_, public) in &self.prekeys {
            hash.update(public);
        }
        let ids = self
            .prekeys
            .iter()
            .map(|(id, _)| NodeBuilder::new("id").bytes(id24_bytes(*id)).build());
        let mut children =
            identity_nodes(self.registration_id, &self.identity, &self.signed_prekey);
        children.push(NodeBuilder::new("list").children(ids).build());
        children.push(
            NodeBuilder::new("hash")
                .bytes(hash.finalize().to_vec())
                .build(),
        );
        NodeBuilder::new("digest").children(children).build()
    }
}

impl FetchedBundle {
    /// The `<user>` entry of a prekey fetch answer for `jid`; a companion's carries its signed
    /// device identity, as WhatsApp's do.
    pub fn user_node(&self, jid: &str, device_identity: Option<&[u8]>) -> Node {
        let mut children =
            identity_nodes(self.registration_id, &self.identity, &self.signed_prekey);
        if let Some((id, public)) = self.prekey {
            children.push(
                NodeBuilder::new("key")
                    .children([
                        NodeBuilder::new("id").bytes(id24_bytes(id)).build(),
                        NodeBuilder::new("value").bytes(public.to_vec()).build(),
                    ])
                    .build(),
            );
        }
        if let Some(identity) = device_identity {
            children.push(
                NodeBuilder::new("device-identity")
                    .bytes(identity.to_vec())
                    .build(),
            );
        }
        NodeBuilder::new("user")
            .attr("jid", jid)
            .children(children)
            .build()
    }
}

/// The key type byte WhatsApp sends next to every key: Curve25519.
const KEY_TYPE_CURVE25519: u8 = 5;

/// The children every bundle answer starts with: registration id, key type, identity key and
/// signed prekey.
fn identity_nodes(registration_id: u32, identity: &[u8; 32], skey: &SignedPrekey) -> Vec<Node> {
    vec![
        NodeBuilder::new("registration")
            .bytes(registration_id.to_be_bytes().to_vec())
            .build(),
        NodeBuilder::new("type")
            .bytes(vec![KEY_TYPE_CURVE25519])
            .build(),
        NodeBuilder::new("identity")
            .bytes(identity.to_vec())
            .build(),
        signed_prekey_node(skey),
    ]
}

fn signed_prekey_node(key: &SignedPrekey) -> Node {
    NodeBuilder::new("skey")
        .children([
            NodeBuilder::new("id").bytes(id24_bytes(key.id)).build(),
            NodeBuilder::new("value").bytes(key.public.to_vec()).build(),
            NodeBuilder::new("signature")
                .bytes(key.signature.clone())
                .build(),
        ])
        .build()
}

/// A raw 32-byte key; a 33-byte one with the type prefix is accepted too.
fn key32(bytes: &[u8]) -> Option<[u8; 32]> {
    let raw = match bytes {
        [KEY_TYPE_CURVE25519, rest @ ..] if rest.len() == 32 => rest,
        _ => bytes,
    };
    raw.try_into().ok()
}

/// A key id, 3 bytes big-endian on the wire.
fn id24(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [a, b, c] => Some(u32::from_be_bytes([0, *a, *b, *c])),
        _ => None,
    }
}

fn id24_bytes(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(prekey_ids: &[u32]) -> Node {
        let keys = prekey_ids.iter().map(|id| {
            NodeBuilder::new("key")
                .children([
                    NodeBuilder::new("id").bytes(id24_bytes(*id)).build(),
                    NodeBuilder::new("value").bytes(vec![*id as u8; 32]).build(),
                ])
                .build()
        });
        NodeBuilder::new("iq")
            .children([
                NodeBuilder::new("registration")
                    .bytes(7u32.to_be_bytes().to_vec())
                    .build(),
                NodeBuilder::new("type").bytes(vec![5]).build(),
                NodeBuilder::new("identity").bytes(vec![9; 32]).build(),
                NodeBuilder::new("list").children(keys).build(),
                signed_prekey_node(&SignedPrekey {
                    id: 1,
                    public: [3; 32],
                    signature: vec![4; 64],
                }),
            ])
            .build()
    }

    #[test]
    fn an_upload_is_read_whole() {
        let bundle = KeyBundle::parse_upload(&upload(&[1, 2, 70_000])).expect("valid");
        assert_eq!(bundle.registration_id, 7);
        assert_eq!(bundle.identity, [9; 32]);
        assert_eq!(bundle.signed_prekey.id, 1);
        let ids: Vec<u32> = bundle.prekeys.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 70_000]);
    }

    #[test]
    fn an_upload_without_a_signed_prekey_is_refused() {
        let mut iq = upload(&[1]);
        if let Some(wacore_binary::NodeContent::Nodes(children)) = &mut iq.content {
            children.retain(|c| c.tag != "skey");
        }
        assert_eq!(
            KeyBundle::parse_upload(&iq),
            Err(UploadError::Missing("skey"))
        );
    }

    #[test]
    fn each_one_time_prekey_is_handed_out_once() {
        let mut bundle = KeyBundle::parse_upload(&upload(&[1, 2])).expect("valid");
        assert_eq!(bundle.fetch().prekey.map(|(id, _)| id), Some(1));
        assert_eq!(bundle.fetch().prekey.map(|(id, _)| id), Some(2));
        assert_eq!(
            bundle.fetch().prekey,
            None,
            "the signed prekey alone is left"
        );
        bundle.merge(KeyBundle::parse_upload(&upload(&[3])).expect("valid"));
        assert_eq!(bundle.prekeys.len(), 1);
    }

    #[test]
    fn the_digest_hashes_what_the_server_holds() {
        let bundle = KeyBundle::parse_upload(&upload(&[1, 2])).expect("valid");
        let digest = bundle.digest();
        let mut expected = sha1::Sha1::new();
        expected.update([9; 32]);
        expected.update([3; 32]);
        expected.update([4; 64]);
        expected.update([1; 32]);
        expected.update([2; 32]);
        assert_eq!(
            stanza::child_bytes(&digest, "hash"),
            Some(expected.finalize().to_vec())
        );
        let listed = stanza::child(&digest, "list")
            .and_then(|l| l.children())
            .map(|c| c.len());
        assert_eq!(listed, Some(2));
    }
}

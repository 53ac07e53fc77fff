//! The phone's end of a Signal session with one of its companions: built from the bundle the
//! companion uploaded (X3DH), then used to encrypt what the phone sends it, as a phone does.
//!
//! The phone only sends on these sessions: nothing a companion sends to the phone is read, so
//! the store holds just the phone's identity, the companion's identity and the one session.

use thiserror::Error;
use wacore_libsignal::protocol::{
    self as signal, CiphertextMessageType, Direction, IdentityChange, IdentityKey, IdentityKeyPair,
    KeyPair, PreKeyBundle, ProtocolAddress, PublicKey, SessionRecord, UsePQRatchet,
};

use crate::keys::FetchedBundle;

/// The phone could not encrypt for a companion.
#[derive(Debug, Clone, Error)]
#[error("the phone cannot encrypt for companion {address}: {reason}")]
pub struct EncryptError {
    address: String,
    reason: String,
}

impl EncryptError {
    fn new(address: &ProtocolAddress, source: signal::SignalProtocolError) -> Self {
        Self {
            address: address.to_string(),
            reason: source.to_string(),
        }
    }
}

/// An encrypted message and the `<enc type>` that names its kind.
pub struct Sealed {
    /// `pkmsg` while the companion has not answered on the session yet, `msg` after.
    pub kind: &'static str,
    /// The serialized Signal message.
    pub ciphertext: Vec<u8>,
}

/// One session between the phone and a companion, and what it needs to encrypt.
pub struct PhoneSession {
    address: ProtocolAddress,
    identities: Identities,
    session: Session,
}

impl PhoneSession {
    /// A session from the phone (`identity`, `registration_id`) to the companion device
    /// `device` of `user`, built from the bundle the server handed out for it.
    pub async fn start(
        identity: &KeyPair,
        registration_id: u32,
        user: &str,
        device: u32,
        bundle: &FetchedBundle,
    ) -> Result<Self, EncryptError> {
        let address = ProtocolAddress::new(user, device.into());
        let mut session = Self {
            address: address.clone(),
            identities: Identities {
                identity: IdentityKeyPair::from(identity.clone()),
                registration_id,
                remote_identity: None,
            },
            session: Session(None),
        };
        let failed = |source| EncryptError::new(&address, source);
        let key = |bytes: &[u8]| PublicKey::from_djb_public_key_bytes(bytes).map_err(Into::into);
        let prekey = match bundle.prekey {
            Some((id, public)) => Some((id.into(), key(&public).map_err(failed)?)),
            None => None,
        };
        let bundle = PreKeyBundle::new(
            bundle.registration_id,
            device.into(),
            prekey,
            bundle.signed_prekey.id.into(),
            key(&bundle.signed_prekey.public).map_err(failed)?,
            bundle.signed_prekey.signature.clone(),
            IdentityKey::new(key(&bundle.identity).map_err(failed)?),
        )
        .map_err(failed)?;
        // A seeded generator, not the thread's: this future crosses awaits between threads.
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        signal::process_prekey_bundle(
            &address,
            &mut session.session,
            &mut session.identities,
            &bundle,
            &mut rng,
            UsePQRatchet::No,
        )
        .await
        .map_err(failed)?;
        Ok(session)
    }

    /// Encrypts `plaintext` (a padded `Message`) as the next message on the session.
    pub async fn encrypt(&mut self, plaintext: &[u8]) -> Result<Sealed, EncryptError> {
        let message = signal::message_encrypt(
            plaintext,
            &self.address,
            &mut self.session,
            &mut self.identities,
        )
        .await
        .map_err(|source| EncryptError::new(&self.address, source))?;
        let kind = match message.message_type() {
            CiphertextMessageType::PreKey => "pkmsg",
            _ => "msg",
        };
        Ok(Sealed {
            kind,
            ciphertext: message.serialize().to_vec(),
        })
    }
}

/// The identity half of the phone's store: its own key pair and the companion's key, trusted
/// on first use as every WhatsApp client does.
struct Identities {
    identity: IdentityKeyPair,
    registration_id: u32,
    remote_identity: Option<IdentityKey>,
}

#[async_trait::async_trait]
impl signal::IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> signal::error::Result<IdentityKeyPair> {
        Ok(self.identity.clone())
    }

    async fn get_local_registration_id(&self) -> signal::error::Result<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        _address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> signal::error::Result<IdentityChange> {
        let change = match self.remote_identity.replace(*identity) {
            Some(old) if old != *identity => IdentityChange::ReplacedExisting,
            _ => IdentityChange::NewOrUnchanged,
        };
        Ok(change)
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        identity: &IdentityKey,
        _direction: Direction,
    ) -> signal::error::Result<bool> {
        Ok(self.remote_identity.is_none_or(|known| known == *identity))
    }

    async fn get_identity(
        &self,
        _address: &ProtocolAddress,
    ) -> signal::error::Result<Option<IdentityKey>> {
        Ok(self.remote_identity)
    }
}

/// The session half: the one record, once built.
struct Session(Option<SessionRecord>);

#[async_trait::async_trait]
impl signal::SessionStore for Session {
    async fn load_session(
        &self,
        _address: &ProtocolAddress,
    ) -> signal::error::Result<Option<SessionRecord>> {
        Ok(self.0.clone())
    }

    async fn has_session(&self, _address: &ProtocolAddress) -> signal::error::Result<bool> {
        Ok(self.0.is_some())
    }

    async fn store_session(
        &mut self,
        _address: &ProtocolAddress,
        record: SessionRecord,
    ) -> signal::error::Result<()> {
        self.0 = Some(record);
        Ok(())
    }
}

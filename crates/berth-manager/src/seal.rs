//! Sealing with the cluster's data key: what makes secrets (and, later,
//! registry passwords) ciphertext in the Raft log and in snapshots.
//! ChaCha20-Poly1305 with a random nonce per seal; the sealed form is the
//! nonce followed by the ciphertext. The key lives in each manager's
//! `manager.json` (mode 0600) and reaches a joining manager in its join
//! reply; a stolen data dir holds both, as a Swarm manager's does without
//! autolock.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::ManagerError;
use crate::identity::Identity;
use crate::node::random_bytes;

pub const DATA_KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

pub struct DataKey(ChaCha20Poly1305);

impl DataKey {
    /// The key of the cluster this manager belongs to.
    pub fn of(identity: &Identity) -> Result<DataKey, ManagerError> {
        let bytes = hex::decode(&identity.data_key).unwrap_or_default();
        if bytes.len() != DATA_KEY_BYTES {
            return Err(ManagerError::Internal(
                "this manager has no data key (its data dir predates secrets), so it cannot seal secrets".into(),
            ));
        }
        Ok(DataKey(ChaCha20Poly1305::new(Key::from_slice(&bytes))))
    }

    /// Seals `clear`. The cipher refuses only input past its length limit
    /// (far above any request the API accepts); that is an error, never an
    /// empty sealed value that would replicate as if it held the secret.
    pub fn seal(&self, clear: &[u8]) -> Result<Vec<u8>, ManagerError> {
        let nonce = random_bytes::<NONCE_BYTES>();
        let ciphertext = self
            .0
            .encrypt(Nonce::from_slice(&nonce), clear)
            .map_err(|_| ManagerError::Internal(format!("cannot seal a value of {} bytes", clear.len())))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, ManagerError> {
        if sealed.len() < NONCE_BYTES {
            return Err(ManagerError::Internal("a sealed value is truncated".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.0
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| ManagerError::Internal("a sealed value does not open with this cluster's data key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            node_id: 1,
            cluster_id: "c".into(),
            manager_token: String::new(),
            worker_token: String::new(),
            joined: true,
            data_key: hex::encode([7u8; DATA_KEY_BYTES]),
        }
    }

    #[test]
    fn a_sealed_secret_opens_and_does_not_contain_the_clear_text() -> Result<(), ManagerError> {
        let key = DataKey::of(&identity())?;
        let clear = b"correct horse battery staple";
        let sealed = key.seal(clear)?;
        assert!(!sealed.windows(clear.len()).any(|w| w == clear), "the clear text shows through");
        assert_ne!(key.seal(clear)?, sealed, "every seal has its own nonce");
        assert_eq!(key.open(&sealed).expect("opens"), clear);
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(key.open(&tampered).is_err(), "a changed byte is detected");
        assert!(DataKey::of(&Identity { data_key: String::new(), ..identity() }).is_err());
        Ok(())
    }
}

//! An auth file of a test's own, so that a test can run the gateway with the clients it needs.

use std::path::PathBuf;

use ackgate::auth::AuthArgs;
use ackgate::settings::Settings;
use sha2::{Digest, Sha256};

use super::{test_settings, unique};

/// An auth file in the temporary directory, removed on drop.
pub struct AuthFile(pub PathBuf);

impl AuthFile {
    /// A file with these `clients`: (name, secret, extra TOML lines such as `produce = […]`).
    pub fn new(clients: &[(&str, &str, &str)]) -> AuthFile {
        let file = AuthFile(std::env::temp_dir().join(format!("{}.toml", unique("auth"))));
        file.write(clients);
        file
    }

    /// Replaces the file's clients (a test of reloading writes it again).
    pub fn write(&self, clients: &[(&str, &str, &str)]) {
        let text: String = clients
            .iter()
            .map(|(name, secret, extra)| {
                let digest = hex::encode(Sha256::digest(secret.as_bytes()));
                format!("[[clients]]\nname = \"{name}\"\nkey_sha256 = \"{digest}\"\n{extra}\n\n")
            })
            .collect();
        std::fs::write(&self.0, text).unwrap();
    }

    /// [`test_settings`] with this auth file.
    pub fn settings(&self) -> Settings {
        Settings {
            auth: AuthArgs {
                auth_file: Some(self.0.clone()),
                ..AuthArgs::default()
            },
            ..test_settings()
        }
    }
}

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

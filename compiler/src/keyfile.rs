//! Secret keys at rest. `fhec keygen` writes `secret.key` either in the clear (mode 0600) or sealed:
//! the key's bytes encrypted with ChaCha20-Poly1305 under a 256-bit data key that is either
//!
//! - derived from a passphrase with Argon2id (salt and cost stored beside the ciphertext), or
//! - random, and wrapped by an external command (a cloud KMS CLI, an HSM tool): the command reads the
//!   data key on stdin and prints the wrapped key; the unwrap command does the reverse. fhec never
//!   sees the KMS's own key.
//!
//! A wrong passphrase, a failing unwrap command or a modified file all fail the AEAD tag check and
//! give a clear error, never a wrong key.

use crate::DriverError;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use fhec_runtime::artifact::{self, Kind};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

/// How the secret key is protected at rest.
#[derive(Clone, Default)]
pub enum Protection {
    /// In the clear (file mode 0600).
    #[default]
    None,
    Passphrase(Zeroizing<String>),
    /// Shell commands that wrap (stdin: 32-byte data key, stdout: wrapped blob) and unwrap it.
    Command {
        wrap: String,
        unwrap: String,
    },
}

#[derive(Serialize, Deserialize)]
enum DataKey {
    Argon2id { m_kib: u32, t: u32, p: u32, salt: [u8; 16] },
    Wrapped { blob: Vec<u8> },
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    key: DataKey,
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

const AAD: &[u8] = b"fhec secret key, sealed, v1";

fn err(msg: impl Into<String>) -> DriverError {
    DriverError::Key(msg.into())
}

fn argon2(passphrase: &str, m_kib: u32, t: u32, p: u32, salt: &[u8; 16]) -> Result<Zeroizing<[u8; 32]>, DriverError> {
    let params = argon2::Params::new(m_kib, t, p, Some(32)).map_err(|e| err(format!("argon2 parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
        .map_err(|e| err(format!("argon2: {e}")))?;
    Ok(out)
}

/// Runs `command` through the shell with `input` on stdin; returns its stdout.
fn pipe(command: &str, input: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>, DriverError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("{what} command {command:?}: {e}")))?;
    // A command that exits without reading its input closes the pipe: its exit status, checked
    // below, is then the error worth reporting.
    match child.stdin.take().expect("piped").write_all(input) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(err(format!("{what} command {command:?}: {e}")));
        }
        _ => {}
    }
    let out = child.wait_with_output().map_err(|e| err(format!("{what} command {command:?}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{what} command {command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Zeroizing::new(out.stdout))
}

/// The envelope bytes of a secret key as they go to disk under `protection`.
pub fn seal(plain: &[u8], protection: &Protection) -> Result<Vec<u8>, DriverError> {
    let (key, data_key) = match protection {
        Protection::None => return Ok(plain.to_vec()),
        Protection::Passphrase(pass) => {
            if pass.is_empty() {
                return Err(err("the passphrase is empty"));
            }
            let mut salt = [0u8; 16];
            OsRng.fill_bytes(&mut salt);
            let (m_kib, t, p) =
                (argon2::Params::DEFAULT_M_COST, argon2::Params::DEFAULT_T_COST, argon2::Params::DEFAULT_P_COST);
            (argon2(pass, m_kib, t, p, &salt)?, DataKey::Argon2id { m_kib, t, p, salt })
        }
        Protection::Command { wrap, .. } => {
            let mut key = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(key.as_mut());
            let blob = pipe(wrap, key.as_ref(), "key-wrap")?.to_vec();
            if blob.is_empty() {
                return Err(err(format!("key-wrap command {wrap:?} printed nothing")));
            }
            (key, DataKey::Wrapped { blob })
        }
    };
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext =
        cipher.encrypt(&nonce, Payload { msg: plain, aad: AAD }).map_err(|_| err("sealing the secret key failed"))?;
    let sealed = Sealed { key: data_key, nonce: nonce.into(), ciphertext };
    Ok(artifact::to_bytes(Kind::SealedSecretKey, &sealed).map_err(err)?.0)
}

/// The secret key's envelope bytes from what is on disk (`what` names the file in errors).
pub fn open(bytes: &[u8], protection: &Protection, what: &str) -> Result<Zeroizing<Vec<u8>>, DriverError> {
    if artifact::peek_kind(bytes) != Some(Kind::SealedSecretKey) {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    let (sealed, _): (Sealed, _) =
        artifact::from_bytes(bytes, Kind::SealedSecretKey).map_err(|e| err(format!("{what} {e}")))?;
    let key = match (&sealed.key, protection) {
        (DataKey::Argon2id { m_kib, t, p, salt }, Protection::Passphrase(pass)) => {
            // fhec seals at argon2's defaults (19 MiB, 2 passes, 1 lane); a file that asks for more
            // than 256 MiB, 16 passes or 16 lanes is refused before any of it is spent.
            if *m_kib > 1 << 18 || *t > 16 || *p > 16 {
                return Err(err(format!("{what}: implausible key-derivation cost (corrupted file?)")));
            }
            argon2(pass, *m_kib, *t, *p, salt)?
        }
        (DataKey::Argon2id { .. }, _) => {
            return Err(err(format!(
                "{what} is encrypted with a passphrase: set FHEC_PASSPHRASE or pass --passphrase-file"
            )));
        }
        (DataKey::Wrapped { blob }, Protection::Command { unwrap, .. }) => {
            let key = pipe(unwrap, blob, "key-unwrap")?;
            let key: [u8; 32] = key
                .as_slice()
                .try_into()
                .map_err(|_| err(format!("key-unwrap command {unwrap:?} did not print a 32-byte key")))?;
            Zeroizing::new(key)
        }
        (DataKey::Wrapped { .. }, _) => {
            return Err(err(format!("{what} is sealed by a key-management command: pass --key-unwrap-command")));
        }
    };
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let plain = cipher
        .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: AAD })
        .map_err(|_| err(format!("{what}: wrong passphrase or unwrapped key (or the file was modified)")))?;
    Ok(Zeroizing::new(plain))
}

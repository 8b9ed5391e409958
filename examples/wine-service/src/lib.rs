//! The wine MLP (13 features, 3 classes), compiled at build time by `build.rs` into the typed module
//! [`wine`]: `wine::Client` (keys, encrypt, decrypt) and `wine::Server` (run). The two binaries share it:
//!
//! ```sh
//! cargo run -p wine-service --bin wine-client -- keygen keys
//! cargo run -p wine-service --bin wine-client -- encrypt keys 13.2,1.78,2.14,11.2,100,2.65,2.76,0.26,1.28,4.38,1.05,3.4,1050 query.ct
//! cargo run -p wine-service --bin wine-server -- keys/eval.key query.ct answer.ct
//! cargo run -p wine-service --bin wine-client -- decrypt keys answer.ct
//! ```
#![forbid(unsafe_code)]

pub mod wine {
    fhec::include_model!("wine");
}

/// The same model compiled for CKKS: `wine_ckks::Client::encrypt_batch` packs up to
/// [`wine_ckks::SAMPLES_PER_CIPHERTEXT`] samples per ciphertext. Encrypted runs need the crate's
/// `ckks` feature (fhec's; nightly); `wine_ckks::Server::simulate_batch` runs anywhere.
pub mod wine_ckks {
    fhec::include_model!("wine_ckks");
}

/// The binaries' `main`: runs `run` on the arguments, prints an error and exits 1 on failure.
pub fn cli_main(run: fn(&[String]) -> Result<(), String>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Reads a file, naming it in the error.
pub fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

/// Writes a file, naming it in the error.
pub fn write(path: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{path}: {e}"))
}

/// Writes a secret: readable by its owner only.
pub fn write_secret(path: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).and_then(|mut f| f.write_all(bytes)).map_err(|e| format!("{path}: {e}"))
}

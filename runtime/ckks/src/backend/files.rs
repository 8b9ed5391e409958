//! Keys and ciphertexts as bytes, through poulpy's own `WriterTo`/`ReaderFrom`, for the files a
//! deployment moves between the data owner and the server. fhec's envelope (kind, version,
//! checksum, key fingerprint) wraps these bytes; this module only makes them and checks, on
//! reading, that they are what this context expects, so that a file of another ring, another plan or
//! a crafted one is an error rather than a panic or a wrong answer.
//!
//! - The secret key: the ring and the 32-byte seed the ternary secret is sampled from (poulpy's
//!   sampler). It never leaves the client.
//! - The evaluation key: the relinearization key, then each rotation key with its Galois element,
//!   written one by one as key generation makes them, each seed-compressed (poulpy's compressed
//!   layouts: the masks are regenerated from a seed when the server reads the key).
//! - A batch of ciphertexts: samples, packing, slots per sample, values per sample, then each
//!   ciphertext, normalized before writing.
//! - Training ciphertexts (rows, targets, weights): their count, then each as in a batch.

use super::{BE, Batch, ClientKey, Context, Ct, EvalKey, RotationKey, glwe, os_seed, rotation_key, tensor_key};
use crate::{BASE2K, CkksError, ClientLayout, LOG_DELTA, Packing, Ring};
use poulpy_ckks::prelude::*;
use poulpy_core::GLWENormalize;
use poulpy_core::api::GLWESecretPreparedFactory;
use poulpy_core::layouts::{GGLWEInfos, GLWEInfos, LWEInfos};
use poulpy_core::layouts::{
    GLWEAutomorphismKey, GLWEAutomorphismKeyAlloc, GLWEAutomorphismKeyCompressedAlloc, GLWESecret, GLWETensorKey,
    GLWETensorKeyAlloc, GLWETensorKeyCompressedAlloc, GetGaloisElement,
};
use poulpy_core::{
    GLWEAutomorphismKeyCompressedEncryptSk, GLWEAutomorphismKeyDecompress, GLWETensorKeyCompressedEncryptSk,
    GLWETensorKeyDecompress,
};
use poulpy_hal::api::ScratchOwnedBorrow;
use poulpy_hal::layouts::{Backend, ReaderFrom, WriterTo};
use poulpy_hal::source::Source;
use std::collections::HashMap;
use std::io::{Read, Write};

pub(super) type RawTensorKey = GLWETensorKey<<BE as Backend>::OwnedBuf, <BE as Backend>::ZnxWord>;
pub(super) type RawRotationKey = GLWEAutomorphismKey<<BE as Backend>::OwnedBuf, <BE as Backend>::ZnxWord>;
pub(super) type RawSecret = GLWESecret<<BE as Backend>::OwnedBuf, <BE as Backend>::ZnxWord>;

/// Bumped when a layout below changes.
const VERSION: u32 = 2;
const SECRET_TAG: &[u8; 4] = b"CKSK";
const EVAL_TAG: &[u8; 4] = b"CKEK";
const BATCH_TAG: &[u8; 4] = b"CKCT";
const TRAIN_TAG: &[u8; 4] = b"CKTR";

/// Whether a batch holds a client's fresh inputs or a server's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Inputs,
    Outputs,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> CkksError {
    move |e| CkksError::Backend(format!("{what}: {e}"))
}

fn put_u64(w: &mut dyn Write, v: u64) -> Result<(), CkksError> {
    w.write_all(&v.to_le_bytes()).map_err(io("writing"))
}

fn get_u64(r: &mut dyn Read, what: &'static str) -> Result<u64, CkksError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(io(what))?;
    Ok(u64::from_le_bytes(b))
}

fn put_head(w: &mut dyn Write, tag: &[u8; 4], ring: &Ring) -> Result<(), CkksError> {
    w.write_all(tag).map_err(io("writing"))?;
    w.write_all(&VERSION.to_le_bytes()).map_err(io("writing"))?;
    put_u64(w, ring.log_n as u64)?;
    put_u64(w, ring.k as u64)
}

/// Reads and checks a header: the tag of the expected object, this version, this context's ring.
fn check_head(r: &mut dyn Read, tag: &[u8; 4], ring: &Ring, what: &'static str) -> Result<(), CkksError> {
    let mut got = [0u8; 8];
    r.read_exact(&mut got).map_err(io(what))?;
    if &got[..4] != tag {
        return Err(CkksError::Shape(format!("not a CKKS {what}")));
    }
    let version = u32::from_le_bytes(got[4..].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(CkksError::Shape(format!("a {what} of format {version}; this fhec reads {VERSION}")));
    }
    let (log_n, k) = (get_u64(r, what)?, get_u64(r, what)?);
    if (log_n, k) != (ring.log_n as u64, ring.k as u64) {
        return Err(CkksError::Shape(format!(
            "a {what} for ring 2^{log_n} ({k} bits); this build's ring is 2^{} ({} bits)",
            ring.log_n, ring.k
        )));
    }
    Ok(())
}

/// Counts the bytes read through it.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    read: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Counts the bytes written to it.
#[derive(Default)]
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The parameters a key's shape is made of, for comparing a key read with the one expected.
fn signature<T: GGLWEInfos>(k: &T) -> String {
    format!(
        "{:?}",
        (
            k.n(),
            k.base2k(),
            k.max_k(),
            k.rank(),
            k.dnum(),
            k.k_digit(),
            k.k_aux(),
            k.rank_in(),
            k.rank_out(),
            k.k_offset()
        )
    )
}

/// Bytes of optional metadata (fresh-noise estimates) a key's stream may carry beyond its data.
const METADATA_SLACK: u64 = 4096;

/// Reads `key` (allocated in this context's shape) from `r`, and refuses a stream of another
/// shape: other parameters, or a size other than this shape's serialization (give or take its
/// optional metadata).
fn read_shaped<T: ReaderFrom + WriterTo + GGLWEInfos>(
    key: &mut T,
    r: &mut dyn Read,
    what: &'static str,
) -> Result<(), CkksError> {
    let (mut expected, want) = (Count::default(), signature(key));
    key.write_to(&mut expected).map_err(io(what))?;
    let mut counting = Counting { inner: r, read: 0 };
    key.read_from(&mut counting).map_err(io(what))?;
    if counting.read < expected.0 || counting.read > expected.0 + METADATA_SLACK || signature(key) != want {
        return Err(CkksError::Shape(format!(
            "a {what} of another shape ({} bytes, {} expected)",
            counting.read, expected.0
        )));
    }
    Ok(())
}

/// Writes the evaluation key for `galois` under `secret`, seed-compressed: each key's masks are
/// drawn from a fresh seed, and only the seeds and the bodies are written (about half the bytes of
/// the full keys). Each key is made and written in turn (keys at 2^15 run to tens of megabytes each).
pub(super) fn write_eval_key(
    ctx: &Context,
    w: &mut dyn Write,
    secret: &RawSecret,
    galois: &[i64],
) -> Result<(), CkksError> {
    use rayon::prelude::*;
    let (p, m) = (&ctx.params, &ctx.module);
    let tensor_bytes = m.glwe_tensor_key_compressed_encrypt_sk_tmp_bytes(&tensor_key(p));
    let rotation_bytes = m.glwe_automorphism_key_compressed_encrypt_sk_tmp_bytes(&rotation_key(p));
    // The relinearization key (`None`), then each rotation key: made a worker's worth at a time
    // (each from its own seeds), written in this order.
    let jobs: Vec<Option<i64>> = std::iter::once(None).chain(galois.iter().map(|&g| Some(g))).collect();
    put_head(w, EVAL_TAG, p)?;
    for chunk in jobs.chunks(rayon::current_num_threads().max(1)) {
        let made = chunk
            .par_iter()
            .map(|job| {
                let mut xe = Source::new(os_seed()?);
                let mut scratch = ctx.scratch(tensor_bytes.max(rotation_bytes));
                let mut out = Vec::new();
                match *job {
                    None => {
                        let mut tsk = m.glwe_tensor_key_compressed_alloc_from_infos(&tensor_key(p));
                        m.glwe_tensor_key_compressed_encrypt_sk(
                            &mut tsk,
                            secret,
                            os_seed()?,
                            &mut xe,
                            &mut scratch.borrow(),
                        );
                        tsk.write_to(&mut out).map_err(io("writing the relinearization key"))?;
                    }
                    Some(g) => {
                        let mut key = m.glwe_automorphism_key_compressed_alloc_from_infos(&rotation_key(p));
                        m.glwe_automorphism_key_compressed_encrypt_sk(
                            &mut key,
                            g,
                            secret,
                            os_seed()?,
                            &mut xe,
                            &mut scratch.borrow(),
                        );
                        put_u64(&mut out, g as u64)?;
                        key.write_to(&mut out).map_err(io("writing a rotation key"))?;
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<Vec<u8>>, CkksError>>()?;
        for (job, bytes) in chunk.iter().zip(made) {
            w.write_all(&bytes).map_err(io("writing the evaluation key"))?;
            if job.is_none() {
                put_u64(w, galois.len() as u64)?;
            }
        }
    }
    Ok(())
}

impl ClientKey {
    /// The secret key's bytes: the ring and the seed of the secret. For the client's key file only.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::with_capacity(60);
        put_head(&mut out, SECRET_TAG, &ctx.params).expect("writing to memory");
        out.extend_from_slice(&self.seed);
        out
    }
}

impl Context {
    /// A fresh secret key; the evaluation key for `galois` goes to `out` as it is made (see the
    /// module docs), and is not kept.
    pub fn keygen_to(&self, galois: &[i64], out: &mut dyn Write) -> Result<ClientKey, CkksError> {
        Ok(self.keygen_with(galois, Some(out))?.0)
    }

    /// The size of the evaluation key [`Context::keygen_to`] writes with `rotations` rotation keys,
    /// as a bound (each key's optional metadata included): what a server must accept.
    pub fn eval_key_bytes(&self, rotations: usize) -> usize {
        let (p, m) = (&self.params, &self.module);
        let size = |key: &dyn Fn(&mut Count) -> std::io::Result<()>| {
            let mut count = Count::default();
            key(&mut count).map_or(0, |()| count.0)
        };
        let tensor = size(&|c| m.glwe_tensor_key_compressed_alloc_from_infos(&tensor_key(p)).write_to(c));
        let rotation = size(&|c| m.glwe_automorphism_key_compressed_alloc_from_infos(&rotation_key(p)).write_to(c));
        let keys = 1 + rotations as u64;
        (24 + 8 + tensor + rotations as u64 * (8 + rotation) + keys * METADATA_SLACK) as usize
    }

    /// The secret key of [`ClientKey::to_bytes`].
    pub fn client_key(&self, bytes: &[u8]) -> Result<ClientKey, CkksError> {
        let mut r = bytes;
        check_head(&mut r, SECRET_TAG, &self.params, "secret key")?;
        let seed: [u8; 32] =
            r.try_into().map_err(|_| CkksError::Shape(format!("a secret key of {} bytes", bytes.len())))?;
        let raw = self.secret_from_seed(seed);
        let mut sk = self.module.glwe_secret_prepared_alloc_from_infos(&glwe(&self.params));
        self.module.glwe_secret_prepare(&mut sk, &raw);
        Ok(ClientKey { seed, sk })
    }

    /// Reads an evaluation key written by [`Context::keygen_to`] and prepares it; it must hold a
    /// rotation key for exactly the elements of `galois` (the server's [`super::Server::galois_elements`]).
    pub fn read_eval_key(&self, r: &mut dyn Read, galois: &[i64]) -> Result<EvalKey, CkksError> {
        use rayon::prelude::*;
        check_head(r, EVAL_TAG, &self.params, "evaluation key")?;
        let (p, m) = (&self.params, &self.module);
        let mut tensor = m.glwe_tensor_key_compressed_alloc_from_infos(&tensor_key(p));
        read_shaped(&mut tensor, r, "relinearization key")?;
        let count = get_u64(r, "evaluation key")?;
        if count != galois.len() as u64 {
            return Err(CkksError::Shape(format!(
                "an evaluation key with {count} rotation keys; this plan uses {}",
                galois.len()
            )));
        }
        // Read and checked in turn; decompressed and prepared in parallel (seconds each at 2^15).
        let mut compressed = Vec::with_capacity(galois.len());
        for _ in 0..count {
            let g = get_u64(r, "evaluation key")? as i64;
            if !galois.contains(&g) || compressed.iter().any(|(h, _)| *h == g) {
                return Err(CkksError::Shape(format!(
                    "the evaluation key holds a rotation key (Galois element {g}) this plan does not use, or twice"
                )));
            }
            let mut key = m.glwe_automorphism_key_compressed_alloc_from_infos(&rotation_key(p));
            read_shaped(&mut key, r, "rotation key")?;
            if key.p() != g {
                return Err(CkksError::Shape(format!("a rotation key for Galois element {} filed under {g}", key.p())));
            }
            compressed.push((g, key));
        }
        let tsk = || {
            let mut raw = m.glwe_tensor_key_alloc_from_infos(&tensor_key(p));
            m.glwe_tensor_key_decompress(&mut raw, &tensor);
            self.prepare_tensor_key(&raw)
        };
        let rotations = || {
            compressed
                .par_iter()
                .map(|(g, key)| {
                    let mut raw = m.glwe_automorphism_key_alloc_from_infos(&rotation_key(p));
                    m.glwe_automorphism_key_decompress(&mut raw, key);
                    (*g, self.prepare_rotation_key(&raw))
                })
                .collect::<HashMap<i64, RotationKey>>()
        };
        let (tsk, rotations) = rayon::join(tsk, rotations);
        Ok(EvalKey { tsk, rotations })
    }

    /// Writes `batch` (see the module docs), each ciphertext normalized first.
    pub fn write_batch(&self, batch: &Batch, w: &mut dyn Write) -> Result<(), CkksError> {
        put_head(w, BATCH_TAG, &self.params)?;
        let packing = match batch.packing {
            Packing::BatchMajor => 0,
            Packing::FeatureMajor => 1,
        };
        for v in [batch.samples as u64, packing, batch.block as u64, batch.values as u64, batch.cts.len() as u64] {
            put_u64(w, v)?;
        }
        let mut scratch = self.scratch(0);
        let mut buf = std::io::BufWriter::new(w);
        for ct in &batch.cts {
            let mut ct = ct.clone();
            self.module.glwe_normalize_assign(&mut ct, &mut scratch.borrow());
            // Its precision first: a result is narrower than a fresh ciphertext, and a ciphertext
            // read back must be allocated at the width it had.
            put_u64(&mut buf, ct.k().as_usize() as u64)?;
            ct.write_live_to(&mut buf).map_err(io("writing a ciphertext"))?;
        }
        buf.flush().map_err(io("writing ciphertexts"))
    }

    /// Reads a batch of [`Context::write_batch`] for `layout`: the client's fresh inputs or the
    /// server's results. Its samples, packing and ciphertext count must be the layout's, and each
    /// ciphertext of this ring (inputs: at a fresh ciphertext's scale and width).
    pub fn read_batch(&self, mut r: &mut dyn Read, layout: &ClientLayout, role: Role) -> Result<Batch, CkksError> {
        check_head(r, BATCH_TAG, &self.params, "ciphertext batch")?;
        let mut head = [0u64; 5];
        for v in &mut head {
            *v = get_u64(r, "ciphertext batch")?;
        }
        let [samples, packing, block, values, count] = head;
        let packing = match packing {
            0 => Packing::BatchMajor,
            1 => Packing::FeatureMajor,
            p => return Err(CkksError::Shape(format!("unknown packing {p}"))),
        };
        let want_values = match role {
            Role::Inputs => layout.n_inputs(),
            Role::Outputs => layout.n_outputs,
        };
        if packing != layout.packing || block != layout.block as u64 || values != want_values as u64 {
            return Err(CkksError::Shape(format!(
                "ciphertexts packed {} in blocks of {block} with {values} values per sample; this build packs {} in blocks of {} with {want_values}",
                packing.name(),
                layout.packing.name(),
                layout.block
            )));
        }
        let samples = usize::try_from(samples).map_err(|_| CkksError::Shape("too many samples".into()))?;
        if samples == 0 {
            return Err(CkksError::Shape("a batch of no samples".into()));
        }
        let expected = layout.ciphertexts(samples, want_values)?;
        if count != expected as u64 {
            return Err(CkksError::Shape(format!("{count} ciphertexts for {samples} samples; {expected} expected")));
        }
        let n = 1usize << self.params.log_n;
        let mut cts = Vec::with_capacity(expected);
        for i in 0..expected {
            let k = get_u64(r, "ciphertext batch")?;
            let fresh_width = role == Role::Outputs || k == self.params.k as u64;
            if k == 0 || k > self.params.k as u64 || !fresh_width {
                return Err(CkksError::Shape(format!(
                    "ciphertext {i} has {k} bits of precision; this ring's fresh ciphertexts have {}",
                    self.params.k
                )));
            }
            let mut ct: Ct = self.module.ckks_ciphertext_alloc(BASE2K.into(), (k as usize).into());
            ct.read_live_from(&mut r).map_err(|e| CkksError::Shape(format!("ciphertext {i}: {e}")))?;
            let fresh = role == Role::Outputs || ct.log_delta() == LOG_DELTA;
            if ct.n().as_usize() != n || ct.rank().as_usize() != 1 || !fresh {
                return Err(CkksError::Shape(format!("ciphertext {i} is not one of this ring at a fresh scale")));
            }
            cts.push(ct);
        }
        Ok(Batch { cts, samples, packing, block: layout.block, values: want_values })
    }

    /// Writes training ciphertexts (see the module docs), each normalized first.
    pub(super) fn write_cts(&self, cts: &[&Ct], w: &mut dyn Write) -> Result<(), CkksError> {
        put_head(w, TRAIN_TAG, &self.params)?;
        put_u64(w, cts.len() as u64)?;
        let mut scratch = self.scratch(0);
        let mut buf = std::io::BufWriter::new(w);
        for ct in cts {
            let mut ct = (*ct).clone();
            self.module.glwe_normalize_assign(&mut ct, &mut scratch.borrow());
            put_u64(&mut buf, ct.k().as_usize() as u64)?;
            ct.write_live_to(&mut buf).map_err(io("writing a ciphertext"))?;
        }
        buf.flush().map_err(io("writing ciphertexts"))
    }

    /// Reads exactly `count` training ciphertexts of this ring (with `fresh`, each at a fresh
    /// ciphertext's width and scale: what the data owner sends).
    pub(super) fn read_cts(&self, mut r: &mut dyn Read, count: usize, fresh: bool) -> Result<Vec<Ct>, CkksError> {
        check_head(r, TRAIN_TAG, &self.params, "training ciphertext file")?;
        let got = get_u64(r, "training ciphertext file")?;
        if got != count as u64 {
            return Err(CkksError::Shape(format!("{got} ciphertexts where {count} belong")));
        }
        let n = 1usize << self.params.log_n;
        let mut cts = Vec::with_capacity(count);
        for i in 0..count {
            let k = get_u64(r, "training ciphertext file")?;
            if k == 0 || k > self.params.k as u64 || (fresh && k != self.params.k as u64) {
                return Err(CkksError::Shape(format!(
                    "ciphertext {i} has {k} bits of precision; this ring's fresh ciphertexts have {}",
                    self.params.k
                )));
            }
            let mut ct: Ct = self.module.ckks_ciphertext_alloc(BASE2K.into(), (k as usize).into());
            ct.read_live_from(&mut r).map_err(|e| CkksError::Shape(format!("ciphertext {i}: {e}")))?;
            if ct.n().as_usize() != n || ct.rank().as_usize() != 1 || ct.log_delta() != LOG_DELTA {
                return Err(CkksError::Shape(format!("ciphertext {i} is not one of this ring at its scale")));
            }
            cts.push(ct);
        }
        Ok(cts)
    }
}

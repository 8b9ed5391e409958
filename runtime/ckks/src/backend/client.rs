//! The client's side of the backend: samples encrypted as a [`ClientLayout`] packs them, results
//! decrypted back to values per sample. Neither needs the plan.

use super::*;

impl Context {
    /// Encrypts `samples` (each the plan's input values, clamped and mapped here) as `layout`
    /// packs them: batch-major, up to `slots` samples; feature-major, any number, in as many
    /// ciphertexts as they need. Needs no plan: the client holds no weights.
    pub fn encrypt(&self, key: &ClientKey, layout: &ClientLayout, samples: &[Vec<f64>]) -> Result<Batch, CkksError> {
        layout.validate()?;
        if layout.ring != self.params {
            return Err(CkksError::Shape(format!(
                "a layout for ring 2^{} in a context of ring 2^{}",
                layout.ring.log_n, self.params.log_n
            )));
        }
        let slots = self.params.slots();
        let (per, packing, n_inputs) = (layout.samples_per_ciphertext, layout.packing, layout.n_inputs());
        layout.ciphertexts(samples.len(), n_inputs)?;
        if let Some(s) = samples.iter().position(|s| s.len() != n_inputs) {
            return Err(CkksError::Shape(format!(
                "sample {s} has {} values; the plan takes {n_inputs}",
                samples[s].len()
            )));
        }
        let (mut xa, mut xe) = (Source::new(os_seed()?), Source::new(os_seed()?));
        let mut scratch = self.scratch(0);
        let im = vec![0.0; slots];
        let mapped: Vec<Vec<f64>> = samples.iter().map(|s| layout.client_inputs(s)).collect();
        // Unused slots repeat the first sample: every slot goes through the polynomials, and a slot
        // outside their windows would diverge and, through the encoding's transform, spoil every
        // other slot.
        let pad = mapped.first().cloned().unwrap_or_else(|| vec![0.0; n_inputs]);
        let slot_vectors: Vec<Vec<f64>> = match packing {
            Packing::BatchMajor => (0..n_inputs)
                .map(|i| {
                    let mut re = vec![pad[i]; slots];
                    for (r, s) in re.iter_mut().zip(&mapped) {
                        *r = s[i];
                    }
                    re
                })
                .collect(),
            Packing::FeatureMajor => {
                let block = slots / per;
                mapped
                    .chunks(per)
                    .map(|chunk| {
                        let mut re = vec![0.0; slots];
                        for b in 0..per {
                            re[b * block..b * block + n_inputs].copy_from_slice(chunk.get(b).unwrap_or(&pad));
                        }
                        re
                    })
                    .collect()
            }
        };
        let mut cts = Vec::with_capacity(slot_vectors.len());
        for re in &slot_vectors {
            let mut pt = self.module.ckks_plaintext_alloc_from_slots(
                self.module.ckks_max_slots(),
                BASE2K.into(),
                (LOG_DELTA + int_bits(1.0)).into(),
            );
            pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 });
            self.module
                .ckks_encode_slots_host_into(&mut pt, re, &im, &mut scratch.borrow())
                .map_err(err("encoding"))?;
            let mut ct = self.module.ckks_ciphertext_alloc(BASE2K.into(), self.params.k.into());
            self.module
                .ckks_encrypt_sk(&mut ct, &pt, &key.sk, &mut xe, &mut xa, &mut scratch.borrow())
                .map_err(err("encrypting"))?;
            cts.push(ct);
        }
        Ok(Batch { cts, samples: samples.len(), packing, block: slots / per, values: n_inputs })
    }

    /// Decrypts the plan's outputs: per sample, one value per output.
    pub fn decrypt(&self, key: &ClientKey, outputs: &Batch) -> Result<Vec<Vec<f64>>, CkksError> {
        let slots = self.params.slots();
        let mut scratch = self.scratch(0);
        let mut per_output = Vec::with_capacity(outputs.cts.len());
        for ct in &outputs.cts {
            // Host decoding takes at most 127 bits: the scale plus the integer bits outputs may use.
            let head = ct.log_budget().min(DECODE_BITS);
            let mut pt = self.module.ckks_plaintext_alloc_from_slots(
                self.module.ckks_max_slots(),
                BASE2K.into(),
                (ct.log_delta() + head).into(),
            );
            pt.set_meta(ct.meta());
            self.module.ckks_decrypt(&mut pt, ct, &key.sk, &mut scratch.borrow()).map_err(err("decrypting"))?;
            let (mut re, mut im) = (vec![0.0; slots], vec![0.0; slots]);
            self.module
                .ckks_decode_slots_host_into(&pt, &mut re, &mut im, &mut scratch.borrow())
                .map_err(err("decoding"))?;
            per_output.push(re);
        }
        Ok(match outputs.packing {
            Packing::BatchMajor => (0..outputs.samples).map(|s| per_output.iter().map(|o| o[s]).collect()).collect(),
            Packing::FeatureMajor => {
                let per = slots / outputs.block;
                (0..outputs.samples)
                    .map(|s| {
                        let at = (s % per) * outputs.block;
                        per_output[s / per][at..at + outputs.values].to_vec()
                    })
                    .collect()
            }
        })
    }
}

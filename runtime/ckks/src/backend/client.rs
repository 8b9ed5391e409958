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
        let cts = slot_vectors.iter().map(|re| self.encrypt_slots(key, re, 1.0)).collect::<Result<_, _>>()?;
        Ok(Batch { cts, samples: samples.len(), packing, block: slots / per, values: n_inputs })
    }

    /// Decrypts the plan's outputs: per sample, one value per output.
    pub fn decrypt(&self, key: &ClientKey, outputs: &Batch) -> Result<Vec<Vec<f64>>, CkksError> {
        let slots = self.params.slots();
        let per_output: Vec<Vec<f64>> =
            outputs.cts.iter().map(|ct| self.decrypt_slots(key, ct)).collect::<Result<_, _>>()?;
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

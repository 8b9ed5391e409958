//! What the data owner needs to encrypt samples for a plan and to read its results back, without
//! the plan (its weights): the ring, the packing, the slot layout and the input box. A CKKS client
//! artifact holds this; the backend encrypts and decrypts with it alone.

use crate::{CkksError, Packing, Plan, Ring};
use serde::{Deserialize, Serialize};

/// The client's view of a plan (see the module docs); made by [`Plan::client_layout`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientLayout {
    /// The ring keys are generated for.
    pub ring: Ring,
    pub packing: Packing,
    /// Samples one ciphertext holds: the ring's slots batch-major, `slots / block` feature-major.
    pub samples_per_ciphertext: usize,
    /// Slots per sample (1 batch-major).
    pub block: usize,
    /// The box of each input value: the client clamps into it and maps it onto [-1, 1].
    pub input_box: Vec<(f64, f64)>,
    /// Values per sample the plan returns.
    pub n_outputs: usize,
}

impl ClientLayout {
    pub fn n_inputs(&self) -> usize {
        self.input_box.len()
    }

    /// What the client encrypts for one sample: each value clamped into its box, the box mapped onto
    /// [-1, 1] (a box of one point maps to 0).
    pub fn client_inputs(&self, x: &[f64]) -> Vec<f64> {
        map_into_box(&self.input_box, x)
    }

    /// How many ciphertexts `samples` samples take, with `values` values each (the inputs' or the
    /// outputs' count): one per value batch-major (up to the ring's slots samples), one per
    /// `samples_per_ciphertext` samples feature-major.
    pub fn ciphertexts(&self, samples: usize, values: usize) -> Result<usize, CkksError> {
        match self.packing {
            Packing::BatchMajor if samples > self.samples_per_ciphertext => Err(CkksError::Shape(format!(
                "{samples} samples for {} slots: split them into batches of at most that many",
                self.samples_per_ciphertext
            ))),
            Packing::BatchMajor => Ok(values),
            Packing::FeatureMajor => Ok(samples.div_ceil(self.samples_per_ciphertext)),
        }
    }

    /// Checks that the layout is one a plan could have (a file may hold anything).
    pub fn validate(&self) -> Result<(), CkksError> {
        let bad = |what: String| Err(CkksError::Plan(format!("client layout: {what}")));
        let slots = self.ring.slots();
        if !matches!(self.ring.log_n, 14 | 15) {
            return bad(format!("ring degree 2^{} is not one the backend takes", self.ring.log_n));
        }
        if self.block == 0 || self.samples_per_ciphertext == 0 || self.block * self.samples_per_ciphertext != slots {
            return bad(format!(
                "{} samples of {} slots per ciphertext do not fill {slots} slots",
                self.samples_per_ciphertext, self.block
            ));
        }
        if self.packing == Packing::BatchMajor && self.block != 1 {
            return bad("batch-major packing puts one sample in a slot".into());
        }
        if self.packing == Packing::FeatureMajor && self.n_inputs().max(self.n_outputs) > self.block {
            return bad(format!(
                "{} inputs or {} outputs in blocks of {}",
                self.n_inputs(),
                self.n_outputs,
                self.block
            ));
        }
        if self.n_inputs() == 0 || self.n_outputs == 0 {
            return bad("no inputs or no outputs".into());
        }
        if let Some(i) = self.input_box.iter().position(|(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo <= hi)) {
            return bad(format!("input {i} has no finite box"));
        }
        Ok(())
    }
}

/// Each value of `x` clamped into its box and the box mapped onto [-1, 1].
pub(crate) fn map_into_box(input_box: &[(f64, f64)], x: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(input_box)
        .map(|(&x, &(lo, hi))| if hi > lo { (2.0 * x.clamp(lo, hi) - lo - hi) / (hi - lo) } else { 0.0 })
        .collect()
}

impl Plan {
    /// What the client needs under `packing` on `ring` (see [`ClientLayout`]).
    pub fn client_layout(&self, ring: Ring, packing: Packing) -> Result<ClientLayout, CkksError> {
        let per = self.samples_per_ciphertext(ring, packing)?;
        let layout = ClientLayout {
            ring,
            packing,
            samples_per_ciphertext: per,
            block: ring.slots() / per,
            input_box: self.input_box.clone(),
            n_outputs: self.outputs.len(),
        };
        layout.validate()?;
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Affine, Node, PLAN_VERSION};

    fn plan() -> Plan {
        let node = |terms| Node { input: Affine { terms, bias: 0.0 }, coeffs: vec![0.0, 1.0], layer: "l".into() };
        Plan {
            version: PLAN_VERSION,
            n_inputs: 2,
            input_box: vec![(10.0, 30.0), (5.0, 5.0)],
            nodes: vec![node(vec![(0, 1.0)]), node(vec![(1, 1.0)])],
            outputs: vec![Affine { terms: vec![(2, 1.0), (3, 1.0)], bias: 0.0 }],
        }
    }

    #[test]
    fn the_layout_counts_ciphertexts_and_maps_inputs_like_the_plan() {
        let p = plan();
        let ring = Ring { log_n: 14, k: 400 };
        let batch = p.client_layout(ring, Packing::BatchMajor).unwrap();
        assert_eq!((batch.samples_per_ciphertext, batch.block, batch.n_outputs), (8192, 1, 1));
        assert_eq!(batch.client_inputs(&[25.0, 7.0]), p.client_inputs(&[25.0, 7.0]));
        assert_eq!(batch.ciphertexts(1000, 2).unwrap(), 2);
        assert!(batch.ciphertexts(8193, 2).unwrap_err().to_string().contains("8193 samples for 8192 slots"));
        let mut bad = batch.clone();
        bad.block = 3;
        assert!(bad.validate().is_err());
        bad = batch.clone();
        bad.input_box[0] = (f64::NAN, 1.0);
        assert!(bad.validate().unwrap_err().to_string().contains("input 0"));
    }
}

//! Cleartext runs of a circuit over many samples: the interpreter (`fhec_runtime::simulate`, the
//! oracle) or the JIT's machine code (`fhec-jit`). Both give bit-identical results, noise included
//! (one noise stream, drawn in the same order), so the choice is only about time.
//!
//! The JIT runs a circuit ~1.7-2x faster than the interpreter but compiles it first, at ~7 us per
//! affine term (the CNN: 54,547 terms, 0.38 s); `Engine::Auto` takes it only when the runs at hand
//! repay that (`cargo bench -p fhec-benches --bench simulate` measures all three numbers).

use crate::{LowerError, Postprocess, encode};
use fhec_ir::{Module, Tensor};
use fhec_jit::Jit;
use fhec_runtime::{Circuit, InputCode, Noise, OutputCode};

/// Which engine runs the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Engine {
    /// The JIT when the expected number of runs repays its compile time, else the interpreter.
    #[default]
    Auto,
    /// The JIT (the interpreter, with a warning, for a circuit the JIT does not take).
    Jit,
    Interpreter,
}

/// Measured on the project's machine (single thread, corpus CNN and MLP): JIT compile time per affine
/// term plus a fixed cost per circuit, and the time per term and run each engine takes.
const JIT_COMPILE_NS_PER_TERM: f64 = 7_000.0;
const JIT_COMPILE_NS_FIXED: f64 = 2_000_000.0;
const INTERPRETER_NS_PER_TERM: f64 = 0.85;
const JIT_NS_PER_TERM: f64 = 0.45;

/// Whether compiling `circuit` to run it `runs` times takes less time than interpreting it.
pub fn jit_pays(circuit: &Circuit, runs: usize) -> bool {
    let terms = (circuit.pbs.iter().map(|p| p.input.terms.len()).sum::<usize>()
        + circuit.outputs.iter().map(|o| o.terms.len()).sum::<usize>()
        + circuit.pbs.len()) as f64;
    let saved = runs as f64 * terms * (INTERPRETER_NS_PER_TERM - JIT_NS_PER_TERM);
    saved > JIT_COMPILE_NS_FIXED + terms * JIT_COMPILE_NS_PER_TERM
}

pub struct Simulator<'c> {
    circuit: &'c Circuit,
    jit: Option<Jit>,
}

impl<'c> Simulator<'c> {
    /// A simulator for about `runs` runs of `circuit`. When the JIT was required but cannot take the
    /// circuit, the interpreter and the reason (for the caller to warn with; the results are the
    /// same, only slower).
    pub fn new(circuit: &'c Circuit, engine: Engine, runs: usize) -> (Simulator<'c>, Option<String>) {
        let want = match engine {
            Engine::Interpreter => false,
            Engine::Jit => true,
            Engine::Auto => jit_pays(circuit, runs),
        };
        if !want {
            return (Simulator { circuit, jit: None }, None);
        }
        match Jit::compile(circuit) {
            Ok(j) => (Simulator { circuit, jit: Some(j) }, None),
            Err(e) => (Simulator { circuit, jit: None }, Some(format!("{e}; simulating with the interpreter"))),
        }
    }

    /// "jit" or "interpreter".
    pub fn engine(&self) -> &'static str {
        if self.jit.is_some() { "jit" } else { "interpreter" }
    }

    /// Output accumulators of `samples` encoded samples (inputs and outputs one sample after the other).
    pub fn run(&self, inputs: &[i64], samples: usize, noise: Noise<'_>) -> Result<Vec<i64>, LowerError> {
        if let Some(j) = &self.jit {
            return Ok(j.run(inputs, samples, noise)?);
        }
        let n = self.circuit.n_inputs;
        if inputs.len() != n * samples {
            return Err(fhec_runtime::RuntimeError::InputCount { expected: n * samples, got: inputs.len() }.into());
        }
        let mut sampler = fhec_runtime::NoiseSampler::new(self.circuit.params, noise);
        let mut out = Vec::with_capacity(samples * self.circuit.outputs.len());
        for s in 0..samples {
            out.extend(fhec_runtime::simulate_sampled(self.circuit, &inputs[s * n..(s + 1) * n], &mut sampler)?);
        }
        Ok(out)
    }

    /// Encodes every sample, runs them, and decodes each sample's outputs with the post-processing.
    pub fn predict(
        &self,
        preprocess: Option<&Module>,
        inputs: &[InputCode],
        outputs: &[OutputCode],
        postprocess: &Module,
        xs: &[Tensor],
        noise: Noise<'_>,
    ) -> Result<Vec<Vec<Tensor>>, LowerError> {
        let mut encoded = Vec::with_capacity(xs.len() * inputs.len());
        for x in xs {
            encoded.extend(encode(preprocess, inputs, x)?);
        }
        let acc = self.run(&encoded, xs.len(), noise)?;
        let post = Postprocess::new(postprocess)?;
        acc.chunks(outputs.len().max(1)).take(xs.len()).map(|a| post.decode(outputs, a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhec_runtime::{Affine, ParamSet, Pbs, Table};

    fn circuit(terms: usize) -> Circuit {
        let params = ParamSet::P1024;
        Circuit {
            params,
            n_inputs: terms,
            pbs: vec![Pbs {
                input: Affine { terms: (0..terms as u32).map(|w| (w, 3)).collect(), bias: 0 },
                table: 0,
                noise_std: 0.0,
                layer: 0,
            }],
            tables: vec![Table { values: vec![0; params.positions()] }],
            outputs: vec![Affine { terms: vec![(terms as u32, 1)], bias: 0 }],
            layers: vec!["l".into()],
        }
    }

    #[test]
    fn auto_takes_the_jit_only_for_enough_runs() {
        let c = circuit(50_000);
        assert!(!jit_pays(&c, 2_000));
        assert!(jit_pays(&c, 100_000));
        assert_eq!(Simulator::new(&c, Engine::Auto, 2_000).0.engine(), "interpreter");
        assert_eq!(Simulator::new(&c, Engine::Auto, 100_000).0.engine(), "jit");
        assert_eq!(Simulator::new(&c, Engine::Jit, 1).0.engine(), "jit");
        assert_eq!(Simulator::new(&c, Engine::Interpreter, 1 << 30).0.engine(), "interpreter");
    }
}

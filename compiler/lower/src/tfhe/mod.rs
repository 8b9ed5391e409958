//! The TFHE backend of the pipeline: the prepared neuron graph integerized into a circuit of
//! leveled forms and bootstraps (`scale`), and the search that chooses the parameter set and
//! precision by measured accuracy (`search`). Its peer is [`crate::ckks`], of the same shape:
//! `Search`, `Trial`, `Choice`, `Compiled`, `choose`.

mod search;
#[cfg(test)]
mod tests;

pub use crate::scale::{Options, TableRanges};
pub use search::{Choice, Progress, Search, Trial, choose};

use crate::{Calibration, InputCode, OutputCode};
use crate::{Engine, LowerError, Prepared, Simulator, decode, encode, optimize};
use fhec_ir::{Module, Tensor};
use fhec_runtime::{Circuit, Noise};

/// A compiled model: the server's circuit and the client's encoding and post-processing.
pub struct Compiled {
    pub circuit: Circuit,
    /// Per bootstrap, how many times narrower its table's input range is than the interval bound
    /// (see [`TableRanges`]).
    pub narrowing: Vec<f64>,
    /// Under calibrated ranges, how often a table read leaves its window on calibration samples the
    /// windows were not built from (windows from the even-numbered samples, reads of the odd-numbered
    /// ones): reads outside, reads.
    pub held_out: (usize, usize),
    /// The client's pre-processing (see `head`): input the model's input, output `pre_0`, what the
    /// input codes encode. `None`: the input is encoded as it is.
    pub preprocess: Option<Module>,
    pub inputs: Vec<InputCode>,
    pub outputs: Vec<OutputCode>,
    /// The client's post-processing: inputs `frontier_<k>` (the decrypted circuit outputs), the model's
    /// outputs. It holds no weights.
    pub postprocess: Module,
}

/// Compiles with the default optimizer settings.
pub fn compile(module: &Module, calibration: &Calibration, opts: &Options) -> Result<Compiled, LowerError> {
    Prepared::new(module, calibration, &optimize::Config::default())?.tfhe(opts)
}

impl Prepared {
    /// Integerizes the prepared graph under `opts`: a TFHE circuit and the client's codes.
    pub fn tfhe(&self, opts: &Options) -> Result<Compiled, LowerError> {
        let i = crate::scale::integerize(&self.neurons, opts)?;
        Ok(Compiled {
            circuit: i.circuit,
            narrowing: i.narrowing,
            held_out: i.held_out,
            preprocess: self.preprocess.clone(),
            inputs: i.inputs,
            outputs: i.outputs,
            postprocess: self.postprocess.clone(),
        })
    }
}

impl Compiled {
    /// Quantizes and encodes one input sample (shaped like the model input) for the circuit.
    pub fn encode(&self, x: &Tensor) -> Result<Vec<i64>, LowerError> {
        encode(self.preprocess.as_ref(), &self.inputs, x)
    }

    /// Decodes the circuit's outputs and runs the client's post-processing: the model's outputs.
    pub fn decode(&self, acc: &[i64]) -> Result<Vec<Tensor>, LowerError> {
        decode(&self.outputs, &self.postprocess, acc)
    }

    /// Encode, run the circuit in the clear (with the stated noise, or none), decode.
    pub fn simulate(&self, x: &Tensor, noise: Noise<'_>) -> Result<Vec<Tensor>, LowerError> {
        let acc = fhec_runtime::simulate(&self.circuit, &self.encode(x)?, noise)?;
        self.decode(&acc)
    }

    /// Encode, run and decode about `runs` samples (see [`Simulator`]).
    pub fn simulator(&self, engine: Engine, runs: usize) -> (Simulator<'_>, Option<String>) {
        Simulator::new(&self.circuit, engine, runs)
    }

    /// [`Compiled::simulate`] over many samples with `sim` (made by [`Compiled::simulator`]), one noise
    /// stream for all: the same results as simulating them one after the other. `pre` are the samples
    /// after the client's pre-processing ([`Prepared::preprocessed`], done once for all candidates).
    pub fn simulate_all(
        &self,
        sim: &Simulator<'_>,
        pre: &[Tensor],
        noise: Noise<'_>,
    ) -> Result<Vec<Vec<Tensor>>, LowerError> {
        sim.predict(None, &self.inputs, &self.outputs, &self.postprocess, pre, noise)
    }

    pub fn pbs_count(&self) -> usize {
        self.circuit.pbs.len()
    }
}

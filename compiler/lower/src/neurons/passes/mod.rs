//! Passes over the neuron graph: each is a name and a rewrite of [`Neurons`] in place, one file
//! per pass (its header says what it expects, guarantees and takes). [`PASSES`] is the registry the
//! pipeline and the filetests (`testsuite/filetests/<name>/`) look passes up in by name;
//! [`run`] verifies the graph after a pass in debug builds (and so in tests).

mod compose_table_chains;
mod elide_affine_tables;

pub use compose_table_chains::ComposeTableChains;
pub use elide_affine_tables::ElideAffineTables;

use crate::LowerError;
use crate::neurons::Neurons;

/// A rewrite of the neuron graph.
pub trait NeuronPass: Sync {
    /// The pass's kebab-case name, as the registry, reports and filetests spell it.
    fn name(&self) -> &'static str;

    /// Rewrites `net` in place; returns how many tables it removed or changed.
    fn run(&self, net: &mut Neurons) -> usize;
}

/// Every neuron pass, in the order the pipeline runs those it runs.
pub const PASSES: &[&dyn NeuronPass] = &[&ElideAffineTables, &ComposeTableChains];

/// The pass named `name`, if there is one.
pub fn lookup(name: &str) -> Option<&'static dyn NeuronPass> {
    PASSES.iter().copied().find(|p| p.name() == name)
}

/// The pass named `name`, or an error listing the known ones.
pub fn by_name(name: &str) -> Result<&'static dyn NeuronPass, LowerError> {
    lookup(name).ok_or_else(|| LowerError::UnknownPass {
        name: name.to_string(),
        known: PASSES.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
    })
}

/// Runs `pass` on `net` and, in debug builds, verifies the result (an invalid graph is an error
/// naming the pass). Returns what the pass returns.
pub fn run(pass: &dyn NeuronPass, net: &mut Neurons) -> Result<usize, LowerError> {
    let changed = pass.run(net);
    if cfg!(debug_assertions) {
        net.verify().map_err(|e| LowerError::AfterPass { pass: pass.name(), source: Box::new(e) })?;
    }
    Ok(changed)
}

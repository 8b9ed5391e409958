//! Cleartext simulation of corpus circuits, single thread: the JIT (`fhec-jit`) against the interpreter
//! (`fhec_runtime::simulate`), noise-free and with the noise model (what the build's precision search
//! runs thousands of times), and the JIT's compile time. `cargo bench -p fhec-benches --bench simulate`.
//! Throughput is in samples per second; the circuits are those `fhec build` chooses (1024 positions
//! for the MLP and the CNN, 512 for logistic regression).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fhec_ir::Tensor;
use fhec_jit::Jit;
use fhec_lower::tfhe::{Options, compile};
use fhec_lower::{Engine, Simulator};
use fhec_runtime::{Noise, ParamSet};
use std::hint::black_box;

fn circuits(c: &mut Criterion) {
    for (name, params) in
        [("logreg_cancer_torch", ParamSet::P512A), ("mlp_wine", ParamSet::P1024), ("cnn_digits", ParamSet::P1024)]
    {
        let dir = fhec_benches::corpus_model(name);
        let m = fhec::load_model(&dir.join("model.onnx")).expect("corpus model");
        let x = fhec::npy::read_samples(&dir.join("inputs.npy")).expect("corpus inputs");
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let xs: Vec<Tensor> = x
            .outer_iter()
            .map(|s| Tensor::from_f32(shape.clone(), s.iter().copied().collect()).expect("shaped"))
            .collect();
        let compiled = compile(
            &m,
            &fhec_lower::Calibration::from_samples(xs.clone()).unwrap(),
            &Options { params, ..Options::default() },
        )
        .expect("lowers");
        let inputs: Vec<i64> = xs.iter().flat_map(|x| compiled.encode(x).expect("encodes")).collect();
        let n = xs.len();
        let mut group = c.benchmark_group(format!("simulate/{name}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(n as u64));
        let engines = [
            ("interpreter", Simulator::new(&compiled.circuit, Engine::Interpreter, n).0),
            ("jit", Simulator::new(&compiled.circuit, Engine::Jit, n).0),
        ];
        for (engine, sim) in &engines {
            group.bench_function(BenchmarkId::new("noise-free", engine), |b| {
                b.iter(|| sim.run(black_box(&inputs), n, Noise::None).expect("runs"))
            });
            let mut rng = Noise::rng(1);
            group.bench_function(BenchmarkId::new("noisy", engine), |b| {
                b.iter(|| sim.run(black_box(&inputs), n, Noise::Gaussian(&mut rng)).expect("runs"))
            });
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function("jit compile", |b| {
            b.iter(|| Jit::compile(black_box(&compiled.circuit)).expect("compiles"))
        });
        group.finish();
    }
}

criterion_group!(benches, circuits);
criterion_main!(benches);

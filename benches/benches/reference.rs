//! Throughput of the plaintext reference interpreter on corpus models: the baseline that the
//! integer simulator and its JIT are measured against. `cargo bench -p fhec-benches`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhec_benches::corpus_model;
use std::hint::black_box;

fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference-interpreter");
    for name in ["logreg_cancer_torch", "mlp_wine", "cnn_digits"] {
        let dir = corpus_model(name);
        let module = fhec::load_model(&dir.join("model.onnx")).expect("corpus model loads");
        let x = fhec::npy::read_samples(&dir.join("inputs.npy")).expect("corpus inputs");
        group.throughput(Throughput::Elements(x.shape()[0] as u64));
        group.bench_function(name, |b| b.iter(|| fhec::predict(black_box(&module), black_box(&x)).expect("runs")));
    }
    group.finish();
}

criterion_group!(benches, reference);
criterion_main!(benches);

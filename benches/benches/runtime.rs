//! The runtime's primitives per parameter set (one bootstrap, encryption, decryption, leveled
//! multiply-adds) and whole encrypted runs of corpus models. `cargo bench -p fhec-benches --bench runtime`.
//! `fhec bench DIR` gives the per-model table of BENCHMARKS.md (latency, throughput, physical limit).

use criterion::{Criterion, criterion_group, criterion_main};
use fhec_runtime::fhe;
use fhec_runtime::{Affine, Circuit, ParamSet};
use std::hint::black_box;

fn single_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool")
}

fn primitives(c: &mut Criterion) {
    let one = single_thread();
    for params in ParamSet::ALL {
        let mut group = c.benchmark_group(format!("runtime/{}", params.name()));
        group.sample_size(10);
        let (sk, ek) = fhe::keygen(params);
        let ek = ek.decompress();
        let bootstrap = Circuit::identity_bootstraps(params, 1);
        let x1 = sk.encrypt(&[0]);
        group.bench_function("keyswitch+bootstrap (1 thread)", |b| {
            b.iter(|| one.install(|| fhe::run_batch(&bootstrap, &ek, black_box(&x1), 1).expect("runs")))
        });
        let values: Vec<i64> = (0..64).map(|i| i << 50).collect();
        group.bench_function("encrypt 64 values", |b| b.iter(|| sk.encrypt(black_box(&values))));
        let leveled = Circuit {
            params,
            n_inputs: 64,
            pbs: vec![],
            tables: vec![],
            outputs: (0..10)
                .map(|o| Affine { terms: (0..64).map(|i| (i, (i as i64 * 7 + o) % 31 - 15)).collect(), bias: 0 })
                .collect(),
            layers: vec![],
        };
        let x64 = sk.encrypt(&values);
        group.bench_function("expand 64 inputs + 640 leveled multiply-adds", |b| {
            b.iter(|| one.install(|| fhe::run_batch(&leveled, &ek, black_box(&x64), 1).expect("runs")))
        });
        let out = one.install(|| fhe::run_batch(&leveled, &ek, &x64, 1).expect("runs"));
        group.bench_function("decrypt 10 values", |b| b.iter(|| sk.decrypt(black_box(&out))));
        group.finish();
    }
}

fn models(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypted-run");
    group.sample_size(10);
    for name in ["logreg_cancer_torch", "mlp_wine", "cnn_digits"] {
        let dir = fhec_benches::corpus_model(name);
        let x = fhec::npy::read_samples(&dir.join("inputs.npy")).expect("corpus inputs");
        let out = tempfile::tempdir().expect("temp dir");
        let build = out.path().join("build");
        fhec::tfhe::build(&dir.join("model.onnx"), Some(&x), &build, &Default::default(), |_| ()).expect("builds");
        let (client, _) = fhec::tfhe::load_client(&build).expect("client");
        let (server, digest) = fhec::tfhe::load_server(&build).expect("server");
        let (sk, ek) = fhe::keygen(client.params);
        let (_, fp) = fhec_runtime::artifact::eval_key_bytes(&ek);
        let ek = ek.decompress();
        let first = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1)).to_owned();
        let cts = fhec::tfhe::encrypt(&client, &sk, &fp, &first).expect("encrypts");
        group.bench_function(format!("{name} (server, all threads)"), |b| {
            b.iter(|| fhec::tfhe::run(&server, &digest, &ek, &fp, black_box(&cts)).expect("runs"))
        });
    }
    group.finish();
}

/// A circuit whose levels do not divide over 2 threads: a chain of 4 bootstraps beside 2 single ones
/// (levels of 3, 1, 1, 1). Level by level takes 5 bootstrap times on 2 threads; the dataflow scheduler
/// starts the chain's second bootstrap beside the third single one: 4, the depth.
fn scheduler(c: &mut Criterion) {
    let params = ParamSet::P1024;
    let (sk, ek) = fhe::keygen(params);
    let ek = ek.decompress();
    let identity = fhec_runtime::Table {
        values: (0..params.positions() as i64)
            .map(|q| (q - params.positions() as i64 / 2) << params.position_shift())
            .collect(),
    };
    let pbs = |w: u32| fhec_runtime::Pbs {
        input: Affine { terms: vec![(w, 1)], bias: 0 },
        table: 0,
        noise_std: 0.0,
        layer: 0,
    };
    // Wires 0-2 inputs; bootstraps 3, 4, 5 read them; 6 reads 3, 7 reads 6, 8 reads 7.
    let circuit = Circuit {
        params,
        n_inputs: 3,
        pbs: vec![pbs(0), pbs(1), pbs(2), pbs(3), pbs(6), pbs(7)],
        tables: vec![identity],
        outputs: vec![Affine { terms: vec![(8, 1), (4, 1), (5, 1)], bias: 0 }],
        layers: vec!["chain".into()],
    };
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
    let x = sk.encrypt(&[0, 0, 0]);
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.bench_function("chain of 4 beside 2 single bootstraps (2 threads)", |b| {
        b.iter(|| two.install(|| fhe::run_batch(&circuit, &ek, black_box(&x), 1).expect("runs")))
    });
    let bootstrap = Circuit::identity_bootstraps(params, 1);
    let x1 = sk.encrypt(&[0]);
    group.bench_function("one bootstrap (1 thread)", |b| {
        b.iter(|| two.install(|| fhe::run_batch(&bootstrap, &ek, black_box(&x1), 1).expect("runs")))
    });
    group.finish();
}

criterion_group!(benches, primitives, models, scheduler);
criterion_main!(benches);

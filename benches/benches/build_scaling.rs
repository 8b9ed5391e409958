//! Build time against graph size: `fhec build` (the library's `fhec::tfhe::build`, every stage from
//! ONNX to artifacts) on valid ONNX chains of 1,000, 10,000 and 100,000 `Relu` nodes on a
//! 4-element input, in two shapes:
//! - `tail`: the chain is the whole model, so it runs on the client (0 bootstraps; before the
//!   search simulated deterministic circuits once per sample, 20,000 nodes took 210 s);
//! - `server`: the chain feeds a `MatMul`, so it stays on the server and the optimizer fuses it.
//!
//! `cargo bench -p fhec-benches --bench build_scaling` (release). Prints, per shape and size, the
//! median of `FHEC_BENCH_RUNS` (default 3) builds and the time per node, and the ratio of the
//! largest size's time per node to the smallest's: about 1 means linear.

use prost::Message;
use std::time::{Duration, Instant};
use tract_onnx::pb;

/// A chain of `n` Relu nodes on a float [1,4] input; with `matmul`, a final MatMul by a constant [4,2].
fn chain(n: usize, matmul: bool) -> Vec<u8> {
    let value = |name: &str, dims: &[i64]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let relu_out = |i: usize| if i + 1 == n && !matmul { "y".to_string() } else { format!("r{i}") };
    let mut nodes: Vec<pb::NodeProto> = (0..n)
        .map(|i| pb::NodeProto {
            name: format!("relu{i}"),
            op_type: "Relu".into(),
            input: vec![if i == 0 { "x".into() } else { relu_out(i - 1) }],
            output: vec![relu_out(i)],
            ..Default::default()
        })
        .collect();
    let mut initializer = Vec::new();
    let out_dims: &[i64] = if matmul { &[1, 2] } else { &[1, 4] };
    if matmul {
        nodes.push(pb::NodeProto {
            name: "mm".into(),
            op_type: "MatMul".into(),
            input: vec![relu_out(n - 1), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        });
        initializer.push(pb::TensorProto {
            name: "w".into(),
            dims: vec![4, 2],
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: vec![1.0, -1.0, 0.5, 0.25, -0.5, 1.0, 2.0, 0.0],
            ..Default::default()
        });
    }
    let graph = pb::GraphProto {
        name: "chain".into(),
        node: nodes,
        initializer,
        input: vec![value("x", &[1, 4])],
        output: vec![value("y", out_dims)],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("FHEC_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let sizes = [1_000usize, 10_000, 100_000];
    // 32 calibration samples, deterministic.
    let x =
        ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[32, 4]), |i| ((i[0] * 7 + i[1] * 3) % 11) as f32 / 5.0 - 1.0);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    println!("shape    nodes    median build    per node    (runs: {runs})");
    for (shape, matmul) in [("tail", false), ("server", true)] {
        let mut per_node = Vec::new();
        for &n in &sizes {
            let model = tmp.path().join(format!("{shape}{n}.onnx"));
            std::fs::write(&model, chain(n, matmul)).expect("writing the model");
            let times: Vec<Duration> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    fhec::tfhe::build(
                        &model,
                        Some(&x),
                        &tmp.path().join("out"),
                        &fhec_lower::tfhe::Search::default(),
                        |_| (),
                    )
                    .expect("the chain builds");
                    t.elapsed()
                })
                .collect();
            let m = median(times);
            let us = m.as_secs_f64() * 1e6 / n as f64;
            per_node.push(us);
            println!("{shape:8} {n:>7} {:>12.3} s {us:>9.1} us", m.as_secs_f64());
        }
        println!(
            "{shape:8} time per node at {} nodes / at {} nodes: {:.2}",
            sizes[sizes.len() - 1],
            sizes[0],
            per_node[per_node.len() - 1] / per_node[0]
        );
    }
}

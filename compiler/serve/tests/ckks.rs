//! `fhec serve` with a CKKS build beside a TFHE one (feature `ckks`, nightly: `cargo +nightly test
//! -p fhec-serve --features ckks`). On loopback: 1,000 wine samples in one request decrypt to the
//! cleartext CKKS simulation's classes, a TFHE model answers beside it, and keys or ciphertexts of
//! the other scheme, another key or another size are refused with the right 4xx.
#![cfg(feature = "ckks")]

use fhec::keyfile::Protection;
use fhec::scheme::{self, Options, Scheme};
use fhec_serve::client::Remote;
use fhec_serve::roundtrip::{self, Session};
use fhec_serve::{App, Auth, Config};
use ndarray::{ArrayD, Axis};
use std::path::{Path, PathBuf};

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testsuite/models").join(path)
}

/// The first `n` samples of `model`'s test inputs, cycling.
fn samples(model: &str, n: usize) -> ArrayD<f32> {
    let x = fhec::npy::read_samples(&corpus(&format!("{model}/inputs.npy"))).unwrap();
    let rows: Vec<_> = (0..n).map(|i| x.index_axis(Axis(0), i % x.shape()[0])).collect();
    ndarray::stack(Axis(0), &rows).unwrap()
}

fn build(model: &str, dir: &Path, scheme: Scheme) {
    let cal = fhec::npy::read_samples(&corpus(&format!("{model}/inputs.npy"))).unwrap();
    let opts = Options { scheme, ..Options::default() };
    scheme::build(&corpus(&format!("{model}/model.onnx")), Some(&cal), dir, &opts, |_| ()).unwrap();
}

fn classes(outputs: &[(String, fhec::Stacked)]) -> Vec<i64> {
    fhec::metrics::predicted_classes(&outputs[0].1).unwrap()
}

/// The status line of a refused request, as the client reports it.
fn refused(e: fhec_serve::ServeError, status: &str, says: &str) {
    let text = e.to_string();
    assert!(text.contains(status) && text.contains(says), "expected {status} saying {says:?}: {text}");
}

#[test]
fn ckks_and_tfhe_builds_served_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    build("mlp_wine", &p("wine.fhec"), Scheme::Ckks);
    build("mlp_iris_skl", &p("iris.fhec"), Scheme::Tfhe);
    for keys in ["wine-keys", "other-wine-keys"] {
        fhec::ckks::deploy::keygen(&p("wine.fhec"), &p(keys), &Protection::None).unwrap();
    }
    let (iris_client, _) = fhec::tfhe::load_client(&p("iris.fhec")).unwrap();
    fhec::tfhe::keygen(&p("iris-keys"), iris_client.params, &Protection::None).unwrap();
    let models = vec![("wine".to_string(), p("wine.fhec")), ("iris".to_string(), p("iris.fhec"))];
    let mut config = Config::new(models, p("store"), Auth::Anonymous);
    config.max_ckks_samples = 1000;
    let app = App::new(config).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (listener, addr) = fhec_serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(fhec_serve::serve(app, listener, async move {
            let _ = stopped.await;
        }));
        let remote = Remote::new(&format!("http://{addr}"), None, None).unwrap();

        let listed = remote.models().await.unwrap();
        let wine_info = listed.iter().find(|m| m.name == "wine").unwrap();
        assert_eq!((wine_info.scheme.as_str(), wine_info.samples_per_ciphertext), ("ckks", Some(8192)));
        assert_eq!(wine_info.max_samples, 1000);
        assert_eq!(listed.iter().find(|m| m.name == "iris").unwrap().scheme, "tfhe");

        // 1,000 samples, one request: the simulation's classes.
        let wine = Session::load(&p("wine.fhec"), &p("wine-keys"), &Protection::None).unwrap();
        assert_eq!(wine.default_batch(), 8192);
        let x = samples("mlp_wine", 1000);
        let run = roundtrip::predict(&remote, "wine", &wine, &x, wine.default_batch(), |_| ()).await.unwrap();
        assert_eq!(run.requests, 1);
        let sim = wine.simulate(&p("wine.fhec"), &x).unwrap();
        assert_eq!(classes(&run.outputs), classes(&sim), "encrypted classes are the simulation's");

        // The TFHE model beside it.
        let iris = Session::load(&p("iris.fhec"), &p("iris-keys"), &Protection::None).unwrap();
        let xi = samples("mlp_iris_skl", 3);
        let run_iris = roundtrip::predict(&remote, "iris", &iris, &xi, 16, |_| ()).await.unwrap();
        assert_eq!(classes(&run_iris.outputs), classes(&iris.simulate(&p("iris.fhec"), &xi).unwrap()));

        // Keys of one scheme, ciphertexts of the other, another key, too many samples, damaged bodies.
        let wine_key = run.key_id.clone();
        let iris_key = run_iris.key_id.clone();
        let body = wine.encrypt(&samples("mlp_wine", 4)).unwrap();
        refused(
            remote.infer("iris", &wine_key, body.clone()).await.unwrap_err(),
            "422",
            "is for the CKKS ring and rotations ckks-2^14",
        );
        refused(
            remote.infer("wine", &iris_key, body.clone()).await.unwrap_err(),
            "422",
            "needs the CKKS ring and rotations ckks-2^14",
        );
        let other = Session::load(&p("wine.fhec"), &p("other-wine-keys"), &Protection::None).unwrap();
        let other_key = remote.register_key(other.eval_key.clone()).await.unwrap().id;
        refused(
            remote.infer("wine", &other_key, body.clone()).await.unwrap_err(),
            "422",
            "encrypted for key fingerprint",
        );
        refused(
            remote.infer("wine", &wine_key, iris.encrypt(&xi).unwrap()).await.unwrap_err(),
            "400",
            "holds TFHE input ciphertexts (`fhec encrypt`); expected CKKS input",
        );
        refused(
            remote.infer("wine", &wine_key, body[..body.len() / 2].to_vec()).await.unwrap_err(),
            "400",
            "truncated",
        );
        let too_many = wine.encrypt(&samples("mlp_wine", 1001)).unwrap();
        refused(remote.infer("wine", &wine_key, too_many).await.unwrap_err(), "413", "1 to 1000");
        refused(
            remote.register_key(wine.eval_key[..wine.eval_key.len() / 2].to_vec()).await.unwrap_err(),
            "400",
            "truncated",
        );
        // Still answering correctly after all that.
        let again = remote.infer("wine", &wine_key, body).await.unwrap().0;
        assert_eq!(classes(&wine.decrypt(&again).unwrap()), classes(&sim)[..4]);

        let _ = stop.send(());
        task.await.unwrap().unwrap();
    });
}

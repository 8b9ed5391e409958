//! The generated CKKS module: a batch of samples in, a batch of predictions out. Without the `ckks`
//! feature the plan runs in the clear (`simulate_batch`) and making keys says what to enable; with
//! it (`cargo +nightly test -p wine-service --features ckks`), 1,000 samples travel encrypted through
//! bytes and decrypt to the simulation's classes.

use wine_service::wine_ckks;

fn samples(n: usize) -> Vec<wine_ckks::Input> {
    let x: ndarray::Array2<f32> =
        ndarray_npy::read_npy(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testsuite/models/mlp_wine/inputs.npy"))
            .unwrap();
    (0..n).map(|i| x.row(i % x.nrows()).to_vec().try_into().unwrap()).collect()
}

fn labels() -> Vec<i64> {
    ndarray_npy::read_npy::<_, ndarray::Array1<i64>>(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testsuite/models/mlp_wine/labels.npy"
    ))
    .unwrap()
    .to_vec()
}

fn argmax(v: &[f32; 3]) -> usize {
    (0..3).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

#[test]
fn the_plan_in_the_clear_classifies_the_test_set() {
    assert_eq!((wine_ckks::SCHEME, wine_ckks::INPUT_LEN), ("ckks", 13));
    assert_eq!(wine_ckks::SAMPLES_PER_CIPHERTEXT, 8192);
    let server = wine_ckks::Server::new().unwrap();
    let labels = labels();
    let got = server.simulate_batch(&samples(labels.len())).unwrap();
    let right = got.iter().zip(&labels).filter(|(p, l)| argmax(&p.output) as i64 == **l).count();
    assert!(right * 100 >= labels.len() * 95, "{right} of {} right", labels.len());
}

#[cfg(not(feature = "ckks"))]
#[test]
fn without_the_feature_keys_say_what_to_enable() {
    let err = wine_ckks::Client::new().err().unwrap().to_string();
    assert!(err.contains("`ckks` feature") && err.contains("nightly"), "{err}");
}

#[cfg(feature = "ckks")]
#[test]
fn a_batch_travels_encrypted_and_decrypts_to_the_simulation() {
    let (client, key) = wine_ckks::Client::new().unwrap();
    let server = wine_ckks::Server::new().unwrap();
    let key = wine_ckks::EvalKey::from_bytes(key.to_bytes()).unwrap();
    let xs = samples(1000);
    let query = wine_ckks::Ciphertexts::from_bytes(&client.encrypt_batch(&xs).unwrap().to_bytes()).unwrap();
    assert_eq!(query.samples(), 1000);
    let answer = wine_ckks::Results::from_bytes(&server.run(&key, &query).unwrap().to_bytes()).unwrap();
    let got = client.decrypt(&answer).unwrap();
    let want = server.simulate_batch(&xs).unwrap();
    assert_eq!(got.len(), 1000);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(argmax(&g.output), argmax(&w.output), "{g:?} vs {w:?}");
    }
    // A restored client decrypts the same answer; another client's key is refused.
    let restored = wine_ckks::Client::load(&client.secret_bytes(), key.to_bytes()).unwrap();
    assert_eq!(restored.decrypt(&answer).unwrap(), got);
    let (_, other) = wine_ckks::Client::new().unwrap();
    let err = server.run(&other, &query).err().unwrap().to_string();
    assert!(err.contains("evaluation key"), "{err}");
}

//! Training jobs through `fhec serve` on loopback (feature `ckks`, nightly: `cargo +nightly test -p
//! fhec-serve --features ckks --test training`). A data owner uploads its key and an encrypted set;
//! every round of the service returns exactly the state the split deployment's `fhec run` computes
//! from the same input, so the data owner decrypts the same weights as the local run; a shutdown in
//! the middle of a round loses nothing (the round runs again after the restart); the weights are the
//! cleartext simulation's within CKKS' error. Other tenants, other keys, states out of turn and inference requests on a
//! training plan are refused with the right 4xx.
#![cfg(feature = "ckks")]

use fhec::keyfile::Protection;
use fhec::train::deploy::{self, Owner, PlanFile, Trainable};
use fhec::train::{Dataset, Hyper, Task, TrainPlan};
use fhec_serve::client::Remote;
use fhec_serve::jobs::Status;
use fhec_serve::{App, Auth, Config, roundtrip};
use std::collections::HashMap;
use std::time::Duration;

/// `n` samples of `d` features, the first two informative, labels 0/1.
fn data(n: usize, d: usize) -> Dataset {
    let mut s = 7u64;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let x: Vec<Vec<f64>> = (0..n).map(|_| (0..d).map(|_| 3.0 * next() + 1.0).collect()).collect();
    let y = x.iter().map(|r| f64::from(1.5 * r[0] - r[1] + 0.5 * next() > 1.0)).collect();
    Dataset { x, y }
}

fn refused(e: fhec_serve::ServeError, status: &str, says: &str) {
    let text = e.to_string();
    assert!(text.contains(status) && text.contains(says), "expected {status} saying {says:?}: {text}");
}

fn tokens() -> Auth {
    use sha2::Digest;
    let digest = |t: &str| -> [u8; 32] { sha2::Sha256::digest(t.as_bytes()).into() };
    Auth::Tokens(HashMap::from([
        (digest("alice-token-0123456789"), "alice".to_string()),
        (digest("bob-token-0123456789ab"), "bob".to_string()),
    ]))
}

/// Serves the plan `dir` from store `store` until the returned sender fires.
fn start(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    store: &std::path::Path,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let config = Config::new(vec![("bc".to_string(), dir.to_path_buf())], store.to_path_buf(), tokens());
    let app = App::new(config).unwrap();
    rt.block_on(async {
        let (listener, addr) = fhec_serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(fhec_serve::serve(app, listener, async move {
            let _ = stopped.await;
        }));
        (format!("http://{addr}"), stop, task)
    })
}

async fn wait_for(remote: &Remote, id: &str, status: &[Status]) -> fhec_serve::jobs::JobMeta {
    loop {
        let job = remote.job(id).await.unwrap();
        assert!(job.status != Status::Failed, "{job:?}");
        if status.contains(&job.status) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_training_job_through_the_service_trains_what_the_split_deployment_does() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    // Three iterations, one per round at ring 2^14: two refreshes through the service.
    let ds = data(60, 5);
    let hyper = Hyper { iterations: 3, ..Hyper::defaults(Task::Logistic, 5) };
    let plan = TrainPlan::at(hyper, 60, 5, Some(14)).unwrap();
    assert_eq!(plan.per_round, 1, "{plan:?}");
    deploy::write_plan(&p("plan"), &PlanFile { plan: plan.clone(), clip: 3.0 }).unwrap();
    for keys in ["keys", "other-keys"] {
        deploy::keygen(&p("plan"), &p(keys), &Protection::None).unwrap();
    }
    let owner = Owner::load(&p("plan"), &p("keys"), &Protection::None).unwrap();
    let other = Owner::load(&p("plan"), &p("other-keys"), &Protection::None).unwrap();
    let eval_key = std::fs::read(p("keys/eval.key")).unwrap();
    let (set, scaling) = owner.encrypt_set(&ds).unwrap();

    // The split deployment's first round, from the same files.
    std::fs::write(p("data"), &set).unwrap();
    let local = deploy::Server::load(&p("plan"), &p("keys/eval.key")).unwrap();
    let (local_round, done, _) = local.round(&p("data"), None, |_| ()).unwrap();
    assert_eq!(done, 1);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (url, stop, task) = start(&rt, &p("plan"), &p("store"));
    let alice = Remote::new(&url, Some("alice-token-0123456789".into()), None).unwrap();
    let bob = Remote::new(&url, Some("bob-token-0123456789ab".into()), None).unwrap();
    let (job_id, mut input) = rt.block_on(async {
        let listed = alice.models().await.unwrap();
        assert!(listed[0].training && listed[0].params.starts_with("ckks-train-2^14"), "{listed:?}");
        let key = alice.register_key(eval_key.clone()).await.unwrap();
        let other_key = alice.register_key(std::fs::read(p("other-keys/eval.key")).unwrap()).await.unwrap();

        // Refused: a set under another key, a damaged set, inference on a training plan, another tenant.
        let (other_set, _) = other.encrypt_set(&ds).unwrap();
        refused(alice.submit_job("bc", &key.id, other_set).await.unwrap_err(), "422", "another key");
        refused(alice.submit_job("bc", &key.id, set[..set.len() / 2].to_vec()).await.unwrap_err(), "400", "truncated");
        refused(alice.infer("bc", &key.id, set.clone()).await.unwrap_err(), "422", "is a training plan");
        refused(bob.submit_job("bc", &key.id, set.clone()).await.unwrap_err(), "404", "no key");
        let _ = other_key;

        let job = alice.submit_job("bc", &key.id, set.clone()).await.unwrap();
        assert_eq!((job.total, job.done), (3, 0));
        refused(bob.job(&job.id).await.unwrap_err(), "404", "no training job");
        assert!(bob.jobs().await.unwrap().is_empty());
        assert!(!bob.delete_job(&job.id).await.unwrap());

        // Round 1: the split deployment's state, bit for bit.
        let waiting = wait_for(&alice, &job.id, &[Status::Waiting]).await;
        assert_eq!((waiting.done, waiting.rounds), (1, 1));
        let state = alice.job_state(&job.id).await.unwrap();
        assert!(state == local_round, "the service's round is the split deployment's");
        // Out of turn: the state not refreshed, the set as a state, a state fetched while queued.
        refused(alice.continue_job(&job.id, state.clone()).await.unwrap_err(), "400", "refreshes a state");
        refused(alice.continue_job(&job.id, set.clone()).await.unwrap_err(), "400", "holds an encrypted training set");
        let (fresh, left) = owner.refresh_bytes(&state, "the state").unwrap();
        assert_eq!(left, 2);
        let queued = alice.continue_job(&job.id, fresh.clone()).await.unwrap();
        assert_eq!(queued.status, Status::Queued);
        refused(alice.continue_job(&job.id, fresh.clone()).await.unwrap_err(), "409", "between rounds");
        // A shutdown in the middle of round 2.
        wait_for(&alice, &job.id, &[Status::Running]).await;
        (job.id, fresh)
    });
    let _ = stop.send(());
    rt.block_on(task).unwrap().unwrap();

    // After the restart, the job runs round 2 again. Every round equals the split deployment's on
    // the same input, bit for bit, and so do the weights the data owner decrypts.
    let (url, stop, task) = start(&rt, &p("plan"), &p("store"));
    let alice = Remote::new(&url, Some("alice-token-0123456789".into()), None).unwrap();
    let served_weights = rt.block_on(async {
        let job = alice.job(&job_id).await.unwrap();
        assert!(matches!(job.status, Status::Queued | Status::Running | Status::Waiting), "{job:?}");
        assert_eq!(job.state_done, 1);
        if job.status == Status::Queued {
            assert!(job.message.as_deref().unwrap_or("").contains("interrupted"), "{job:?}");
        }
        loop {
            let job = wait_for(&alice, &job_id, &[Status::Waiting, Status::Done]).await;
            let state = alice.job_state(&job_id).await.unwrap();
            std::fs::write(p("input"), &input).unwrap();
            let (local_state, _, _) = local.round(&p("data"), Some(&p("input")), |_| ()).unwrap();
            assert!(state == local_state, "round {}: the service's state is the split deployment's", job.rounds);
            if job.status == Status::Done {
                assert_eq!((job.rounds, job.done), (3, 3));
                assert!(alice.delete_job(&job_id).await.unwrap());
                break owner.decrypt_bytes(&state, "the state", &scaling, "the scaling").unwrap().0;
            }
            input = owner.refresh_bytes(&state, "the state").unwrap().0;
            alice.continue_job(&job_id, input.clone()).await.unwrap();
        }
    });

    // The data owner's whole side in one call (key, set, refreshes, model): the simulation's
    // weights within CKKS' error.
    let trained = rt.block_on(async {
        let trained =
            roundtrip::train(&alice, "bc", &owner, eval_key, &ds, Duration::from_millis(200), |_| ()).await.unwrap();
        assert_eq!((trained.job.status, trained.job.rounds), (Status::Done, 3));
        assert!(alice.delete_job(&trained.job.id).await.unwrap());
        assert!(alice.jobs().await.unwrap().is_empty());
        trained
    });
    let _ = stop.send(());
    rt.block_on(task).unwrap().unwrap();
    let plan_served = Trainable::load(&p("plan")).unwrap();
    let x = fhec::train::Scaling::fit(&ds, Task::Logistic, 3.0);
    let (simulated, _) = plan_served.plan().simulate(&x.features(&ds.x), &x.targets(&ds.y)).unwrap();
    let scale = simulated.iter().fold(0.0f64, |m, b| m.max(b.abs()));
    for weights in [&served_weights, &trained.weights] {
        let gap = weights.iter().zip(&simulated).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap <= 1e-3 * scale.max(1.0), "encrypted {weights:?} vs simulated {simulated:?}");
    }
    assert!(trained.onnx.len() > 100);
}

//! The service's Prometheus metrics: requests and latency per route, admission, samples, bootstraps, cached keys.

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub(crate) route: String,
}

pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<RouteLabels, Counter>,
    pub(crate) latency: Family<RouteLabel, Histogram>,
    pub(crate) rejected: Counter,
    pub(crate) queue_depth: Gauge,
    pub(crate) running: Gauge,
    pub(crate) samples: Counter,
    pub(crate) pbs: Counter,
    pub(crate) keys_cached: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fhec");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
        });
        let (rejected, queue_depth, running, samples, pbs, keys_cached) = (
            Counter::default(),
            Gauge::default(),
            Gauge::default(),
            Counter::default(),
            Counter::default(),
            Gauge::default(),
        );
        registry.register("requests", "HTTP requests by route and status", requests.clone());
        registry.register("request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register(
            "rejected_overload",
            "requests refused with 429 because the queue was full",
            rejected.clone(),
        );
        registry.register("queue_depth", "admitted requests waiting for a worker", queue_depth.clone());
        registry.register("jobs_running", "requests being evaluated", running.clone());
        registry.register("samples", "samples evaluated", samples.clone());
        registry.register("pbs", "programmable bootstraps evaluated (rate() gives PBS/s)", pbs.clone());
        registry.register("keys_cached", "decompressed evaluation keys in memory", keys_cached.clone());
        Metrics { registry, requests, latency, rejected, queue_depth, running, samples, pbs, keys_cached }
    }
}

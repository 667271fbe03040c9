//! No replica past the hardware: on the CPU the server's forward passes run
//! on `cores / intra_op_threads` compute threads shared by every model, and
//! no deployment scales past them. Checked on every shipped config at
//! several core counts, and end to end on `/v1/models`.

mod common;

use std::path::PathBuf;

use common::{models_config, start};
use example_multi_model::compute::Compute;
use example_multi_model::Config;

fn shipped_configs() -> Vec<(PathBuf, Config)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    let mut configs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let config = Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, config)
        })
        .collect();
    configs.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(configs.len() >= 5, "the shipped configs: {configs:?}");
    configs
}

/// The threads each CPU forward pass runs at once, over every deployment,
/// never exceed the cores (when each deployment's intra-op threads fit in
/// them), and no deployment may scale past the passes that run at once.
#[test]
fn no_shipped_config_oversubscribes_the_cores() {
    for (path, mut config) in shipped_configs() {
        for cores in [1usize, 2, 4, 16] {
            config.server.cores = std::num::NonZeroUsize::new(cores);
            let compute = Compute::new(&config, |_| false).unwrap();
            let name = format!("{} at {cores} cores", path.display());
            if let Some(e) = compute.executor() {
                assert!(e.threads() * e.intra_op_threads() <= cores, "{name}: {e:?}");
                assert!(e.intra_op_threads() <= cores, "{name}: {e:?}");
            }
            for d in config.deployments() {
                let clipped = compute.clip(d, false);
                let Some(limit) = compute.parallelism(d, false) else {
                    assert!(d.is_identity());
                    assert_eq!(clipped.replicas.max, d.replicas.max);
                    continue;
                };
                assert!(clipped.replicas.max <= limit, "{name}: {}", d.name);
                assert!(clipped.replicas.min <= clipped.replicas.max, "{name}");
                let threads = clipped.replicas.max as usize
                    * compute.executor().map_or(1, |e| e.intra_op_threads());
                assert!(threads <= cores, "{name}: {}", d.name);
                if d.replicas.max > limit {
                    assert_eq!(clipped.replicas.configured_max, Some(d.replicas.max));
                } else {
                    assert_eq!(clipped.replicas.configured_max, None);
                }
            }
        }
    }
}

/// The demo on CI's two cores: MiniLM and ResNet-50 ask for two replicas of
/// two intra-op threads; one pass of two threads fills the cores, so both
/// are clipped to one.
#[test]
fn the_demo_on_two_cores_runs_one_pass_at_a_time() {
    let (_, mut config) = shipped_configs()
        .into_iter()
        .find(|(p, _)| p.ends_with("demo.toml"))
        .expect("config/demo.toml");
    config.server.cores = std::num::NonZeroUsize::new(2);
    let compute = Compute::new(&config, |_| false).unwrap();
    let e = compute.executor().expect("CPU models");
    assert_eq!((e.threads(), e.intra_op_threads()), (1, 2));
    for name in ["minilm", "resnet50"] {
        let d = config.deployments().find(|d| d.name == name).unwrap();
        assert_eq!(d.replicas.max, 2, "the file asks for 2");
        let clipped = compute.clip(d, false);
        assert_eq!(
            (clipped.replicas.max, clipped.replicas.configured_max),
            (1, Some(2))
        );
    }
    // With eight cores, four passes of two threads run at once.
    config.server.cores = std::num::NonZeroUsize::new(8);
    let compute = Compute::new(&config, |_| false).unwrap();
    let d = config.deployments().find(|d| d.name == "minilm").unwrap();
    assert_eq!(compute.clip(d, false).replicas.max, 2);
    // On a GPU, a fraction of 0.15 of 4 compute slots admits one replica.
    assert_eq!(compute.parallelism(d, true), Some(1));
}

/// `/v1/models` shows the effective maximum and the configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_models_shows_the_effective_max() {
    let config = models_config(&["minilm"], "cores = 1\n").replace(
        "[deployment.device]",
        "[deployment.replicas]\nmin = 1\nmax = 3\n[deployment.device]",
    );
    let running = start(&config).await;
    let models = running.models().await;
    let minilm = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "minilm")
        .unwrap();
    assert_eq!(minilm["replicas"]["max"], 1, "{minilm}");
    assert_eq!(minilm["replicas"]["configured_max"], 3, "{minilm}");
    running.shutdown().await;
}

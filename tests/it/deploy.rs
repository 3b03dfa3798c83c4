//! What can't run here (Docker, Kubernetes, systemd) is checked against the gateway's defaults.

use std::path::Path;

use serde_yaml::Value;

use crate::support::{check, check_with_env, Checked};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .expect("a file of the repo")
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).expect("YAML")
}

fn port(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .expect("a port")
        .parse()
        .expect("a port number")
}

#[test]
fn the_kubernetes_manifests_match_the_gateway() {
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let gateway = cm["data"]["gateway.yaml"].as_str().unwrap();
    let cfg: Value = serde_yaml::from_str(gateway).unwrap();

    // The ConfigMap's gateway.yaml is one the gateway accepts, given the token; without it, it
    // is refused (the admin port listens beyond loopback).
    let gateway = gateway.replace("api.default.svc.cluster.local", "127.0.0.1");
    let Checked {
        code, stderr: err, ..
    } = check_with_env(&gateway, &[("ADMIN_TOKEN", "from-the-secret")]);
    assert_eq!(code, 0, "{err}");
    let Checked {
        code, stderr: err, ..
    } = check(&gateway);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`ADMIN_TOKEN` is not set"), "{err}");
    assert_eq!(cfg["admin"]["token"], "${ADMIN_TOKEN}");

    let dep = yaml("deploy/kubernetes/deployment.yaml");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let admin = port(cfg["admin"]["listen"].as_str().unwrap());
    let listen = port(cfg["listen"].as_str().unwrap());
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_u64(), Some(admin));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"].as_u64(), Some(admin));
    let ports: Vec<u64> = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert!(
        ports.contains(&listen) && ports.contains(&admin),
        "{ports:?}"
    );
    assert!(
        cfg["admin"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0:"),
        "probes come from outside"
    );

    // The token comes from a Secret; the probes need none.
    let env = c["env"].as_sequence().unwrap();
    let token = env
        .iter()
        .find(|e| e["name"] == "ADMIN_TOKEN")
        .expect("ADMIN_TOKEN");
    assert!(
        token["valueFrom"]["secretKeyRef"]["name"].is_string(),
        "{token:?}"
    );

    // Mounted as a directory (hot reload needs the symlink swap), where the image looks.
    let mount = &c["volumeMounts"][0];
    assert!(mount.get("subPath").is_none());
    let dockerfile = read("deploy/Dockerfile");
    let mount_path = mount["mountPath"].as_str().unwrap();
    assert!(dockerfile.contains(&format!("\"{mount_path}/gateway.yaml\"")));

    // Kubernetes waits longer than the gateway's own grace.
    let grace = humantime::parse_duration(cfg["shutdown"]["grace"].as_str().unwrap()).unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > grace.as_secs());

    let svc = yaml("deploy/kubernetes/service.yaml");
    let targets: Vec<u64> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].as_u64().unwrap())
        .collect();
    assert!(targets.contains(&listen), "{targets:?}");
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn the_image_is_multi_stage_and_runs_as_a_non_root_user() {
    let d = read("deploy/Dockerfile");
    assert_eq!(d.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(d.contains("cmake"), "pingora needs cmake to build");
    let user = d
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap()
        .trim();
    assert!(user != "root" && user != "0");
    assert!(d.contains("EXPOSE 8080 9090"));
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_is_hardened() {
    let u = read("deploy/systemd/sse-gateway.service");
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        // The upgrade socket's private home ($RUNTIME_DIRECTORY).
        "RuntimeDirectory=sse-gateway",
        "RuntimeDirectoryMode=0700",
    ] {
        assert!(u.lines().any(|l| l == line), "missing {line}");
    }
    let nofile: u64 = u
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(nofile >= 100_000);
    assert!(u.contains("--config /etc/sse-gateway/gateway.yaml"));
}

/// The pod's memory limit holds the ConfigMap's limits at their worst (see deployment.yaml).
#[test]
fn the_pods_memory_limit_fits_the_configmaps_connection_and_client_limits() {
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let cfg: Value = serde_yaml::from_str(cm["data"]["gateway.yaml"].as_str().unwrap()).unwrap();
    let limits = &cfg["limits"];
    let connections = limits["max_connections"]
        .as_u64()
        .expect("max_connections set");
    let clients = limits["max_clients"].as_u64().expect("max_clients set");
    let dep = yaml("deploy/kubernetes/deployment.yaml");
    let memory = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap();
    let mib: u64 = memory
        .strip_suffix("Mi")
        .expect("a limit in Mi")
        .parse()
        .unwrap();
    let (base_kb, per_connection_kb, per_client_kb) = (32_000, 52, 11);
    let worst_kb = base_kb + (connections * per_connection_kb).max(clients * per_client_kb);
    assert!(mib * 1024 >= worst_kb, "{memory} < {worst_kb} KB");
}

/// docker-compose.yaml as Compose reads it: its `<<: *gateway` merges applied.
fn compose() -> Value {
    let mut c = yaml("deploy/compose/docker-compose.yaml");
    c.apply_merge().expect("merge keys");
    c
}

const GATEWAYS: [&str; 3] = ["gateway-a", "gateway-b", "gateway-c"];

/// What `${VAR}`s the compose setup's gateway.yaml needs, as docker-compose.yaml sets them.
const COMPOSE_ENV: [(&str, &str); 3] = [
    ("SSE_NODE_ID", "gateway-a"),
    ("SSE_CLUSTER_SECRET", "at-least-16-bytes-of-secret"),
    ("ADMIN_TOKEN", "from-the-env-file"),
];

fn duration(s: &str) -> std::time::Duration {
    humantime::parse_duration(s).expect("a duration")
}

#[test]
fn the_compose_file_runs_redis_three_gateways_and_a_balancer() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let mut names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["gateway-a", "gateway-b", "gateway-c", "nginx", "redis"]
    );

    // Redis keeps nothing on disk: an empty Redis only starts a new epoch.
    let redis = &c["services"]["redis"];
    assert!(redis["image"].as_str().unwrap().starts_with("redis:7"));
    let command: Vec<&str> = redis["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command,
        ["redis-server", "--save", "", "--appendonly", "no"]
    );

    // Only the balancer is published; gateways and their admin ports stay on the network.
    assert_eq!(c["services"]["nginx"]["ports"][0], "8080:8080");
    for name in ["redis"].iter().chain(&GATEWAYS) {
        assert!(
            c["services"][name].get("ports").is_none(),
            "{name} publishes"
        );
    }

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose");
    let cfg = yaml("deploy/compose/gateway.yaml");
    let grace = duration(cfg["shutdown"]["grace"].as_str().unwrap());
    let admin = port(cfg["admin"]["listen"].as_str().unwrap());
    for name in GATEWAYS {
        let g = &c["services"][name];
        let build = &g["build"];
        let context = dir.join(build["context"].as_str().unwrap());
        assert!(context.join("Cargo.toml").exists(), "{name}: the repo root");
        assert!(context.join(build["dockerfile"].as_str().unwrap()).exists());
        // The folder is mounted where the image looks, so edits reach the watcher.
        assert_eq!(g["volumes"][0], "./:/etc/sse-gateway:ro");
        assert!(dir.join("gateway.yaml").exists());
        assert!(duration(g["stop_grace_period"].as_str().unwrap()) > grace);
        assert_eq!(g["depends_on"]["redis"]["condition"], "service_healthy");
        let probe = g["healthcheck"]["test"].as_sequence().unwrap();
        let probe = probe.last().unwrap().as_str().unwrap();
        assert!(probe.contains(&format!("127.0.0.1/{admin}")), "{probe}");
        assert!(probe.contains("GET /readyz"), "{probe}");
    }
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("\"/etc/sse-gateway/gateway.yaml\""));
}

#[test]
fn the_compose_gateways_share_prefix_and_secret_and_differ_in_node_id() {
    let c = compose();
    let env = |name: &str, var: &str| {
        c["services"][name]["environment"][var]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {var} unset"))
            .to_string()
    };
    let mut ids: Vec<String> = GATEWAYS.iter().map(|g| env(g, "SSE_NODE_ID")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for var in ["SSE_CLUSTER_SECRET", "ADMIN_TOKEN"] {
        let values: Vec<String> = GATEWAYS.iter().map(|g| env(g, var)).collect();
        assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
        // Interpolated from .env, never written here.
        assert!(values[0].starts_with(&format!("${{{var}:?")), "{var}");
    }

    // One gateway.yaml for the three: the prefix is written in it, the rest comes from them.
    let cfg = yaml("deploy/compose/gateway.yaml");
    let cluster = &cfg["cluster"];
    assert_eq!(cluster["redis"], "redis://redis:6379/0");
    assert!(cluster["prefix"].as_str().is_some_and(|p| !p.contains('$')));
    assert_eq!(cluster["node_id"], "${SSE_NODE_ID}");
    assert_eq!(cluster["key_secret"], "${SSE_CLUSTER_SECRET}");
    assert_eq!(cfg["admin"]["token"], "${ADMIN_TOKEN}");

    // The example .env holds placeholders, and the real one is never committed.
    let example = read("deploy/compose/.env.example");
    for var in ["SSE_CLUSTER_SECRET", "ADMIN_TOKEN"] {
        let line = example.lines().find(|l| l.starts_with(&format!("{var}=")));
        assert!(line.is_some_and(|l| l.contains("replace")), "{var}");
    }
    assert!(read(".gitignore")
        .lines()
        .any(|l| l == "/deploy/compose/.env"));
}

#[test]
fn the_compose_gateway_yaml_passes_check_given_its_environment() {
    let gateway = read("deploy/compose/gateway.yaml");
    let Checked {
        code, stderr: err, ..
    } = check_with_env(&gateway, &COMPOSE_ENV);
    assert_eq!(code, 0, "{err}");
    for missing in ["SSE_NODE_ID", "SSE_CLUSTER_SECRET"] {
        let env: Vec<(&str, &str)> = COMPOSE_ENV
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let Checked {
            code, stderr: err, ..
        } = check_with_env(&gateway, &env);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("`{missing}` is not set")), "{err}");
    }
}

#[test]
fn the_balancer_streams_unbuffered_to_each_gateway() {
    let conf = read("deploy/compose/nginx.conf");
    let directive = |name: &str| {
        conf.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.strip_suffix(';'))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(directive("proxy_buffering"), "off");
    assert_eq!(directive("proxy_http_version"), "1.1");
    assert_eq!(directive("listen"), "8080");
    // Far longer than the heartbeat that keeps a quiet stream alive.
    let heartbeat = std::time::Duration::from_secs(15);
    assert!(duration(directive("proxy_read_timeout")) > heartbeat * 10);
    assert!(duration(directive("proxy_send_timeout")) > heartbeat * 10);

    let cfg = yaml("deploy/compose/gateway.yaml");
    let listen = port(cfg["listen"].as_str().unwrap());
    for name in GATEWAYS {
        let server = format!("server {name}:{listen} resolve;");
        assert!(conf.lines().any(|l| l.trim() == server), "{server}");
    }
    let c = compose();
    assert_eq!(
        c["services"]["nginx"]["volumes"][0],
        "./nginx.conf:/etc/nginx/nginx.conf:ro"
    );
}

#[test]
fn the_template_unit_keeps_the_single_units_hardening_per_node_id() {
    let single = read("deploy/systemd/sse-gateway.service");
    let template = read("deploy/systemd/sse-gateway@.service");
    // Every setting of the single unit's service but the two that name one instance.
    let service = single
        .lines()
        .skip_while(|l| *l != "[Service]")
        .take_while(|l| *l != "[Install]")
        .filter(|l| l.contains('=') && !l.starts_with('#'))
        .filter(|l| !l.starts_with("ExecStart=") && !l.starts_with("RuntimeDirectory="));
    for line in service {
        assert!(template.lines().any(|l| l == line), "missing {line}");
    }
    for line in [
        "ExecStart=/usr/local/bin/sse-gateway --config /etc/sse-gateway/%i.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Environment=SSE_NODE_ID=%i",
        "RuntimeDirectory=sse-gateway/%i",
        "RuntimeDirectoryMode=0700",
        "WantedBy=multi-user.target",
    ] {
        assert!(template.lines().any(|l| l == line), "missing {line}");
    }
}

/// deploy/systemd/README.md makes b.yaml and c.yaml from a.yaml by their ports.
#[test]
fn the_systemd_example_config_passes_check_for_each_node_on_one_host() {
    let a = read("deploy/systemd/a.yaml");
    let readme = read("deploy/systemd/README.md");
    let cfg: Value = serde_yaml::from_str(&a).unwrap();
    assert_eq!(cfg["cluster"]["node_id"], "${SSE_NODE_ID}");
    for (id, listen, admin) in [("a", 8081, 9091), ("b", 8082, 9092), ("c", 8083, 9093)] {
        let file = a
            .replace("0.0.0.0:8081", &format!("0.0.0.0:{listen}"))
            .replace("127.0.0.1:9091", &format!("127.0.0.1:{admin}"));
        if id != "a" {
            assert!(readme.contains(&format!("sed 's/8081/{listen}/; s/9091/{admin}/' a.yaml")));
        }
        let env = [
            ("SSE_NODE_ID", id),
            ("SSE_CLUSTER_SECRET", "at-least-16-bytes-of-secret"),
            ("ADMIN_TOKEN", "from-a-env"),
        ];
        let Checked {
            code,
            stdout,
            stderr: err,
            ..
        } = check_with_env(&file, &env);
        assert_eq!(code, 0, "{err}");
        assert!(stdout.contains(&format!("as node {id},")), "{stdout}");
    }
}

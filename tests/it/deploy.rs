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

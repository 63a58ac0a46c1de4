//! Which endpoints `iotflow status` reads: `--endpoint`s, Prometheus file_sd target files, or
//! the ones a config file implies.

use std::collections::BTreeMap;

use anyhow::Context;
use iotflow_config::Config;
use serde_json::Value;

use super::StatusArgs;

/// One endpoint to read, with the labels its targets file gave it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `host:port`.
    pub endpoint: String,
    /// file_sd labels (empty for --endpoint and config endpoints).
    pub labels: BTreeMap<String, String>,
}
pub(super) fn targets(args: &StatusArgs) -> anyhow::Result<Vec<Target>> {
    let mut out: Vec<Target> = Vec::new();
    let mut add = |t: Target| {
        if !out.iter().any(|o| o.endpoint == t.endpoint) {
            out.push(t);
        }
    };
    for e in &args.endpoints {
        add(Target {
            endpoint: normalize_endpoint(e)?,
            labels: BTreeMap::new(),
        });
    }
    for file in &args.targets {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read targets file {}", file.display()))?;
        for t in parse_file_sd(&text).with_context(|| format!("targets file {}", file.display()))? {
            add(t);
        }
    }
    if args.endpoints.is_empty() && args.targets.is_empty() {
        let config = Config::load(args.config.as_deref())?;
        if !config.metrics.listen.is_empty() {
            for p in 0..args.processes {
                add(Target {
                    endpoint: process_endpoint(&config.metrics.listen, p)?,
                    labels: BTreeMap::from([("process".to_string(), p.to_string())]),
                });
            }
        }
        if !args.no_publisher && !config.publisher.metrics_listen.is_empty() {
            add(Target {
                endpoint: process_endpoint(&config.publisher.metrics_listen, 0)?,
                labels: BTreeMap::from([("component".to_string(), "publisher".to_string())]),
            });
        }
        if args.mqtt_bridge && !config.mqtt.metrics_listen.is_empty() {
            add(Target {
                endpoint: process_endpoint(&config.mqtt.metrics_listen, 0)?,
                labels: BTreeMap::from([("component".to_string(), "mqtt-bridge".to_string())]),
            });
        }
    }
    Ok(out)
}

/// `host:port` from `host:port`, `http://host:port` or `http://host:port/metrics`.
pub fn normalize_endpoint(e: &str) -> anyhow::Result<String> {
    let s = e.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("endpoint `{e}` must be host:port"))?;
    port.parse::<u16>()
        .with_context(|| format!("endpoint `{e}`: bad port"))?;
    anyhow::ensure!(!host.is_empty(), "endpoint `{e}` has no host");
    Ok(s.to_string())
}

/// Where process `process` of a job with `metrics.listen = listen` serves /metrics (port +
/// process, as `iotflow run` does); a wildcard listen address is read on loopback.
pub fn process_endpoint(listen: &str, process: usize) -> anyhow::Result<String> {
    let listen = iotflow_metrics::process_address(listen, process)?;
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("listen address `{listen}` must be host:port"))?;
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    Ok(format!("{host}:{port}"))
}

/// The targets of a Prometheus file_sd JSON document: `[{"targets": [..], "labels": {..}}]`.
pub fn parse_file_sd(text: &str) -> anyhow::Result<Vec<Target>> {
    let doc: Value = serde_json::from_str(text).context("not JSON")?;
    let groups = doc
        .as_array()
        .context("a file_sd document is a JSON array of target groups")?;
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let targets = g
            .get("targets")
            .and_then(Value::as_array)
            .with_context(|| format!("target group {i} has no \"targets\" array"))?;
        let labels: BTreeMap<String, String> = match g.get("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_string()))
                        .with_context(|| format!("target group {i}: label {k} is not a string"))
                })
                .collect::<anyhow::Result<_>>()?,
            Some(_) => anyhow::bail!("target group {i}: \"labels\" is not an object"),
        };
        for t in targets {
            let t = t
                .as_str()
                .with_context(|| format!("target group {i}: a target is not a string"))?;
            out.push(Target {
                endpoint: normalize_endpoint(t)?,
                labels: labels.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_file_sd() {
        assert_eq!(
            normalize_endpoint("http://10.0.0.1:9249/metrics").unwrap(),
            "10.0.0.1:9249"
        );
        assert_eq!(normalize_endpoint("host:1").unwrap(), "host:1");
        assert!(normalize_endpoint("host").is_err());
        assert!(normalize_endpoint("host:99999").is_err());
        assert_eq!(
            process_endpoint("127.0.0.1:9249", 2).unwrap(),
            "127.0.0.1:9251"
        );
        assert_eq!(
            process_endpoint("0.0.0.0:9250", 0).unwrap(),
            "127.0.0.1:9250"
        );
        assert!(process_endpoint("127.0.0.1:65535", 1).is_err());
        let sample = include_str!("../../../../deploy/prometheus/targets/example.json.sample");
        let t = parse_file_sd(sample).unwrap();
        assert_eq!(
            t.iter().map(|t| t.endpoint.as_str()).collect::<Vec<_>>(),
            [
                "10.0.0.11:9249",
                "10.0.0.12:9250",
                "10.0.0.13:9251",
                "10.0.0.20:9250",
                "10.0.0.30:9252"
            ]
        );
        assert_eq!(t[3].labels["job"], "iotflow-publisher");
        assert_eq!(t[4].labels["component"], "mqtt-bridge");
        assert!(parse_file_sd("{}").is_err());
        assert!(parse_file_sd(r#"[{"labels":{}}]"#).is_err());
        assert!(parse_file_sd(r#"[{"targets":["a:1"],"labels":{"x":1}}]"#).is_err());
        assert_eq!(parse_file_sd(r#"[{"targets":["a:1"]}]"#).unwrap().len(), 1);
    }
}

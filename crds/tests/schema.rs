//! Checks of the generated CRDs that need no cluster: shape, descriptions, committed YAML, and
//! each CEL rule evaluated client-side (with schema defaults applied, as the API server does).
//! The same rules are proved against a real API server by the e2e tier.

#![allow(clippy::expect_used)]

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use oms_crds::generate::{all_crds, to_yaml};
use oms_crds::{Bridge, MessagingAccessPoint, Queue};
use serde_json::{Value, json};

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema).expect("schema serializes")
}

/// Runs the CRD's CEL rules on `object` (and `old` for transition rules); returns the messages.
fn cel_errors<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of::<K>(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_refused<K: CustomResourceExt>(object: &Value, old: Option<&Value>, expected: &str) {
    let errors = cel_errors::<K>(object, old);
    assert!(errors.iter().any(|e| e.contains(expected)), "expected an error containing {expected:?}, got {errors:?}");
}

fn assert_accepted<K: CustomResourceExt>(object: &Value, old: Option<&Value>) {
    let errors = cel_errors::<K>(object, old);
    assert!(errors.is_empty(), "expected no CEL error, got {errors:?}");
}

/// Collects the paths of schema properties that lack a description.
fn undocumented(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            // apiVersion, kind and metadata are Kubernetes' own; kube documents them itself.
            let documented = prop.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
            if !documented {
                missing.push(here.clone());
            }
            undocumented(prop, &here, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), missing);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undocumented(values, &format!("{path}{{}}"), missing);
    }
}

#[test]
fn every_schema_property_has_a_description() {
    for (file, crd) in all_crds() {
        let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
        let schema = serde_json::to_value(schema).expect("schema serializes");
        let mut missing = Vec::new();
        undocumented(&schema, "", &mut missing);
        assert!(missing.is_empty(), "{file}: properties without a description: {missing:?}");
        let top = schema["description"].as_str().unwrap_or_default();
        assert!(!top.contains("Auto-generated"), "{file}: kind has no description of its own");
    }
}

#[test]
fn crds_are_namespaced_kinds_of_the_oms_group_with_status_and_columns() {
    let crds = all_crds();
    let kinds: Vec<_> = crds.iter().map(|(_, c)| c.spec.names.kind.clone()).collect();
    assert_eq!(kinds, ["MessagingAccessPoint", "Queue", "Bridge"]);
    for (file, crd) in &crds {
        assert_eq!(crd.spec.group, oms_crds::GROUP, "{file}");
        assert_eq!(crd.spec.scope, "Namespaced", "{file}");
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["oms".to_owned()][..]), "{file}");
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()), "{file}");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, oms_crds::VERSION, "{file}");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{file}");
        let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert!(columns.contains(&"Ready") && columns.contains(&"Age"), "{file}: {columns:?}");
    }
}

#[test]
fn committed_crd_yaml_is_what_crdgen_writes() {
    // cargo runs tests from the package directory (crds/); a path baked in at compile time could
    // name another checkout sharing the target directory.
    let dir = std::path::Path::new(".");
    for (file, crd) in all_crds() {
        let committed = std::fs::read_to_string(dir.join(file)).expect("committed CRD file exists");
        assert!(committed == to_yaml(&crd).expect("renders"), "crds/{file} is stale: run `make generate`");
    }
}

fn access_point(spec: &Value) -> Value {
    json!({"apiVersion": "openmessaging.cloud/v1alpha1", "kind": "MessagingAccessPoint",
           "metadata": {"name": "ap"}, "spec": spec})
}

#[test]
fn access_point_needs_exactly_one_of_managed_and_external() {
    let managed = json!({"replicas": 1});
    let external = json!({"servers": ["b1.example.com:9092"]});
    assert_accepted::<MessagingAccessPoint>(&access_point(&json!({"driver": "kafka", "managed": managed})), None);
    assert_accepted::<MessagingAccessPoint>(&access_point(&json!({"driver": "nats", "external": external})), None);
    let both = access_point(&json!({"driver": "kafka", "managed": managed, "external": external}));
    assert_refused::<MessagingAccessPoint>(&both, None, "set exactly one of spec.managed");
    let neither = access_point(&json!({"driver": "rabbitmq"}));
    assert_refused::<MessagingAccessPoint>(&neither, None, "set exactly one of spec.managed");
}

#[test]
fn gateway_access_point_needs_an_endpoint_a_remote_and_no_broker() {
    let remote = json!({"namespace": "acme", "name": "eu-nats"});
    let ok = access_point(&json!({"driver": "gateway", "endpoint": "gw.cloud-b.example:7443", "remote": remote}));
    assert_accepted::<MessagingAccessPoint>(&ok, None);
    let no_remote = access_point(&json!({"driver": "gateway", "endpoint": "gw.cloud-b.example:7443"}));
    assert_refused::<MessagingAccessPoint>(&no_remote, None, "driver gateway needs spec.remote");
    let remote_on_kafka = access_point(&json!({"driver": "kafka", "managed": {}, "remote": remote}));
    assert_refused::<MessagingAccessPoint>(&remote_on_kafka, None, "other drivers must not set it");
    let no_endpoint = access_point(&json!({"driver": "gateway"}));
    assert_refused::<MessagingAccessPoint>(&no_endpoint, None, "driver gateway needs spec.endpoint");
    let endpoint_on_kafka = access_point(&json!({"driver": "kafka", "managed": {}, "endpoint": "gw.example:7443"}));
    assert_refused::<MessagingAccessPoint>(&endpoint_on_kafka, None, "spec.endpoint is only for driver gateway");
    let bad_endpoint = access_point(&json!({"driver": "gateway", "endpoint": "gw.example", "remote": remote}));
    assert_refused::<MessagingAccessPoint>(&bad_endpoint, None, "spec.endpoint must be host:port");
}

#[test]
fn access_point_driver_is_immutable() {
    let old = access_point(&json!({"driver": "kafka", "managed": {}}));
    let new = access_point(&json!({"driver": "nats", "managed": {}}));
    assert_refused::<MessagingAccessPoint>(&new, Some(&old), "spec.driver is immutable");
    assert_accepted::<MessagingAccessPoint>(&old, Some(&old));
}

#[test]
fn mosquitto_is_refused_more_than_one_replica_and_storage_never_changes() {
    let two = access_point(&json!({"driver": "mqtt", "managed": {"replicas": 2}}));
    assert_refused::<MessagingAccessPoint>(&two, None, "driver mqtt (Mosquitto) does not cluster");
    assert_accepted::<MessagingAccessPoint>(&access_point(&json!({"driver": "mqtt", "managed": {}})), None);
    let small = access_point(&json!({"driver": "kafka", "managed": {"storage": {"size": "1Gi"}}}));
    let big = access_point(&json!({"driver": "kafka", "managed": {"storage": {"size": "2Gi"}}}));
    let none = access_point(&json!({"driver": "kafka", "managed": {}}));
    assert_refused::<MessagingAccessPoint>(&big, Some(&small), "spec.managed.storage cannot change");
    assert_refused::<MessagingAccessPoint>(&none, Some(&small), "spec.managed.storage cannot change");
    assert_accepted::<MessagingAccessPoint>(&small, Some(&small));
}

#[test]
fn access_point_servers_storage_and_tenants_are_checked() {
    let bad_server = access_point(&json!({"driver": "kafka", "external": {"servers": ["b1:9092", "b2"]}}));
    assert_refused::<MessagingAccessPoint>(&bad_server, None, "every entry of spec.external.servers");
    let bad_size = access_point(&json!({"driver": "kafka", "managed": {"storage": {"size": "10 GB"}}}));
    assert_refused::<MessagingAccessPoint>(&bad_size, None, "spec.managed.storage.size must be a size");
    let bad_tenant =
        access_point(&json!({"driver": "nats", "managed": {}, "sharing": {"tenants": ["acme", "Not_A_NS"]}}));
    assert_refused::<MessagingAccessPoint>(&bad_tenant, None, "spec.sharing.tenants");
    let ok = access_point(&json!({"driver": "nats", "managed": {"storage": {"size": "10Gi"}},
                                  "sharing": {"tenants": ["acme", "*"]}}));
    assert_accepted::<MessagingAccessPoint>(&ok, None);
}

#[test]
fn server_ports_are_1_to_65535_like_the_operators_parser() {
    for (port, accepted) in
        [("1", true), ("9092", true), ("65535", true), ("65536", false), ("99999", false), ("0", false)]
    {
        let ap = access_point(&json!({"driver": "kafka", "external": {"servers": [format!("b1.example.com:{port}")]}}));
        let errors = cel_errors::<MessagingAccessPoint>(&ap, None);
        assert_eq!(errors.is_empty(), accepted, "port {port}: {errors:?}");
    }
}

#[test]
fn references_name_namespaces_as_kubernetes_spells_them() {
    let pattern =
        |schema: &Value, path: &str| schema.pointer(path).and_then(|p| p["pattern"].as_str()).map(str::to_owned);
    let queue = schema_of::<Queue>();
    let bridge = schema_of::<Bridge>();
    let dns_label = Some("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$".to_owned());
    assert_eq!(pattern(&queue, "/properties/spec/properties/accessPointRef/properties/namespace"), dns_label);
    assert_eq!(
        pattern(&bridge, "/properties/spec/properties/target/properties/queueRef/properties/namespace"),
        dns_label
    );
}

#[test]
fn a_queue_never_moves_to_another_access_point() {
    let old = queue(&json!({"accessPointRef": {"name": "orders-kafka"}}));
    let moved = queue(&json!({"accessPointRef": {"name": "edge-nats"}}));
    assert_accepted::<Queue>(&old, Some(&old));
    assert_refused::<Queue>(&moved, Some(&old), "spec.accessPointRef is immutable");
}

fn queue(spec: &Value) -> Value {
    json!({"apiVersion": "openmessaging.cloud/v1alpha1", "kind": "Queue", "metadata": {"name": "q"}, "spec": spec})
}

#[test]
fn queue_partitions_may_grow_but_never_shrink() {
    let old = queue(&json!({"accessPointRef": {"name": "ap"}, "partitions": 6}));
    let grown = queue(&json!({"accessPointRef": {"name": "ap"}, "partitions": 12}));
    let shrunk = queue(&json!({"accessPointRef": {"name": "ap"}, "partitions": 3}));
    assert_accepted::<Queue>(&grown, Some(&old));
    assert_refused::<Queue>(&shrunk, Some(&old), "spec.partitions cannot decrease");
}

#[test]
fn queue_broker_name_is_immutable_including_adding_and_removing_it() {
    let named = queue(&json!({"accessPointRef": {"name": "ap"}, "name": "orders"}));
    let renamed = queue(&json!({"accessPointRef": {"name": "ap"}, "name": "orders-v2"}));
    let unnamed = queue(&json!({"accessPointRef": {"name": "ap"}}));
    assert_accepted::<Queue>(&named, Some(&named));
    assert_refused::<Queue>(&renamed, Some(&named), "spec.name is immutable");
    assert_refused::<Queue>(&unnamed, Some(&named), "spec.name is immutable");
    assert_refused::<Queue>(&named, Some(&unnamed), "spec.name is immutable");
}

#[test]
fn queue_retention_strings_must_parse() {
    let ok = queue(&json!({"accessPointRef": {"name": "ap"}, "retention": {"time": "7d", "bytes": "10Gi"}}));
    assert_accepted::<Queue>(&ok, None);
    let bad_time = queue(&json!({"accessPointRef": {"name": "ap"}, "retention": {"time": "1 week"}}));
    assert_refused::<Queue>(&bad_time, None, "spec.retention.time must be a duration");
    let bad_bytes = queue(&json!({"accessPointRef": {"name": "ap"}, "retention": {"bytes": "10GB"}}));
    assert_refused::<Queue>(&bad_bytes, None, "spec.retention.bytes must be a size");
}

fn bridge(spec: &Value) -> Value {
    json!({"apiVersion": "openmessaging.cloud/v1alpha1", "kind": "Bridge", "metadata": {"name": "b"}, "spec": spec})
}

#[test]
fn bridge_target_must_differ_from_source() {
    let same = bridge(&json!({"source": {"queueRef": {"name": "orders"}}, "target": {"queueRef": {"name": "orders"}}}));
    assert_refused::<Bridge>(&same, None, "spec.target must name a different queue");
    let other_ns = bridge(&json!({"source": {"queueRef": {"name": "orders"}},
                                  "target": {"queueRef": {"name": "orders", "namespace": "eu"}}}));
    assert_accepted::<Bridge>(&other_ns, None);
}

#[test]
fn bridge_start_timestamp_goes_with_start_from_timestamp() {
    let ends = json!({"source": {"queueRef": {"name": "a"}}, "target": {"queueRef": {"name": "b"}}});
    let mut missing = ends.clone();
    missing["startFrom"] = json!("Timestamp");
    assert_refused::<Bridge>(&bridge(&missing), None, "spec.startTimestamp is required");
    let mut stray = ends.clone();
    stray["startTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_refused::<Bridge>(&bridge(&stray), None, "spec.startTimestamp is required");
    let mut ok = missing.clone();
    ok["startTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_accepted::<Bridge>(&bridge(&ok), None);
    assert_accepted::<Bridge>(&bridge(&ends), None);
}

#[test]
fn cel_size_and_duration_patterns_accept_what_the_parsers_accept() {
    use oms_crds::quantity::{parse_duration, parse_size};
    for text in ["0", "10Gi", "512Mi", "2k", "10 GB", "1.5Gi", "Gi", "7d"] {
        let spec = json!({"accessPointRef": {"name": "ap"}, "maxMessageSize": text});
        let cel_ok = cel_errors::<Queue>(&queue(&spec), None).is_empty();
        assert_eq!(cel_ok, parse_size(text).is_ok(), "size {text:?}");
    }
    for text in ["7d", "1h30m", "500ms", "7", "1 h", "1w", "1.5h"] {
        let spec = json!({"accessPointRef": {"name": "ap"}, "retention": {"time": text}});
        let cel_ok = cel_errors::<Queue>(&queue(&spec), None).is_empty();
        assert_eq!(cel_ok, parse_duration(text).is_ok(), "duration {text:?}");
    }
}

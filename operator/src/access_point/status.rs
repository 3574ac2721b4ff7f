//! Conditions of an access point, decided from what the controller observed. Pure.

use k8s_openapi::api::apps::v1::StatefulSet;
use oms_crds::common::condition_type::READY;

use super::validate::{AccessPoint, InvalidSpec, Plan};
use crate::conditions::{Decided, Status};
use crate::probe::ProbeError;

pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Conditions of a managed cluster from its StatefulSet as the API server returned it.
#[must_use]
pub fn managed(desired: i32, stateful_set: &StatefulSet) -> (i32, Vec<Decided>) {
    let ready = stateful_set.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let rolling = replacing_pods(desired, stateful_set);
    let counted = format!("{ready}/{desired} brokers ready");
    let mut decided = Vec::with_capacity(3);
    decided.push(if ready >= desired {
        Decided::new(READY, Status::True, "BrokersReady", counted.clone())
    } else {
        Decided::new(READY, Status::False, "BrokersNotReady", counted.clone())
    });
    decided.push(match (rolling, ready >= desired) {
        (true, _) => {
            Decided::new(PROGRESSING, Status::True, "RollingUpdate", format!("{counted}; pods are being updated"))
        }
        (false, false) if ready == 0 => Decided::new(PROGRESSING, Status::True, "Starting", counted.clone()),
        _ => Decided::new(PROGRESSING, Status::False, "Stable", counted.clone()),
    });
    decided.push(if !rolling && ready > 0 && ready < desired {
        Decided::new(DEGRADED, Status::True, "BrokersUnavailable", counted)
    } else {
        Decided::new(DEGRADED, Status::False, "AsDesired", counted)
    });
    (ready, decided)
}

/// Whether the StatefulSet's pods are still being replaced with its latest template.
fn replacing_pods(desired: i32, stateful_set: &StatefulSet) -> bool {
    let status = stateful_set.status.clone().unwrap_or_default();
    let generation = stateful_set.metadata.generation.unwrap_or(0);
    status.observed_generation.unwrap_or(0) < generation
        || (status.update_revision.is_some() && status.current_revision != status.update_revision)
        || status.updated_replicas.unwrap_or(0) < desired
}

/// Whether all `desired` pods run the StatefulSet's latest template and are Ready: a roll, if
/// there was one, is over.
#[must_use]
pub fn settled(desired: i32, stateful_set: &StatefulSet) -> bool {
    let ready = stateful_set.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    ready >= desired && !replacing_pods(desired, stateful_set)
}

/// Why a Kafka StatefulSet an earlier operator version made, whose brokers run without
/// authentication (no operator user in their environment), cannot take today's configuration: its
/// storage was formatted without the operator's user, so authenticated brokers could not reach
/// each other. `None` for one that has the user.
#[must_use]
pub fn kafka_without_users(existing: &StatefulSet) -> Option<String> {
    let containers = existing.spec.as_ref()?.template.spec.as_ref()?.containers.as_slice();
    let has_user =
        containers.iter().flat_map(|c| c.env.iter().flatten()).any(|e| e.name == crate::drivers::ADMIN_USER_ENV);
    (!has_user).then(|| {
        format!(
            "StatefulSet {} runs Kafka without authentication (made by an earlier operator version): its data has no \
             operator user, so its brokers cannot move to authenticated listeners in place; it is left as it is. \
             Bridge its queues to a new access point and delete this one",
            existing.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// Replaces the Progressing condition with the refusal of a change of size.
pub fn refuse_resize(decided: &mut [Decided], message: String) {
    replace_progressing(decided, Status::False, "ResizeRefused", message);
}

/// Adds to the Progressing condition of a Kafka roll what it waits for or just did.
pub fn rolling(decided: &mut [Decided], progress: &str) {
    let counted = decided.iter().find(|d| d.type_ == PROGRESSING).map(|d| d.message.clone()).unwrap_or_default();
    replace_progressing(decided, Status::True, "RollingUpdate", format!("{counted}; {progress}"));
}

/// Replaces the Progressing condition while a server is being retired, saying which step.
pub fn scaling_down(decided: &mut [Decided], message: String) {
    replace_progressing(decided, Status::True, "ScalingDown", message);
}

/// Replaces the Progressing condition while partitions move between settled brokers.
pub fn placing(decided: &mut [Decided], message: String) {
    replace_progressing(decided, Status::True, "ReassigningPartitions", message);
}

/// Replaces the Progressing condition while a Kafka controller quorum forms or changes voters.
pub fn changing_voters(decided: &mut [Decided], message: String) {
    replace_progressing(decided, Status::True, "ChangingVoters", message);
}

fn replace_progressing(decided: &mut [Decided], status: Status, reason: &'static str, message: String) {
    if let Some(progressing) = decided.iter_mut().find(|d| d.type_ == PROGRESSING) {
        *progressing = Decided::new(PROGRESSING, status, reason, message);
    }
}

/// Replaces a true Ready condition when the tenants' broker users could not be applied: their
/// clients would be refused. Brokers not all ready already say why, better.
pub fn tenant_users_failed(decided: &mut [Decided], message: String) {
    if let Some(ready) = decided.iter_mut().find(|d| d.type_ == READY && d.status == Status::True) {
        *ready = Decided::new(READY, Status::False, "TenantUsersNotApplied", message);
    }
}

/// Conditions of an external access point from one handshake per server. When none answered,
/// the reason names the first server's cause (a TLS or login failure, or Unreachable).
#[must_use]
pub fn external(driver: &str, results: &[(String, Result<(), ProbeError>)]) -> Vec<Decided> {
    let failures: Vec<String> =
        results.iter().filter_map(|(server, r)| r.as_ref().err().map(|e| format!("{server}: {e}"))).collect();
    let answered = results.len() - failures.len();
    let reason = results.iter().find_map(|(_, r)| r.as_ref().err()).map_or("Unreachable", ProbeError::reason);
    let ready = if answered > 0 {
        Decided::new(
            READY,
            Status::True,
            "Reachable",
            format!("{answered}/{} servers answered the {driver} handshake", results.len()),
        )
    } else {
        Decided::new(READY, Status::False, reason, failures.join("; "))
    };
    let degraded = if answered > 0 && !failures.is_empty() {
        Decided::new(DEGRADED, Status::True, "SomeServersUnreachable", failures.join("; "))
    } else {
        Decided::new(DEGRADED, Status::False, "AsDesired", "")
    };
    vec![ready, Decided::new(PROGRESSING, Status::False, "External", "the broker is not run by the operator"), degraded]
}

/// RocketMQ: the proxies' conditions, made not Ready when no name server lists a master broker
/// (the operator provisions topics through them) and Degraded when some do not answer. Where the
/// proxies failed already, their reason stays (a TLS cause, say) and the name servers' failures
/// are added to the message.
pub fn rocketmq_name_servers(decided: &mut [Decided], results: &[(String, Result<(), String>)]) {
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(server, r)| r.as_ref().err().map(|e| format!("name server {server}: {e}")))
        .collect();
    let listing = results.len() - failures.len();
    if let Some(ready) = decided.iter_mut().find(|d| d.type_ == READY && d.status == Status::True) {
        ready.message = format!("{}; {listing}/{} name servers list a master broker", ready.message, results.len());
    }
    if failures.is_empty() {
        return;
    }
    let all_failed = failures.len() == results.len();
    for condition in decided.iter_mut() {
        match condition.type_ {
            READY if all_failed && condition.status == Status::False => {
                condition.message = format!("{}; {}", condition.message, failures.join("; "));
            }
            READY if all_failed => {
                *condition = Decided::new(READY, Status::False, "NameServersUnreachable", failures.join("; "));
            }
            DEGRADED if !all_failed => {
                *condition = Decided::new(DEGRADED, Status::True, "SomeServersUnreachable", failures.join("; "));
            }
            _ => {}
        }
    }
}

/// Conditions of a gateway access point: stored and validated; bridges prove connectivity.
#[must_use]
pub fn gateway() -> Vec<Decided> {
    vec![Decided::new(
        READY,
        Status::Unknown,
        "NotProbed",
        "the other cloud's gateway is reached with mTLS by the bridges that use it",
    )]
}

/// `status.tls`: whether clients reach the brokers over TLS (`tls` says whether the binding
/// carries TLS settings); a gateway access point is always reached with mTLS.
#[must_use]
pub fn tls(ap: &AccessPoint, tls: bool) -> Option<String> {
    let enabled = tls || matches!(ap.plan, Plan::Gateway { .. });
    Some(if enabled { "Enabled" } else { "Disabled" }.to_owned())
}

/// Conditions of a spec the operator cannot act on.
#[must_use]
pub fn invalid(error: &InvalidSpec) -> Vec<Decided> {
    vec![Decided::new(READY, Status::False, "InvalidSpec", error.to_string())]
}

/// Conditions when the API server refused an update of the broker's objects.
#[must_use]
pub fn apply_refused(message: String) -> Vec<Decided> {
    vec![Decided::new(READY, Status::False, "UpdateRefused", message)]
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    #[test]
    fn rocketmq_is_ready_only_while_a_name_server_lists_a_master() {
        let proxies = [("p:8081".to_owned(), Ok(()))];
        let listed = |results: &[(String, Result<(), String>)]| {
            let mut decided = external("rocketmq", &proxies);
            rocketmq_name_servers(&mut decided, results);
            let get = |t: &str| decided.iter().find(|d| d.type_ == t).cloned().unwrap();
            (get(READY), get(DEGRADED))
        };
        let (ready, degraded) = listed(&[("n:9876".into(), Ok(()))]);
        assert_eq!(
            (ready.status, ready.message.as_str()),
            (Status::True, "1/1 servers answered the rocketmq handshake; 1/1 name servers list a master broker")
        );
        assert_eq!(degraded.status, Status::False);
        let (ready, degraded) = listed(&[("n:9876".into(), Ok(())), ("m:9876".into(), Err("refused".into()))]);
        assert_eq!((ready.status, degraded.reason), (Status::True, "SomeServersUnreachable"));
        assert!(degraded.message.contains("name server m:9876: refused"));
        let (ready, _) = listed(&[("m:9876".into(), Err("refused".into()))]);
        assert_eq!((ready.status, ready.reason), (Status::False, "NameServersUnreachable"));
    }

    #[test]
    fn a_rocketmq_proxy_failure_keeps_its_reason_and_adds_the_name_servers() {
        let proxies = [("p:8081".to_owned(), Err(ProbeError::TlsUnknownAuthority("UnknownIssuer".into())))];
        let mut decided = external("rocketmq", &proxies);
        rocketmq_name_servers(&mut decided, &[("n:9876".into(), Err("closed".into()))]);
        let ready = decided.iter().find(|d| d.type_ == READY).unwrap();
        assert_eq!((ready.status, ready.reason), (Status::False, "TlsUnknownAuthority"));
        assert!(ready.message.contains("UnknownIssuer") && ready.message.ends_with("name server n:9876: closed"));
    }

    fn sts(generation: i64, status: StatefulSetStatus) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            spec: None,
            status: Some(status),
        }
    }

    fn find<'a>(decided: &'a [Decided], type_: &str) -> &'a Decided {
        decided.iter().find(|d| d.type_ == type_).expect("condition present")
    }

    #[test]
    fn a_new_cluster_is_starting_not_degraded() {
        let (ready, decided) = managed(
            3,
            &sts(
                1,
                StatefulSetStatus {
                    observed_generation: Some(1),
                    updated_replicas: Some(3),
                    ..StatefulSetStatus::default()
                },
            ),
        );
        assert_eq!(ready, 0);
        assert_eq!(find(&decided, READY).status, Status::False);
        assert_eq!(find(&decided, PROGRESSING).reason, "Starting");
        assert_eq!(find(&decided, DEGRADED).status, Status::False);
    }

    #[test]
    fn all_ready_is_ready_and_stable() {
        let status = StatefulSetStatus {
            observed_generation: Some(2),
            ready_replicas: Some(3),
            updated_replicas: Some(3),
            current_revision: Some("r2".into()),
            update_revision: Some("r2".into()),
            ..StatefulSetStatus::default()
        };
        let (ready, decided) = managed(3, &sts(2, status));
        assert_eq!(ready, 3);
        assert_eq!(find(&decided, READY).reason, "BrokersReady");
        assert_eq!(find(&decided, PROGRESSING).status, Status::False);
    }

    #[test]
    fn a_lost_broker_outside_a_rollout_is_degraded() {
        let status = StatefulSetStatus {
            observed_generation: Some(2),
            ready_replicas: Some(2),
            updated_replicas: Some(3),
            current_revision: Some("r2".into()),
            update_revision: Some("r2".into()),
            ..StatefulSetStatus::default()
        };
        let (_, decided) = managed(3, &sts(2, status));
        assert_eq!(find(&decided, DEGRADED).reason, "BrokersUnavailable");
    }

    #[test]
    fn a_new_revision_is_a_rolling_update() {
        let status = StatefulSetStatus {
            observed_generation: Some(3),
            ready_replicas: Some(3),
            updated_replicas: Some(1),
            current_revision: Some("r2".into()),
            update_revision: Some("r3".into()),
            ..StatefulSetStatus::default()
        };
        let (_, decided) = managed(3, &sts(3, status));
        assert_eq!(find(&decided, PROGRESSING).reason, "RollingUpdate");
        assert_eq!(find(&decided, DEGRADED).status, Status::False);
    }

    #[test]
    fn external_is_ready_when_any_server_answers_and_names_the_ones_that_did_not() {
        let results = vec![
            ("b1:9092".to_owned(), Ok(())),
            ("b2:9092".to_owned(), Err(ProbeError::Connect("connection refused".into()))),
        ];
        let decided = external("kafka", &results);
        assert_eq!(find(&decided, READY).status, Status::True);
        assert!(find(&decided, DEGRADED).message.contains("b2:9092: cannot connect: connection refused"));
        let down = external("kafka", &results[1..]);
        assert_eq!(find(&down, READY).reason, "Unreachable");
        let refused =
            vec![("n1:4222".to_owned(), Err(ProbeError::LoginRefused("-ERR 'Authorization Violation'".into())))];
        let decided = external("nats", &refused);
        assert_eq!((find(&decided, READY).status, find(&decided, READY).reason), (Status::False, "LoginRefused"));
        assert!(find(&decided, READY).message.contains("credentialsSecretRef"), "the message says where to look");
    }

    #[test]
    fn a_kafka_without_the_operators_user_is_left_alone_and_said() {
        use k8s_openapi::api::apps::v1::StatefulSetSpec;
        use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
        let with_env = |env: Vec<EnvVar>| StatefulSet {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("orders-kafka".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container { name: "broker".into(), env: Some(env), ..Container::default() }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        };
        let earlier = with_env(vec![EnvVar { name: "POD_NAME".into(), ..EnvVar::default() }]);
        let message = kafka_without_users(&earlier).expect("refused");
        assert!(message.contains("StatefulSet orders-kafka") && message.contains("new access point"), "{message}");
        let today = with_env(vec![EnvVar { name: crate::drivers::ADMIN_USER_ENV.into(), ..EnvVar::default() }]);
        assert_eq!(kafka_without_users(&today), None);
    }
}

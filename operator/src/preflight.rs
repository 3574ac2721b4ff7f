//! Checks made once before the controllers start: the API server answers and our CRDs are
//! installed. Each failure says what to do about it.

use kube::Client;

use oms_crds::{GROUP, VERSION};

/// The kinds the operator serves, as the API server lists them.
pub const KINDS: [&str; 3] = ["MessagingAccessPoint", "Queue", "Bridge"];

/// How to install the CRDs, printed whenever they are missing.
pub const INSTALL_HINT: &str = "install them with `kubectl apply --server-side -f crds/` from the oms-operator \
     repository, or with `helm install oms-operator charts/oms-operator` (the chart ships the CRDs), then start the \
     operator again";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "cannot reach the Kubernetes API server: {0}; check --kubeconfig/KUBECONFIG or the in-cluster service account"
    )]
    ReachApiServer(#[source] kube::Error),
    #[error(
        "the CustomResourceDefinitions of {GROUP}/{VERSION} are not installed (missing: {missing}); {INSTALL_HINT}"
    )]
    CrdsMissing { missing: String },
}

/// Confirms that every kind of `openmessaging.cloud/v1alpha1` is served.
pub async fn check_crds_installed(client: &Client) -> Result<(), PreflightError> {
    let served = match client.list_api_group_resources(&format!("{GROUP}/{VERSION}")).await {
        Ok(list) => list.resources.into_iter().map(|r| r.kind).collect::<Vec<_>>(),
        // An unknown group answers with a plain-text 404, not a Status object.
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(error) => return Err(PreflightError::ReachApiServer(error)),
    };
    let missing = missing_kinds(&served);
    if missing.is_empty() { Ok(()) } else { Err(PreflightError::CrdsMissing { missing: missing.join(", ") }) }
}

/// The kinds of [`KINDS`] that `served` lacks, in order.
#[must_use]
pub fn missing_kinds(served: &[String]) -> Vec<&'static str> {
    KINDS.into_iter().filter(|kind| !served.iter().any(|s| s == kind)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_kinds_lists_what_the_server_does_not_serve() {
        assert_eq!(missing_kinds(&[]), KINDS.to_vec());
        let served = vec!["Queue".to_owned(), "MessagingAccessPoint".to_owned()];
        assert_eq!(missing_kinds(&served), vec!["Bridge"]);
    }

    #[test]
    fn missing_crds_error_names_the_install_commands() {
        let message = PreflightError::CrdsMissing { missing: "Bridge".into() }.to_string();
        assert!(message.contains("kubectl apply --server-side -f crds/"), "{message}");
        assert!(message.contains("helm install"), "{message}");
        assert!(message.contains("missing: Bridge"), "{message}");
    }
}

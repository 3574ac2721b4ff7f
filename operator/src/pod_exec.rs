//! Runs a command in a broker's container, the way `kubectl exec` does, for the broker tools that
//! have no network API: RabbitMQ's CLI, which speaks Erlang distribution with the node's cookie.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run `{command}` in pod {pod}: {source}")]
    Start { pod: String, command: String, source: kube::Error },
    #[error("`{command}` in pod {pod} did not finish within {}s", limit.as_secs())]
    Timeout { pod: String, command: String, limit: Duration },
    #[error("`{command}` in pod {pod} failed: {message}")]
    Failed { pod: String, command: String, message: String },
}

/// What a command printed, once it exited 0 in `container` of `pod` within `limit` (a command
/// that waits on a cluster without a quorum must not hold a reconcile for good); else what it
/// said on stderr (or the API server's reason).
pub async fn run(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    command: &[String],
    limit: Duration,
) -> Result<String, ExecError> {
    let shown = command.join(" ");
    let params = AttachParams::default().container(container).stdin(false).stdout(true).stderr(true);
    let mut process = pods.exec(pod, command.to_vec(), &params).await.map_err(|source| ExecError::Start {
        pod: pod.to_owned(),
        command: shown.clone(),
        source,
    })?;
    let (stdout, stderr, status) = (process.stdout(), process.stderr(), process.take_status());
    // Both streams are read together: a full stderr pipe would otherwise stall the command.
    let finished = tokio::time::timeout(limit, async {
        let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        (out, err, status)
    })
    .await;
    let Ok((out, err, status)) = finished else {
        process.abort();
        return Err(ExecError::Timeout { pod: pod.to_owned(), command: shown, limit });
    };
    let _ = process.join().await;
    match status {
        Some(status) if status.status.as_deref() == Some("Success") => Ok(out),
        status => {
            let reason = status.and_then(|s| s.message).unwrap_or_else(|| "no exit status".into());
            let said = err.trim();
            let message = if said.is_empty() { reason } else { format!("{reason}: {said}") };
            Err(ExecError::Failed { pod: pod.to_owned(), command: shown, message })
        }
    }
}

async fn read_all(stream: Option<impl AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut stream) = stream {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes).await;
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

//! Drives the admin server over a real TCP socket.

use std::net::SocketAddr;

use anyhow::Context;
use oms_telemetry::admin::{AdminServer, Readiness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Sends a bare HTTP/1.1 GET and returns (status code, body).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split(' ').nth(1).context("status line")?.parse()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

#[tokio::test]
async fn readyz_follows_readiness_metrics_are_served_and_shutdown_stops_the_server() -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounter::new("oms_test_total", "a test counter")?;
    registry.register(Box::new(counter.clone()))?;
    counter.inc();
    let readiness = Readiness::default();
    let server = AdminServer::bind("127.0.0.1:0".parse()?, registry, readiness.clone()).await?;
    let addr = server.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));

    assert_eq!(get(addr, "/healthz").await?.0, 200);
    assert_eq!(get(addr, "/readyz").await?.0, 503);
    readiness.set(true);
    assert_eq!(get(addr, "/readyz").await?.0, 200);
    let (status, body) = get(addr, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(body.contains("oms_test_total 1"), "{body}");

    shutdown.cancel();
    task.await??;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "server still listening after shutdown");
    Ok(())
}

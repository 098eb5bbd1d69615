//! Throwaway `nats-server` processes for tests and benchmarks: one JetStream node, or a
//! JetStream cluster on loopback whose nodes can be killed (`SIGKILL`) and restarted.
//!
//! Every server gets its own temp store dir and free ports, waits are bounded by a deadline,
//! and processes are killed on drop, so no test depends on a server someone else started.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to accept connections and report JetStream healthy.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// `nats-server` is not on PATH or could not be spawned: install it (`apt-get install nats-server`).
    #[error("could not run nats-server ({0}); install it (apt-get install nats-server) or put it on PATH")]
    Spawn(std::io::Error),
    /// Files or ports for the server could not be prepared.
    #[error("could not prepare a nats-server: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not become ready before the deadline; its log tail is attached.
    #[error("nats-server {name} not ready after {waited:?}; log tail:\n{log}")]
    NotReady {
        name: String,
        waited: Duration,
        log: String,
    },
}

impl TestServerError {
    /// Whether a node exited because a port picked for it was taken in the meantime (another
    /// process bound it between [`free_port`] and the server's start).
    fn is_port_clash(&self) -> bool {
        matches!(self, TestServerError::NotReady { log, .. } if log.contains("address already in use"))
    }
}

/// Runs `start` again, on fresh ports, while it fails on a port taken in the meantime (at most
/// three times more): picking a free port and binding it cannot be one atomic step.
fn with_fresh_ports<T>(
    mut start: impl FnMut() -> Result<T, TestServerError>,
) -> Result<T, TestServerError> {
    let mut retries = 3;
    loop {
        match start() {
            Err(e) if e.is_port_clash() && retries > 0 => retries -= 1,
            outcome => return outcome,
        }
    }
}

/// Picks a port nobody listens on right now by binding port 0 and releasing it.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `nats-server` process with a config file, a store dir and a log file.
struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    client_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) -> Result<(), TestServerError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(TestServerError::Spawn)?;
        self.child = Some(child);
        Ok(())
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Waits until the node accepts clients and its `/healthz` (JetStream current) answers 200.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), TestServerError> {
        let client: SocketAddr = ([127, 0, 0, 1], self.client_port).into();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(self.not_ready(format!("exited with {status}")));
                }
            }
            let accepts = TcpStream::connect_timeout(&client, Duration::from_millis(200)).is_ok();
            if accepts && healthz_ok(self.monitor_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready("deadline passed".into()));
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn not_ready(&self, why: String) -> TestServerError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        TestServerError::NotReady {
            name: self.name.clone(),
            waited: START_DEADLINE,
            log: format!("{why}\n{}", tail.join("\n")),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: the point of the cluster tests is surviving a crash, not a clean shutdown.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /healthz` on the monitoring port; 200 means the server (and JetStream) is healthy.
fn healthz_ok(monitor_port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], monitor_port).into();
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

fn write_config(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// A single JetStream-enabled `nats-server` on a free loopback port, killed on drop.
pub struct NatsServer {
    node: Node,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` with a temp store dir and waits (bounded) until it is ready.
    pub fn start() -> Result<Self, TestServerError> {
        with_fresh_ports(Self::start_once)
    }

    fn start_once() -> Result<Self, TestServerError> {
        let dir = tempfile::tempdir()?;
        let client_port = free_port()?;
        let monitor_port = free_port()?;
        let store = dir.path().join("jetstream");
        let config = dir.path().join("nats.conf");
        write_config(
            &config,
            &format!(
                "server_name: solo\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
                 jetstream {{\n  store_dir: {store:?}\n}}\n"
            ),
        )?;
        let mut node = Node {
            name: "solo".into(),
            config,
            log: dir.path().join("nats.log"),
            client_port,
            monitor_port,
            child: None,
        };
        node.spawn()?;
        node.wait_ready(Instant::now() + START_DEADLINE)?;
        Ok(NatsServer { node, _dir: dir })
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// Kills the server (SIGKILL), keeping its store dir.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the server again on the same port and store dir, waiting until it is ready.
    pub fn restart(&mut self) -> Result<(), TestServerError> {
        self.node.kill();
        self.node.spawn()?;
        self.node.wait_ready(Instant::now() + START_DEADLINE)
    }
}

/// A JetStream cluster of `n` nodes on loopback (routes between all of them), killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` clustered nodes and waits (bounded) until every one reports JetStream healthy.
    pub fn start(n: usize) -> Result<Self, TestServerError> {
        with_fresh_ports(|| Self::start_once(n))
    }

    fn start_once(n: usize) -> Result<Self, TestServerError> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, (client_port, cluster_port, monitor_port)) in ports.iter().copied().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            write_config(
                &config,
                &format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
                     jetstream {{\n  store_dir: {store:?}\n}}\n\
                     cluster {{\n  name: vetted-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [\n    {}\n  ]\n}}\n",
                    routes.join("\n    ")
                ),
            )?;
            nodes.push(Node {
                name: name.clone(),
                config,
                log: dir.path().join(format!("{name}.log")),
                client_port,
                monitor_port,
                child: None,
            });
        }
        for node in nodes.iter_mut() {
            node.spawn()?;
        }
        let deadline = Instant::now() + START_DEADLINE;
        for node in nodes.iter_mut() {
            node.wait_ready(deadline)?;
        }
        Ok(NatsCluster { nodes, _dir: dir })
    }

    /// Client URLs of every node (running or not), comma-separated, for [`crate::connect`].
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URL of node `i` (0-based).
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` is running (not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    /// Kills node `i` with SIGKILL; its store dir stays for [`NatsCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with the same ports and store dir, waiting until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<(), TestServerError> {
        let node = &mut self.nodes[i];
        node.kill();
        node.spawn()?;
        node.wait_ready(Instant::now() + START_DEADLINE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_before_the_server_binds_it_is_told_apart_from_other_failures() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("n.conf");
        let monitor_port = free_port().expect("port");
        write_config(
            &config,
            &format!("listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n"),
        )
        .expect("config");
        let mut node = Node {
            name: "n".into(),
            config,
            log: dir.path().join("n.log"),
            client_port: port,
            monitor_port,
            child: None,
        };
        node.spawn().expect("spawn");
        let error = node
            .wait_ready(Instant::now() + START_DEADLINE)
            .expect_err("the port is taken");
        assert!(error.is_port_clash(), "{error}");
        let other = TestServerError::NotReady {
            name: "n".into(),
            waited: START_DEADLINE,
            log: "deadline passed".into(),
        };
        assert!(!other.is_port_clash());
    }
}

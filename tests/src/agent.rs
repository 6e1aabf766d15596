//! The real `trustmap` binary, run as a child process.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `trustmap` process. Dropping it kills the process and removes its files.
pub struct Agent {
    child: Option<Child>,
    dir: PathBuf,
    pub output: PathBuf,
    pub log: PathBuf,
}

/// The binary under test: `TRUSTMAP_BIN`, or the workspace's debug build.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TRUSTMAP_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/trustmap");
    assert!(
        p.exists(),
        "{} does not exist: build it first (`cargo build -p trustmap`) or set TRUSTMAP_BIN",
        p.display()
    );
    p
}

/// Runs `trustmap <args>` to completion: (success, stdout, stderr).
pub fn run_trustmap(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .output()
        .expect("running trustmap");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Agent {
    /// Starts `trustmap <args>` with its output and log in a fresh directory, and waits until
    /// its log says `ready`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        Self::start_in(name, args, true)
    }

    /// Like [`start`](Self::start); `--output FILE` is added only when `with_output` (the
    /// `agent` subcommand has no such flag: its records are alerts and state).
    pub fn start_in(name: &str, args: &[&str], with_output: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "trustmap-e2e-{name}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        let output = dir.join("flows.jsonl");
        let log = dir.join("agent.log");
        let mut cmd = Command::new(binary());
        cmd.args(args);
        if with_output {
            cmd.arg("--output").arg(&output);
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("spawning trustmap");
        let mut agent = Self {
            child: Some(child),
            dir,
            output,
            log,
        };
        agent.wait_for_log(": ready interfaces=", Duration::from_secs(30));
        agent
    }

    /// The agent's scratch directory (removed on drop), for state and alert files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log if it does not in time, or if
    /// the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "trustmap exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "trustmap did not log {needle:?} within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends `signal`, waits for the exit (at most 15 s) and returns whether it was a success.
    pub fn signal_and_wait(&mut self, signal: i32) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "trustmap did not exit after signal {signal}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the agent with SIGINT, asserts a clean exit, and returns the flow records.
    pub fn stop(&mut self) -> Vec<serde_json::Value> {
        assert!(
            self.signal_and_wait(libc::SIGINT),
            "trustmap did not exit cleanly:\n{}",
            self.log_text()
        );
        self.records()
    }

    /// The JSON lines written so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(&self.output).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// A counter from the agent's final `stopped` log line, e.g. `malformed`.
    pub fn final_counter(&self, name: &str) -> u64 {
        let log = self.log_text();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("stopped"))
            .unwrap_or_else(|| panic!("no `stopped` line in the log:\n{log}"));
        let key = format!("{name}=");
        let start = line
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            + key.len();
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unreadable {name} in {line:?}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

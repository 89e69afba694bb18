//! Running configured commands and git checkouts for a job: no shell, output
//! streamed into the job's events, stopped on cancel or timeout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::config::Environment;
use crate::domain::Step;
use crate::store::{Store, StoreError};

/// Lines of output kept in a job's events per command.
const MAX_EVENT_LINES: usize = 400;
/// Bytes of output kept in a job's events per command (whichever of this
/// and [`MAX_EVENT_LINES`] comes first; a marker says how much was left out).
const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// The longest output line recorded; the rest of a longer one is dropped
/// (and the line says so).
const MAX_LINE_BYTES: usize = 4096;
/// Lines kept for a failure excerpt.
pub(crate) const EXCERPT_LINES: usize = 20;

/// Why a step did not complete.
#[derive(Debug)]
pub enum StepError {
    /// It failed; the reason and a short excerpt of the output.
    Failed {
        reason: String,
        excerpt: String,
    },
    Cancelled,
    TimedOut,
    Store(StoreError),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Store(e)
    }
}

impl StepError {
    pub fn failed(reason: impl Into<String>) -> StepError {
        StepError::Failed {
            reason: reason.into(),
            excerpt: String::new(),
        }
    }
}

/// One line of a command's output, read as bytes (anything that is not
/// UTF-8 is replaced, never the end of the stream) and cut at `max` bytes
/// with a marker; `None` at the end. At most `max` bytes are held, however
/// long the line.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut cut = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if line.is_empty() && cut == 0 {
                return Ok(None);
            }
            break;
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        cut += chunk.len().saturating_sub(room);
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if cut > 0 {
        text.push_str(&format!(" … ({cut} more bytes of this line not recorded)"));
    }
    Ok(Some(text))
}

/// Where a job's commands run and what they may be given.
pub struct Exec<'a> {
    pub store: &'a Store,
    pub job_id: i64,
    pub step: Step,
    pub deadline: tokio::time::Instant,
    pub cancel: watch::Receiver<bool>,
    /// The only environment its commands get.
    pub env: Arc<JobEnv>,
}

/// What a job's commands are given, and nothing else of deploybot's own:
/// `PATH`, `HOME` (the job's private directory), `LANG`, and the variables
/// the environment's configuration names (`env`, `env_from_files`).
#[derive(Default, Clone)]
pub struct JobEnv {
    vars: Vec<(String, String)>,
    /// Values that must never be shown: those read from `env_from_files`.
    secrets: Vec<String>,
}

/// Names only: the values may be secrets.
impl std::fmt::Debug for JobEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "JobEnv {names:?} ({} masked values)", self.secrets.len())
    }
}

/// `PATH` for job commands when deploybot's own has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

impl JobEnv {
    /// The environment for the commands of a job of `environment`, with
    /// `home` as its `HOME`; a file named in `env_from_files` that cannot be
    /// read fails the step.
    pub fn new(environment: &Environment, home: &Path) -> Result<JobEnv, StepError> {
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
        let mut vars = vec![
            ("PATH".to_string(), path),
            ("HOME".to_string(), home.display().to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        let mut set = |name: &str, value: String| {
            vars.retain(|(n, _)| n != name);
            vars.push((name.to_string(), value));
        };
        for (name, value) in &environment.env {
            set(name, value.clone());
        }
        let mut secrets = Vec::new();
        for (name, file) in &environment.env_from_files {
            let value = std::fs::read_to_string(file).map_err(|e| {
                StepError::failed(format!(
                    "cannot read {} for {name} (env_from_files): {e}",
                    file.display()
                ))
            })?;
            let value = value.trim_end_matches(['\n', '\r']).to_string();
            if !value.is_empty() {
                crate::mask::protect(&value);
                secrets.push(value.clone());
            }
            set(name, value);
        }
        // The builder's push credentials are handed to it as a file; what
        // they hold is masked like the values above.
        if let Some(file) = environment.builder_auth_file() {
            let text = std::fs::read_to_string(file).map_err(|e| {
                StepError::failed(format!(
                    "cannot read the builder's auth_file {}: {e}",
                    file.display()
                ))
            })?;
            for secret in crate::registry::secrets_of(&text) {
                crate::mask::protect(&secret);
                secrets.push(secret);
            }
        }
        Ok(JobEnv { vars, secrets })
    }

    /// The same environment with `name` set to `value` too.
    pub fn with(&self, name: &str, value: &str) -> JobEnv {
        let mut out = self.clone();
        out.vars.retain(|(n, _)| n != name);
        out.vars.push((name.to_string(), value.to_string()));
        out
    }

    /// `text` as it may be recorded or shown: [`crate::mask::redact`], with
    /// every value this job read from a file replaced by `[redacted]` too.
    pub fn mask(&self, text: &str) -> String {
        crate::mask::redact_with(text, &self.secrets)
    }
}

/// What a job's command prints, as the job records it: each line masked
/// (values read from files, credentials), private keys never, at most
/// [`MAX_EVENT_LINES`] lines, and the last [`EXCERPT_LINES`] kept for a
/// failure's excerpt. Local commands and Jobs in the cluster share it.
pub struct Output<'a> {
    store: &'a Store,
    job_id: i64,
    step: Step,
    env: Arc<JobEnv>,
    kept: Kept,
    in_key: bool,
    tail: Vec<String>,
    /// `tail` was read from the log's end ([`Output::last_lines_from`]).
    tail_from_log: bool,
}

impl<'a> Output<'a> {
    pub fn new(store: &'a Store, job_id: i64, step: Step, env: Arc<JobEnv>) -> Output<'a> {
        Output {
            store,
            job_id,
            step,
            env,
            kept: Kept::default(),
            in_key: false,
            tail: Vec::new(),
            tail_from_log: false,
        }
    }

    async fn event(&self, message: String) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        Store::add_output(&mut tx, self.job_id, self.step, &message).await?;
        tx.commit().await
    }

    /// Records the command line about to run (`$ make deploy`), masked.
    pub async fn echo(&self, argv: &[String]) -> Result<(), StoreError> {
        let shown = self.env.mask(&argv.join(" "));
        self.event(format!("$ {}", crate::status::redact(&shown)))
            .await
    }

    /// Records one line of output.
    pub async fn line(&mut self, line: String) -> Result<(), StoreError> {
        // A private key printed by a command is never recorded, line by line.
        let line = if line.contains("PRIVATE KEY-----") {
            self.in_key = line.contains("-----BEGIN");
            "[redacted private key]".to_string()
        } else if self.in_key {
            return Ok(());
        } else {
            crate::status::redact(&self.env.mask(&line))
        };
        if self.kept.take(&line) {
            self.event(format!("│ {line}")).await?;
        }
        self.tail.push(line);
        if self.tail.len() > EXCERPT_LINES {
            self.tail.remove(0);
        }
        Ok(())
    }

    /// Records output read as bytes: split into lines, each cut at
    /// [`MAX_LINE_BYTES`], anything that is not UTF-8 replaced.
    pub async fn bytes(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        while let Ok(Some(line)) = read_line(&mut bytes, MAX_LINE_BYTES).await {
            self.line(line).await?;
        }
        Ok(())
    }

    /// Whether no more lines will be recorded.
    pub fn full(&self) -> bool {
        self.kept.dropped_lines > 0
    }

    /// The command ended: record what was left out, if anything, then its
    /// last lines (up to [`EXCERPT_LINES`] of those left out: where a long
    /// run says how it ended, e.g. ansible's PLAY RECAP). `counted` says
    /// whether every line was read (a local command's are; a cluster Job's
    /// log is no longer read once the output is full, and its last lines
    /// are given with [`Output::last_lines_from`]).
    pub async fn finish(&mut self, counted: bool) -> Result<(), StoreError> {
        let Some(marker) = self.kept.marker(counted) else {
            return Ok(());
        };
        self.event(marker).await?;
        let unrecorded = match (counted, self.tail_from_log) {
            (true, _) => self.kept.dropped_lines.min(self.tail.len()),
            (false, true) => self.tail.len(),
            (false, false) => 0,
        };
        let last: Vec<String> = self.tail[self.tail.len() - unrecorded..].to_vec();
        for line in last {
            self.event(format!("│ {line}")).await?;
        }
        Ok(())
    }

    /// The last lines of a log whose end was not read line by line (a
    /// cluster Job's, once the output was full): masked like recorded lines.
    pub async fn last_lines_from(&mut self, bytes: &[u8]) {
        let text = self.excerpt_of(bytes).await;
        self.tail = text.lines().map(str::to_string).collect();
        self.tail_from_log = true;
    }

    /// The last lines, for a failure's excerpt.
    pub fn excerpt(&self) -> String {
        self.tail.join("\n")
    }

    /// The last lines of `bytes` (masked like recorded lines), for an excerpt.
    pub async fn excerpt_of(&self, mut bytes: &[u8]) -> String {
        let mut lines = Vec::new();
        let mut in_key = false;
        while let Ok(Some(line)) = read_line(&mut bytes, MAX_LINE_BYTES).await {
            if line.contains("PRIVATE KEY-----") {
                in_key = line.contains("-----BEGIN");
                lines.push("[redacted private key]".to_string());
            } else if !in_key {
                lines.push(crate::status::redact(&self.env.mask(&line)));
            }
        }
        lines[lines.len().saturating_sub(EXCERPT_LINES)..].join("\n")
    }
}

impl Exec<'_> {
    /// Run `argv` in `cwd`; Ok when it exits 0.
    pub async fn run(&mut self, argv: &[String], cwd: &Path) -> Result<(), StepError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(StepError::failed("empty command"));
        };
        let mut output = Output::new(self.store, self.job_id, self.step, self.env.clone());
        output.echo(argv).await?;
        let mut command = tokio::process::Command::new(program);
        command
            .env_clear()
            .envs(self.env.vars.iter().map(|(k, v)| (k, v)))
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| StepError::failed(format!("cannot start `{program}`: {e}")))?;
        let pid = child.id();
        let (tx_lines, mut lines) = tokio::sync::mpsc::channel::<String>(256);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx_lines = tx_lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                while let Ok(Some(line)) = read_line(&mut reader, MAX_LINE_BYTES).await {
                    if tx_lines.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx_lines);
        let mut streams_open = true;
        let status = loop {
            tokio::select! {
                line = lines.recv(), if streams_open => match line {
                    Some(line) => output.line(line).await?,
                    None => {
                        streams_open = false;
                        output.finish(true).await?;
                    }
                },
                status = child.wait(), if !streams_open => {
                    break status.map_err(|e| StepError::failed(format!("`{program}`: {e}")))?;
                }
                _ = tokio::time::sleep_until(self.deadline) => {
                    output.finish(true).await?;
                    stop(pid).await;
                    let _ = child.kill().await;
                    return Err(StepError::TimedOut);
                }
                _ = self.cancel.changed() => {
                    if *self.cancel.borrow() {
                        output.finish(true).await?;
                        stop(pid).await;
                        let _ = child.kill().await;
                        return Err(StepError::Cancelled);
                    }
                }
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(StepError::Failed {
                reason: format!("`{program}` exited with {status}"),
                excerpt: output.excerpt(),
            })
        }
    }
}

/// How much of one command's output is recorded: the first
/// [`MAX_EVENT_LINES`] lines or [`MAX_COMMAND_BYTES`] bytes, then a count of
/// what was left out.
#[derive(Default)]
struct Kept {
    lines: usize,
    bytes: usize,
    dropped_lines: usize,
    dropped_bytes: usize,
    /// The marker was recorded.
    told: bool,
}

impl Kept {
    /// Whether `line` is recorded (else it is counted as left out).
    fn take(&mut self, line: &str) -> bool {
        let size = line.len() + 1;
        if self.dropped_lines == 0
            && self.lines < MAX_EVENT_LINES
            && self.bytes + size <= MAX_COMMAND_BYTES
        {
            self.lines += 1;
            self.bytes += size;
            true
        } else {
            self.dropped_lines += 1;
            self.dropped_bytes += size;
            false
        }
    }

    /// The line that says what was left out, once, if anything was
    /// (`counted`: how much is known).
    fn marker(&mut self, counted: bool) -> Option<String> {
        if self.dropped_lines == 0 || self.told {
            return None;
        }
        self.told = true;
        if !counted {
            return Some(format!(
                "│ … (further output of this command not recorded: at most {MAX_EVENT_LINES} lines \
                 or {} KiB are kept a command)",
                MAX_COMMAND_BYTES / 1024
            ));
        }
        let text = format!(
            "│ … ({} more line(s), {} byte(s) of this command's output not recorded: \
             at most {MAX_EVENT_LINES} lines or {} KiB are kept a command)",
            self.dropped_lines,
            self.dropped_bytes,
            MAX_COMMAND_BYTES / 1024
        );
        self.told = true;
        Some(text)
    }
}

/// Stop a command's whole process group (make, ansible and their children).
async fn stop(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// The clone URL of `repo` (`owner/name`) from the configured template.
pub fn clone_url(template: &str, repo: &str) -> String {
    template.replace("{repo}", repo)
}

/// Check out `url` at `revision` (a commit SHA or a branch) into `dir`.
pub async fn checkout(
    exec: &mut Exec<'_>,
    url: &str,
    revision: &str,
    dir: &Path,
) -> Result<(), StepError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StepError::failed(format!("cannot create {}: {e}", dir.display())))?;
    let d = dir.display().to_string();
    let git = |args: &[&str]| -> Vec<String> {
        ["git", "-C", &d]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    exec.run(&git(&["init", "--quiet"]), dir).await?;
    exec.run(
        &git(&["fetch", "--quiet", "--depth", "1", url, revision]),
        dir,
    )
    .await?;
    exec.run(
        &git(&["checkout", "--quiet", "--detach", "FETCH_HEAD"]),
        dir,
    )
    .await
}

/// A job's scratch folder, removed when dropped.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    /// A directory of the job's own under `root`: an unpredictable name,
    /// readable by deploybot's user only, removed when the job is done. Its
    /// `home` is the commands' `HOME`.
    pub fn new(root: &Path, job_id: i64) -> Result<WorkDir, StepError> {
        use std::os::unix::fs::DirBuilderExt;
        let cannot = |dir: &Path, e: std::io::Error| {
            StepError::failed(format!("cannot create {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(root).map_err(|e| cannot(root, e))?;
        let dir = root.join(format!("job-{job_id}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| cannot(&dir, e))?;
        let work = WorkDir(dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(work.home())
            .map_err(|e| cannot(&work.home(), e))?;
        Ok(work)
    }

    /// The commands' `HOME`.
    pub fn home(&self) -> PathBuf {
        self.0.join("home")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wait until `deadline`, cancellation, or `fut` — whichever is first.
pub async fn bounded<T>(
    deadline: tokio::time::Instant,
    cancel: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    if *cancel.borrow() {
        return Err(StepError::Cancelled);
    }
    tokio::select! {
        r = fut => r,
        _ = tokio::time::sleep_until(deadline) => Err(StepError::TimedOut),
        _ = async {
            loop {
                if cancel.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if *cancel.borrow() {
                    return;
                }
            }
        } => Err(StepError::Cancelled),
    }
}

pub fn deadline(timeout: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_directory_is_private_and_unpredictable() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile_root();
        let a = WorkDir::new(&root, 7).expect("work dir");
        let b = WorkDir::new(&root, 7).expect("work dir");
        assert_ne!(a.0, b.0, "two runs of one job get different names");
        for dir in [&a.0, &a.home()] {
            let mode = std::fs::metadata(dir).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        }
        let name = a.0.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("job-7-") && name.len() > 30, "{name}");
        let path = a.0.clone();
        drop(a);
        assert!(!path.exists(), "removed when the job is done");
        drop(b);
        let _ = std::fs::remove_dir_all(&root);
    }

    async fn lines_of(bytes: &[u8]) -> Vec<String> {
        let mut reader = tokio::io::BufReader::with_capacity(1024, bytes);
        let mut out = Vec::new();
        while let Some(line) = read_line(&mut reader, MAX_LINE_BYTES).await.expect("read") {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn output_is_read_as_bytes_and_capped_per_line() {
        // A 1 MB line is cut (holding 4 KiB at most) and says so; the next
        // line still arrives.
        let mut big = vec![b'x'; 1 << 20];
        big.extend_from_slice(b"\nafter\n");
        let lines = lines_of(&big).await;
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE_BYTES)));
        assert!(
            lines[0].ends_with(&format!(
                " … ({} more bytes of this line not recorded)",
                (1 << 20) - MAX_LINE_BYTES
            )),
            "{}",
            &lines[0][MAX_LINE_BYTES..]
        );
        assert_eq!(lines[1], "after");
        // Bytes that are not UTF-8 do not end the stream.
        let lines = lines_of(b"ok\nbad \xff\xfe here\r\nlast").await;
        assert_eq!(lines, ["ok", "bad \u{fffd}\u{fffd} here", "last"]);
    }

    #[test]
    fn a_commands_recorded_output_is_capped_and_says_how_much_was_left_out() {
        let mut kept = Kept::default();
        let line = "y".repeat(99);
        let taken = (0..1000).filter(|_| kept.take(&line)).count();
        assert_eq!(taken, MAX_EVENT_LINES);
        assert_eq!(
            kept.marker(true).as_deref(),
            Some(
                "│ … (600 more line(s), 60000 byte(s) of this command's output not recorded: \
                 at most 400 lines or 256 KiB are kept a command)"
            )
        );
        assert_eq!(kept.marker(true), None, "said once");
        // Long lines reach the byte cap first.
        let mut kept = Kept::default();
        let long = "z".repeat(MAX_LINE_BYTES);
        let taken = (0..100).filter(|_| kept.take(&long)).count();
        assert_eq!(taken, MAX_COMMAND_BYTES / (MAX_LINE_BYTES + 1));
        assert!(kept.marker(true).is_some());
        assert_eq!(
            Kept::default().marker(true),
            None,
            "nothing left out, nothing said"
        );
    }

    fn tempfile_root() -> PathBuf {
        std::env::temp_dir().join(format!(
            "deploybot-exec-test-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }
}

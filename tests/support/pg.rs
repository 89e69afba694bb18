//! A real PostgreSQL for tests: one brand-new, empty database per call.
//!
//! * With `DATABASE_URL=postgres://...` set, databases are created on that
//!   server (through its maintenance database `postgres`, falling back to the
//!   database named in the URL). They are left there afterwards: they are
//!   all named `deploybot_t_<random>`, so they are easy to drop in bulk.
//! * Otherwise the first call starts ONE throwaway server for the whole test
//!   process (`initdb` + `postgres` from the machine's PostgreSQL, the highest
//!   version under `/usr/lib/postgresql/*/bin`, else `PATH`), in a temporary
//!   directory under `/tmp`, listening on a free port of 127.0.0.1 only, with
//!   durability switched off (`fsync`, `synchronous_commit`,
//!   `full_page_writes`).
//!
//! Cleanup of the throwaway server, although Rust never drops statics: the
//! server is started by a tiny `sh` supervisor whose standard input is a pipe.
//! The test process keeps the pipe's write end open in a static (it is
//! close-on-exec, so no other child inherits it). When the test process ends,
//! however it ends (normal exit, panic, SIGKILL), the kernel closes the pipe,
//! the supervisor's `read` returns, and it stops postgres with SIGINT (fast
//! shutdown), waits for it and removes the directory. The supervisor runs in
//! its own process group so that a Ctrl-C in the terminal does not kill it
//! before it has cleaned up.
//!
//! PostgreSQL refuses to run as root: when the effective uid is 0, `initdb` and
//! the supervisor (hence `postgres`) run as the `postgres` system user through
//! `runuser`, and the temporary directory is handed to that user.
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// Prefix of every database this module creates.
pub const DATABASE_PREFIX: &str = "deploybot_t_";

/// How long the throwaway server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The URL of a brand-new, empty database, one per call.
pub async fn fresh_database_url() -> String {
    let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let candidates = match external_server_url() {
        Some(url) => vec![with_database(&url, "postgres"), url],
        None => {
            let server = match tokio::task::spawn_blocking(throwaway_server).await {
                Ok(server) => server,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => panic!("starting the throwaway PostgreSQL server failed: {err}"),
            };
            vec![server.url("postgres")]
        }
    };
    let admin = candidates.last().expect("at least one URL").clone();
    let mut conn = connect_first(&candidates).await;
    create_database(&mut conn, &name).await;
    let _ = conn.close().await;
    with_database(&admin, &name)
}

/// True when the databases come from a throwaway server started by this
/// process (no usable `DATABASE_URL`).
pub fn database_is_throwaway() -> bool {
    external_server_url().is_none()
}

/// `DATABASE_URL`, when it names a PostgreSQL server.
fn external_server_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
}

async fn connect_first(urls: &[String]) -> PgConnection {
    let mut errors = Vec::new();
    for url in urls {
        match PgConnection::connect(url).await {
            Ok(conn) => return conn,
            Err(err) => errors.push(format!("{}: {err}", redact(url))),
        }
    }
    panic!(
        "cannot connect to PostgreSQL to create a test database:\n  {}",
        errors.join("\n  ")
    );
}

async fn create_database(conn: &mut PgConnection, name: &str) {
    // The name is ours (prefix + hex), so it needs no quoting beyond this.
    let sql = format!("CREATE DATABASE \"{name}\"");
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return,
            // 55006 object_in_use: "source database template1 is being
            // accessed by other users" (someone else is connected to it).
            Err(sqlx::Error::Database(err))
                if err.code().as_deref() == Some("55006") && attempt < 20 =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{sql} failed: {err}"),
        }
    }
}

/// `url` with its database (path) replaced by `database`; the query string is
/// kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &head[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The throwaway server
// ---------------------------------------------------------------------------

/// The throwaway PostgreSQL of this test process.
pub struct ThrowawayServer {
    port: u16,
    dir: PathBuf,
    /// The supervisor; never waited for: it outlives us on purpose.
    _supervisor: Mutex<Child>,
    /// Write end of the supervisor's stdin. Closing it (at process exit)
    /// stops the server and removes `dir`.
    _keepalive: Mutex<ChildStdin>,
}

impl ThrowawayServer {
    /// URL of `database` on this server (user `postgres`, trust auth).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (data directory, socket directory, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

static SERVER: OnceLock<Result<ThrowawayServer, String>> = OnceLock::new();

/// The throwaway server of this process, started on first use. Blocking: call
/// it from `spawn_blocking` in async code. Thread-safe; a failed start is
/// remembered, so every later caller fails with the same message at once.
pub fn throwaway_server() -> &'static ThrowawayServer {
    match SERVER.get_or_init(start_with_retries) {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

struct StartError {
    message: String,
    /// The port was taken between choosing it and binding it.
    port_in_use: bool,
}

fn start_with_retries() -> Result<ThrowawayServer, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start() {
            Ok(server) => return Ok(server),
            Err(err) if err.port_in_use && attempt < 5 => continue,
            Err(err) => {
                return Err(format!(
                    "could not start a throwaway PostgreSQL for the tests (set DATABASE_URL \
                     to use an existing server instead): {}",
                    err.message
                ));
            }
        }
    }
}

fn start() -> Result<ThrowawayServer, StartError> {
    let fail = |message: String| StartError {
        message,
        port_in_use: false,
    };
    let (initdb, postgres) = find_binaries().map_err(fail)?;
    let run_as = if effective_uid().map_err(fail)? == 0 {
        Some(system_user_ids("postgres").map_err(|e| {
            fail(format!(
                "running as root, and PostgreSQL refuses to run as root, but there is no usable \
                 `postgres` system user to run it as ({e})"
            ))
        })?)
    } else {
        None
    };

    let dir = make_server_dir(run_as).map_err(fail)?;
    let remove_dir = |message: String| {
        let _ = fs::remove_dir_all(&dir);
        fail(message)
    };
    let data = dir.join("data");
    let sock = dir.join("sock");
    let log = dir.join("server.log");

    let started = Instant::now();
    let mut init = command(run_as, &initdb);
    init.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
        .args(["--locale=C", "--no-sync", "--no-instructions"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log_file(&log).map_err(remove_dir)?)
        .stderr(log_file(&log).map_err(remove_dir)?);
    match init.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            let tail = log_tail(&log);
            return Err(remove_dir(format!(
                "{} failed ({status}):\n{tail}",
                initdb.display()
            )));
        }
        Err(err) => {
            return Err(remove_dir(format!(
                "cannot run {}: {err}",
                initdb.display()
            )));
        }
    }

    let port = free_port().map_err(remove_dir)?;
    // All paths are positional arguments: nothing is interpolated into the
    // script. $1 is the directory to remove, the rest is the server command.
    const SUPERVISOR: &str = r#"dir=$1; shift
"$@" </dev/null &
pid=$!
read _ignored
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;
    let mut supervisor = command(run_as, Path::new("sh"));
    supervisor
        .args(["-c", SUPERVISOR, "sh"])
        .arg(&dir)
        .arg(&postgres)
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&sock)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off"])
        .args(["-c", "max_connections=300"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(log_file(&log).map_err(remove_dir)?)
        .stderr(log_file(&log).map_err(remove_dir)?)
        .process_group(0);
    let mut child = supervisor
        .spawn()
        .map_err(|err| remove_dir(format!("cannot spawn the PostgreSQL supervisor: {err}")))?;
    let keepalive = child.stdin.take().expect("stdin is piped");

    if let Err(message) = wait_until_ready(&data, &log) {
        let tail = log_tail(&log);
        // Closing stdin makes the supervisor stop postgres and remove the
        // directory; wait for that so a retry starts from a clean slate.
        drop(keepalive);
        let _ = child.wait();
        let _ = fs::remove_dir_all(&dir);
        return Err(StartError {
            port_in_use: tail.contains("Address already in use") || tail.contains("could not bind"),
            message: format!("{message}; end of the server log:\n{tail}"),
        });
    }
    if std::env::var_os("DEPLOYBOT_TEST_PG_VERBOSE").is_some() {
        eprintln!(
            "throwaway PostgreSQL on 127.0.0.1:{port} in {} (ready after {:?})",
            dir.display(),
            started.elapsed()
        );
    }
    Ok(ThrowawayServer {
        port,
        dir,
        _supervisor: Mutex::new(child),
        _keepalive: Mutex::new(keepalive),
    })
}

/// `Command` for `program`, run as the given user through `runuser` if any.
fn command(run_as: Option<(u32, u32)>, program: &Path) -> Command {
    let mut cmd = match run_as {
        Some(_) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    for var in ["PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"] {
        cmd.env_remove(var);
    }
    cmd
}

/// A fresh directory under /tmp, traversable by everyone (the server's files
/// live in its `data` subdirectory, which initdb creates with mode 0700), and
/// owned by the server's user.
fn make_server_dir(run_as: Option<(u32, u32)>) -> Result<PathBuf, String> {
    let dir = tempfile::Builder::new()
        .prefix("deploybot-pg-")
        .tempdir_in("/tmp")
        .map_err(|e| format!("cannot create a directory under /tmp: {e}"))?
        .keep();
    let setup = || -> std::io::Result<()> {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        fs::create_dir(dir.join("sock"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(dir.join("sock"), Some(uid), Some(gid))?;
        }
        Ok(())
    };
    setup().map_err(|e| {
        let _ = fs::remove_dir_all(&dir);
        format!("cannot prepare {}: {e}", dir.display())
    })?;
    Ok(dir)
}

fn log_file(path: &Path) -> Result<File, String> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Polls `postmaster.pid` (whose 8th line becomes `ready` once the server
/// accepts connections, which is what `pg_ctl -w` waits for) and the log (a
/// `FATAL` line means the start failed).
fn wait_until_ready(data: &Path, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let pid_file = data.join("postmaster.pid");
    loop {
        if let Ok(text) = fs::read_to_string(&pid_file)
            && text.lines().nth(7).map(str::trim) == Some("ready")
        {
            return Ok(());
        }
        if fs::read_to_string(log).is_ok_and(|text| text.contains("FATAL:")) {
            return Err("PostgreSQL failed to start".to_string());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "PostgreSQL did not accept connections within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| e.to_string())
}

/// `initdb` and `postgres` of the highest version in
/// `/usr/lib/postgresql/*/bin`, else from `PATH`.
fn find_binaries() -> Result<(PathBuf, PathBuf), String> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok((bin.join("initdb"), bin.join("postgres")));
    }
    let in_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    };
    match (in_path("initdb"), in_path("postgres")) {
        (Some(initdb), Some(postgres)) => Ok((initdb, postgres)),
        _ => Err("no PostgreSQL server installation found: neither \
                  /usr/lib/postgresql/*/bin nor PATH has initdb and postgres \
                  (install the `postgresql` package)"
            .to_string()),
    }
}

fn effective_uid() -> Result<u32, String> {
    id(&["-u"])
}

fn system_user_ids(user: &str) -> Result<(u32, u32), String> {
    Ok((id(&["-u", user])?, id(&["-g", user])?))
}

/// Runs `id ARGS` and parses its number.
fn id(args: &[&str]) -> Result<u32, String> {
    let output = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `id`: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`id {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    text.trim()
        .parse()
        .map_err(|_| format!("`id {}` printed {text:?}", args.join(" ")))
}

// ---------------------------------------------------------------------------
// A private server that a test stops and starts
// ---------------------------------------------------------------------------

/// A PostgreSQL server of one test's own (never shared: the test stops and
/// restarts it), run with `pg_ctl`; stopped and removed when dropped.
pub struct PrivateServer {
    durable: bool,
    pg_ctl: PathBuf,
    run_as: Option<(u32, u32)>,
    dir: PathBuf,
    port: u16,
}

impl PrivateServer {
    /// initdb + start, on a free port of 127.0.0.1, with durability off
    /// (as the throwaway server). Blocking.
    pub fn start() -> PrivateServer {
        PrivateServer::start_with(false)
    }

    /// Like [`PrivateServer::start`], with PostgreSQL's default durability:
    /// every commit is flushed to disk (`fsync`, `synchronous_commit`).
    pub fn start_durable() -> PrivateServer {
        PrivateServer::start_with(true)
    }

    fn start_with(durable: bool) -> PrivateServer {
        let (initdb, postgres) = find_binaries().unwrap_or_else(|e| panic!("{e}"));
        let pg_ctl = postgres.with_file_name("pg_ctl");
        let run_as = match effective_uid().unwrap_or_else(|e| panic!("{e}")) {
            0 => Some(system_user_ids("postgres").unwrap_or_else(|e| panic!("{e}"))),
            _ => None,
        };
        let dir = make_server_dir(run_as).unwrap_or_else(|e| panic!("{e}"));
        let status = command(run_as, &initdb)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let server = PrivateServer {
            durable,
            pg_ctl,
            run_as,
            dir,
            port: free_port().unwrap_or_else(|e| panic!("{e}")),
        };
        server.resume();
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        command(self.run_as, &self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stop it (fast shutdown: open connections are cut). Blocking.
    pub fn stop(&self) {
        assert!(
            self.pg_ctl(&["stop", "-m", "fast", "-w"]),
            "pg_ctl stop failed"
        );
    }

    /// Start it again on the same port and data. Blocking.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100{}",
            self.port,
            self.dir.join("sock").display(),
            if self.durable {
                ""
            } else {
                " -c fsync=off -c synchronous_commit=off"
            }
        );
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy();
        assert!(
            self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &options]),
            "pg_ctl start failed: {}",
            log_tail(&self.dir.join("server.log"))
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

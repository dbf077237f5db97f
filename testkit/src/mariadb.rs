//! A MariaDB server of a test's own (a temporary data directory, a free port, the same
//! binaries as the stack), for tests that need a server configured unlike the stack's
//! (a replica pair, a server left at REPEATABLE READ), or one a test may kill
//! ([`Server::kill9`], [`Server::restart`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A MariaDB server of this test; killed and removed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    dir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A MariaDB program, from PATH or the Debian package's sbin.
fn program(name: &str) -> String {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return name.to_owned();
    }
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_owned())
}

/// `mariadbd` on the `my.cnf` in `dir`.
fn spawn(dir: &std::path::Path) -> Child {
    Command::new(program("mariadbd"))
        .arg(format!("--defaults-file={}/my.cnf", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadbd")
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Server {
    /// Initialises and starts a server named `name` with `extra` lines in its
    /// `[mysqld]` section; waits (60 s at most) until it answers.
    ///
    /// # Panics
    /// When it cannot be installed or does not start.
    pub fn start(name: &str, server_id: u32, extra: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "exchange-test-mariadb-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let d = dir.display();
        let cnf = format!(
            "[mysqld]\nuser = {user}\ndatadir = {d}/data\nport = {port}\nbind-address = 127.0.0.1\n\
             socket = {d}/sock\npid-file = {d}/pid\nlog-error = {d}/err.log\nserver-id = {server_id}\n\
             skip-name-resolve\ninnodb_buffer_pool_size = 32M\ninnodb_log_file_size = 16M\n\
             performance_schema = OFF\n{extra}\n",
            user = whoami()
        );
        std::fs::write(dir.join("my.cnf"), cnf).expect("my.cnf");
        let cnf = format!("--defaults-file={d}/my.cnf");
        let init = Command::new(program("mariadb-install-db"))
            .args([
                cnf.as_str(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db (installed by scripts/install.sh)");
        assert!(
            init.status.success(),
            "install-db: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let child = spawn(&dir);
        let server = Self { child, dir, port };
        server.wait_answering(name);
        server
    }

    /// Kills the server with SIGKILL (no shutdown, no flush: a crash) and reaps it; the
    /// data directory stays for [`Server::restart`].
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn kill9(&mut self) {
        // std's kill is SIGKILL on unix; an already reaped child is fine
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().expect("SIGKILL mariadbd");
        }
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data directory and port (InnoDB runs its
    /// crash recovery) and waits (60 s at most) until it answers.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = spawn(&self.dir);
        self.wait_answering("restarted server");
    }

    fn wait_answering(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sql("SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} did not start: {}",
                std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs SQL as root over the socket; stdout.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(program("mariadb"))
            .args([
                "--no-defaults",
                &format!("--socket={}/sock", self.dir.display()),
                "-uroot",
                "-N",
                "-e",
                sql,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `mysql://user:user@127.0.0.1:port` (a user whose password is its name).
    pub fn url(&self, user: &str) -> String {
        format!("mysql://{user}:{user}@127.0.0.1:{}", self.port)
    }
}

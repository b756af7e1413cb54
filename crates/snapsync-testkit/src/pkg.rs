//! Package indexes for the package-mirror tests: pypiserver (open, or taking uploads with an htpasswd
//! user), devpi-server (PEP 691 JSON, a user and an index made through its REST API), Python's
//! `http.server` over a folder (a static PEP 503 tree), tiny distributions built with Python's
//! standard library, and twine to upload them the way users do.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Process, free_port, pip_install, python, workdir};

/// The user the upload-taking test indexes accept.
pub const PKG_USER: &str = "uploader";
/// Its password (with characters that must be percent-encoded in a URL).
pub const PKG_PASSWORD: &str = "s3cr:t@pw";

fn scratch(kind: &str, port: u16) -> PathBuf {
    let dir = workdir().join(format!("{kind}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn run_python(pythonpath: &Path, args: &[&str], what: &str) -> String {
    let out = Command::new(python())
        .env("PYTHONPATH", pythonpath)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `GET path` on the port answers 200 (devpi listens well before it serves).
fn wait_for_http(process: &mut Process, port: u16, path: &str, timeout: Duration) {
    process.wait_for_port(port, timeout);
    let started = Instant::now();
    loop {
        let ok = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            Some(head.ends_with(b"200"))
        });
        if ok == Some(true) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "127.0.0.1:{port}{path} did not answer 200 within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pypiserver on 127.0.0.1 serving a folder (PEP 503 HTML at `/simple/`, uploads at `/`).
#[derive(Debug)]
pub struct PypiServer {
    process: Process,
    port: u16,
    dir: PathBuf,
}

impl PypiServer {
    fn pythonpath() -> PathBuf {
        // bcrypt 4.1 and later break passlib, which pypiserver's htpasswd support uses.
        pip_install("pypiserver", &["pypiserver==2.*", "passlib==1.7.*", "bcrypt<4.1"])
    }

    /// An open server (anyone reads, nobody uploads) serving copies of `files`.
    #[must_use]
    pub fn start_open(files: &[PathBuf]) -> PypiServer {
        let pythonpath = Self::pythonpath();
        let port = free_port();
        let dir = scratch("pypiserver", port);
        let packages = dir.join("packages");
        std::fs::create_dir_all(&packages).expect("create the packages folder");
        for file in files {
            let name = file.file_name().expect("a file name");
            std::fs::copy(file, packages.join(name)).expect("copy a distribution");
        }
        let process = Self::spawn(&pythonpath, port, &dir, &[]);
        PypiServer { process, port, dir }
    }

    /// A server that takes uploads from [`PKG_USER`] with [`PKG_PASSWORD`] (an htpasswd file; reads
    /// need no password), starting empty.
    #[must_use]
    pub fn start_with_auth() -> PypiServer {
        let pythonpath = Self::pythonpath();
        let port = free_port();
        let dir = scratch("pypiserver", port);
        std::fs::create_dir_all(dir.join("packages")).expect("create the packages folder");
        let htpasswd = dir.join("htpasswd");
        run_python(
            &pythonpath,
            &[
                "-c",
                "import sys\nfrom passlib.apache import HtpasswdFile\n\
                 h = HtpasswdFile(sys.argv[1], new=True)\nh.set_password(sys.argv[2], sys.argv[3])\nh.save()\n",
                &htpasswd.to_string_lossy(),
                PKG_USER,
                PKG_PASSWORD,
            ],
            "writing the htpasswd file",
        );
        let htpasswd = htpasswd.to_string_lossy().into_owned();
        let process = Self::spawn(&pythonpath, port, &dir, &["-a", "update", "-P", &htpasswd]);
        PypiServer { process, port, dir }
    }

    fn spawn(pythonpath: &Path, port: u16, dir: &Path, extra: &[&str]) -> Process {
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut process = Process::spawn(
            "pypiserver",
            Command::new(python())
                .env("PYTHONPATH", pythonpath)
                .args([
                    "-m",
                    "pypiserver",
                    "run",
                    "-p",
                    &port.to_string(),
                    "-i",
                    "127.0.0.1",
                    "--disable-fallback",
                ])
                .args(extra)
                .arg(dir.join("packages"))
                .stdout(Stdio::null())
                .stderr(log_file),
        )
        .with_log(&log);
        wait_for_http(&mut process, port, "/simple/", Duration::from_mins(1));
        process
    }

    /// `http://127.0.0.1:PORT/` (the upload URL).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `http://127.0.0.1:PORT/simple/`.
    #[must_use]
    pub fn simple_url(&self) -> String {
        format!("{}simple/", self.url())
    }

    /// The folder it serves (files dropped here are served at once).
    #[must_use]
    pub fn packages(&self) -> PathBuf {
        self.dir.join("packages")
    }

    /// Stops it now.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

impl Drop for PypiServer {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A devpi-server on 127.0.0.1 (hermetic: no PyPI mirror), with the user [`PKG_USER`] and its
/// volatile index `dev` (simple index at `/uploader/dev/+simple/`, PEP 691 JSON on request).
#[derive(Debug)]
pub struct DevpiServer {
    process: Process,
    port: u16,
    dir: PathBuf,
    pythonpath: PathBuf,
}

impl DevpiServer {
    /// Installs devpi-server (once), initialises a server folder, starts it (about 10 s) and makes the
    /// user and the index.
    #[must_use]
    pub fn start() -> DevpiServer {
        let pythonpath = pip_install("devpi", &["devpi-server==6.*"]);
        let port = free_port();
        let dir = scratch("devpi", port);
        let serverdir = dir.join("server");
        let serverdir_text = serverdir.to_string_lossy().into_owned();
        run_python(
            &pythonpath,
            &[
                "-W",
                "ignore",
                "-c",
                "import sys\nfrom devpi_server.init import init\nsys.argv[0] = 'devpi-init'\nsys.exit(init())\n",
                "--serverdir",
                &serverdir_text,
                "--no-root-pypi",
            ],
            "devpi-init",
        );
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut process = Process::spawn(
            "devpi-server",
            Command::new(python())
                .env("PYTHONPATH", &pythonpath)
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import sys\nfrom devpi_server.main import main\nsys.argv[0] = 'devpi-server'\nsys.exit(main())\n",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--serverdir",
                    &serverdir_text,
                ])
                .stdout(Stdio::null())
                .stderr(log_file),
        )
        .with_log(&log);
        wait_for_http(&mut process, port, "/+api", Duration::from_mins(2));
        let server = DevpiServer {
            process,
            port,
            dir,
            pythonpath,
        };
        // The user, then its index, through devpi's REST API (what devpi-client does).
        let script = "import base64, json, sys, urllib.request\n\
            root, user, password = sys.argv[1:4]\n\
            def put(url, body):\n\
            \x20   request = urllib.request.Request(url, data=json.dumps(body).encode(), method='PUT', headers={'Content-Type': 'application/json', 'Accept': 'application/json'})\n\
            \x20   urllib.request.urlopen(request).read()\n\
            put(root + user, {'password': password, 'email': 'test@example.com'})\n";
        run_python(
            &server.pythonpath,
            &["-c", script, &server.root_url(), PKG_USER, PKG_PASSWORD],
            "creating the devpi user",
        );
        server.create_index("dev");
        server
    }

    /// Makes another volatile index of [`PKG_USER`] (`/uploader/NAME/`).
    pub fn create_index(&self, name: &str) {
        let script = "import base64, json, sys, urllib.request\n\
            url, auth = sys.argv[1:3]\n\
            request = urllib.request.Request(url, data=json.dumps({'bases': [], 'volatile': True}).encode(), method='PUT', headers={'Content-Type': 'application/json', 'Accept': 'application/json'})\n\
            request.add_header('Authorization', 'Basic ' + base64.b64encode(auth.encode()).decode())\n\
            urllib.request.urlopen(request).read()\n";
        run_python(
            &self.pythonpath,
            &[
                "-c",
                script,
                &format!("{}{PKG_USER}/{name}", self.root_url()),
                &format!("{PKG_USER}:{PKG_PASSWORD}"),
            ],
            "creating a devpi index",
        );
    }

    /// The upload URL of another index of [`PKG_USER`], `http://127.0.0.1:PORT/uploader/NAME/`.
    #[must_use]
    pub fn index_url(&self, name: &str) -> String {
        format!("{}{PKG_USER}/{name}/", self.root_url())
    }

    fn root_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The index's upload URL, `http://127.0.0.1:PORT/uploader/dev/`.
    #[must_use]
    pub fn upload_url(&self) -> String {
        format!("{}{PKG_USER}/dev/", self.root_url())
    }

    /// The index's simple URL, `http://127.0.0.1:PORT/uploader/dev/+simple/`.
    #[must_use]
    pub fn simple_url(&self) -> String {
        format!("{}+simple/", self.upload_url())
    }

    /// Uploads distributions with twine (the reference client), as [`PKG_USER`].
    pub fn upload(&self, files: &[PathBuf]) {
        twine_upload(&self.upload_url(), files);
    }
}

impl Drop for DevpiServer {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Uploads distributions to `url` with twine, as [`PKG_USER`] with [`PKG_PASSWORD`].
pub fn twine_upload(url: &str, files: &[PathBuf]) {
    let pythonpath = pip_install("twine", &["twine==6.*"]);
    let out = Command::new(python())
        .env("PYTHONPATH", pythonpath)
        .env("TWINE_USERNAME", PKG_USER)
        .env("TWINE_PASSWORD", PKG_PASSWORD)
        .args([
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            url,
        ])
        .args(files)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "twine upload to {url} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python's `http.server` serving a folder on 127.0.0.1: a static PEP 503 tree over HTTP.
#[derive(Debug)]
pub struct StaticHttpServer {
    process: Process,
    port: u16,
}

impl StaticHttpServer {
    /// Serves `dir`.
    #[must_use]
    pub fn start(dir: &Path) -> StaticHttpServer {
        let port = free_port();
        let mut process = Process::spawn(
            "http.server",
            Command::new(python())
                .args([
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    &port.to_string(),
                    "--directory",
                ])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        process.wait_for_port(port, Duration::from_secs(30));
        StaticHttpServer { process, port }
    }

    /// `http://127.0.0.1:PORT/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Stops it now.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Builds tiny distributions into `out` with Python's standard library (`make_dists.py`): each spec
/// is `KIND:NAME:VERSION[:REQUIRES_PYTHON]`, KIND `wheel`, `sdist` (.tar.gz with PKG-INFO),
/// `sdist-zip` (.zip with PKG-INFO) or `sdist-bare` (an old-style .tar.gz with no metadata). Returns
/// the files' paths, in spec order.
#[must_use]
pub fn make_dists(out: &Path, specs: &[&str]) -> Vec<PathBuf> {
    let script = workdir().join("make_dists.py");
    std::fs::write(&script, include_str!("make_dists.py")).expect("write make_dists.py");
    let output = Command::new(python())
        .arg(&script)
        .arg(out)
        .args(specs)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "make_dists.py {specs:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|name| out.join(name))
        .collect()
}

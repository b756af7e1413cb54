//! The package mirror against real indexes: pypiserver (an open source, a destination with htpasswd
//! auth), devpi-server (PEP 691 JSON, as source and destination), a static PEP 503 tree served by
//! Python's http.server, and store trees (`file://`). Distributions are built in the test with Python's
//! standard library (`snapsync_testkit::make_dists`), seeded into devpi with twine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use snapsync_pkg::{
    Action, ClientOptions, Destination, DistFilename, Error, Index, Location, MirrorOptions, Netrc, Outcome,
    Plan, Selector, SkipReason, Summary, Version, hash_file, read_metadata,
};
use snapsync_store::ConnectOptions;
use snapsync_testkit::{
    DevpiServer, PKG_PASSWORD, PKG_USER, PypiServer, S3Server, StaticHttpServer, make_dists,
};

/// `PKG_PASSWORD` percent-encoded for a URL.
fn encoded_password() -> String {
    PKG_PASSWORD.replace(':', "%3A").replace('@', "%40")
}

/// `http://USER:PASSWORD@host…` from `http://host…`.
fn with_credentials(url: &str, password: &str) -> String {
    url.replacen("http://", &format!("http://{PKG_USER}:{password}@"), 1)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn options() -> ClientOptions {
    ClientOptions::default()
}

fn index(url: &str) -> Index {
    Index::open(&Location::parse(url).unwrap(), &options()).unwrap()
}

fn destination(url: &str) -> Destination {
    Destination::open(&Location::parse(url).unwrap(), &options()).unwrap()
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = items.map(str::to_owned).collect();
    names.sort();
    names
}

fn uploads(plan: &Plan) -> Vec<String> {
    names(plan.uploads().map(|i| i.file.filename.as_str()))
}

fn uploaded(summary: &Summary) -> Vec<String> {
    names(summary.uploaded().map(|o| o.filename.as_str()))
}

async fn run(source: &Index, destination: &Destination, selector: &Selector) -> (Plan, Summary) {
    let options = MirrorOptions {
        jobs: 3,
        ..MirrorOptions::default()
    };
    let (plan, summary) = snapsync_pkg::mirror(source, destination, selector, &options, &|_: &Outcome| {})
        .await
        .unwrap();
    (plan, summary)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn same_bytes(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        "{} differs",
        b.display()
    );
}

/// pypiserver to pypiserver: requirements and pre-releases, old-style sdists, zip sdists; the bytes
/// arrive whole; a run that stopped after two files is finished by a re-run that sends only the rest;
/// a wrong password is a typed 403 that never shows the password.
#[test]
fn pypiserver_to_pypiserver_with_auth_and_reruns() {
    let work = tempfile::tempdir().unwrap();
    let files = make_dists(
        work.path(),
        &[
            "wheel:tiny-one:1.0",
            "sdist:tiny-one:1.0",
            "sdist-zip:tiny-one:1.5",
            "wheel:tiny-one:2.0b1",
            "wheel:tiny-one:0.5",
            "sdist-bare:old-style:0.9",
        ],
    );
    let source_server = PypiServer::start_open(&files);
    let dest_server = PypiServer::start_with_auth();
    let source = index(&source_server.simple_url());
    let dest_url = with_credentials(&dest_server.simple_url(), &encoded_password());
    let dest = destination(&dest_url);
    assert!(!format!("{dest:?}").contains(&encoded_password()));
    assert!(!format!("{dest:?}").contains(PKG_PASSWORD));
    let rt = runtime();
    let selector = Selector::new(&["tiny-one>=1.0", "old-style"]).unwrap();

    rt.block_on(async {
        let plan = snapsync_pkg::plan(&source, &dest, &selector, 2).await.unwrap();
        let expected = [
            "old-style-0.9.tar.gz",
            "tiny_one-1.0-py3-none-any.whl",
            "tiny_one-1.0.tar.gz",
            "tiny_one-1.5.zip",
        ];
        assert_eq!(uploads(&plan), expected);
        assert!(
            plan.skipped.iter().any(
                |s| s.filename == "tiny_one-2.0b1-py3-none-any.whl" && s.reason == SkipReason::PreRelease
            )
        );
        assert!(
            plan.skipped
                .iter()
                .any(|s| s.filename == "tiny_one-0.5-py3-none-any.whl" && s.reason == SkipReason::Version)
        );

        // A run that stopped after two files (as a killed one would have)...
        let mut partial = plan.clone();
        partial.items.truncate(2);
        let summary = snapsync_pkg::execute(&partial, &source, &dest, &MirrorOptions::default(), &|_| {})
            .await
            .unwrap();
        assert!(summary.is_success(), "{summary:?}");
        assert_eq!(listing(&dest_server.packages()).len(), 2);

        // ...is finished by a re-run that sends only the other two.
        let (plan, summary) = run(&source, &dest, &selector).await;
        assert_eq!(
            plan.items.iter().filter(|i| i.action == Action::Present).count(),
            2
        );
        assert_eq!(uploaded(&summary).len(), 2);
        assert!(summary.is_success(), "{summary:?}");
        assert_eq!(listing(&dest_server.packages()), expected);
        for name in expected {
            same_bytes(&work.path().join(name), &dest_server.packages().join(name));
        }

        // Nothing left to do; with --pre, only the pre-release.
        let (plan, summary) = run(&source, &dest, &selector).await;
        assert!(uploads(&plan).is_empty());
        assert!(summary.outcomes.is_empty());
        // With --pre, only the pre-release; this time the credentials come from a netrc entry.
        let netrc = Netrc::parse(&format!(
            "machine 127.0.0.1\n  login {PKG_USER}\n  password \"{PKG_PASSWORD}\"\n"
        ))
        .unwrap();
        let from_netrc = Destination::open(
            &Location::parse(&dest_server.simple_url()).unwrap(),
            &options().with_netrc(Some(netrc)),
        )
        .unwrap();
        let (_, summary) = run(&source, &from_netrc, &selector.clone().with_pre(true)).await;
        assert!(summary.is_success(), "{summary:?}");
        assert_eq!(uploaded(&summary), ["tiny_one-2.0b1-py3-none-any.whl"]);

        // A wrong password: every upload denied, typed, the password nowhere.
        let wrong = destination(&with_credentials(&dest_server.simple_url(), "not-the-password"));
        let (_, summary) = run(&source, &wrong, &Selector::new(&["tiny-one<1"]).unwrap()).await;
        let failure = summary.failed().next().expect("the upload is refused");
        let error = failure.result.as_ref().unwrap_err();
        assert!(
            matches!(error, Error::UploadDenied { status: 403, .. }),
            "{error:?}"
        );
        assert!(error.hint().is_some());
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains("not-the-password"), "{shown}");
        }
    });
}

/// A destination that rejects one upload mid-run (the file appeared there after the plan: HTTP 409):
/// that file fails alone with the server's message, the others arrive; the re-run reports it as a
/// conflict (another file of that name) and uploads nothing.
#[test]
fn a_destination_rejecting_one_upload_mid_run() {
    let work = tempfile::tempdir().unwrap();
    let files = make_dists(
        work.path(),
        &[
            "wheel:tiny-fault:1.0",
            "wheel:tiny-fault:1.1",
            "sdist:tiny-fault:1.2",
        ],
    );
    let source_server = PypiServer::start_open(&files);
    let dest_server = PypiServer::start_with_auth();
    let source = index(&source_server.simple_url());
    let dest = destination(&with_credentials(&dest_server.simple_url(), &encoded_password()));
    let selector = Selector::new(&["tiny-fault"]).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let plan = snapsync_pkg::plan(&source, &dest, &selector, 2).await.unwrap();
        assert_eq!(uploads(&plan).len(), 3);
        // Someone else uploads other bytes under one of the names between the plan and the run.
        std::fs::write(
            dest_server.packages().join("tiny_fault-1.1-py3-none-any.whl"),
            b"not this wheel",
        )
        .unwrap();
        let reported = std::sync::Mutex::new(Vec::new());
        let summary = snapsync_pkg::execute(
            &plan,
            &source,
            &dest,
            &MirrorOptions::default(),
            &|o: &Outcome| {
                reported.lock().unwrap().push(o.filename.clone());
            },
        )
        .await
        .unwrap();
        assert_eq!(reported.into_inner().unwrap().len(), 3);
        assert_eq!(
            uploaded(&summary),
            ["tiny_fault-1.0-py3-none-any.whl", "tiny_fault-1.2.tar.gz"]
        );
        let failed: Vec<&Outcome> = summary.failed().collect();
        assert_eq!(failed.len(), 1);
        let error = failed[0].result.as_ref().unwrap_err();
        match error {
            Error::UploadExists {
                filename, message, ..
            } => {
                assert_eq!(filename, "tiny_fault-1.1-py3-none-any.whl");
                assert!(message.contains("already exists"), "{message}");
            }
            other => panic!("expected a 409, got {other:?}"),
        }
        // The stranger's file is untouched.
        assert_eq!(
            std::fs::read(dest_server.packages().join("tiny_fault-1.1-py3-none-any.whl")).unwrap(),
            b"not this wheel"
        );

        // The re-run (of the whole index, read from pypiserver's root page): the two are present, the
        // third a conflict; nothing is uploaded.
        let (plan, summary) = run(&source, &dest, &Selector::new::<&str>(&[]).unwrap()).await;
        assert!(uploads(&plan).is_empty());
        assert_eq!(
            plan.items.iter().filter(|i| i.action == Action::Present).count(),
            2
        );
        assert!(
            plan.items
                .iter()
                .any(|i| matches!(i.action, Action::Conflict { .. })
                    && i.file.filename.starts_with("tiny_fault-1.1"))
        );
        assert!(matches!(
            summary.failed().next().unwrap().result,
            Err(Error::Conflict { .. })
        ));
        assert_eq!(summary.uploaded().count(), 0);
    });
}

/// devpi as a PEP 691 JSON source (seeded with twine; requires-python from the upload metadata)
/// into a `file://` tree, then that tree as the source of another devpi index: the metadata read from
/// the files reaches devpi.
#[test]
fn devpi_json_to_a_file_tree_and_back_to_devpi() {
    let work = tempfile::tempdir().unwrap();
    let files = make_dists(
        work.path(),
        &[
            "wheel:tiny-two:1.0:>=3.8",
            "sdist:tiny-two:1.0:>=3.8",
            "wheel:tiny-two:2.0:>=3.99",
        ],
    );
    let devpi = DevpiServer::start();
    devpi.upload(&files);
    devpi.create_index("mirror");
    let tree = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        // The JSON page, as devpi serves it on request.
        let response = reqwest::Client::new()
            .get(format!("{}tiny-two/", devpi.simple_url()))
            .header("Accept", snapsync_pkg::page::ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            snapsync_pkg::page::JSON_CONTENT_TYPE
        );

        let source = index(&devpi.simple_url());
        let listed = source.files("Tiny_Two").await.unwrap().unwrap();
        assert_eq!(listed.len(), 3);
        assert!(
            listed
                .iter()
                .all(|f| f.sha256.is_some() && f.requires_python.is_some())
        );
        assert!(listed.iter().all(|f| f.url.as_str().contains("/+f/")));

        let selector = Selector::new(&["tiny-two"])
            .unwrap()
            .with_python(Some(Version::from_str("3.11").unwrap()));
        let dest = destination(&file_url(tree.path()));
        let (plan, summary) = run(&source, &dest, &selector).await;
        assert_eq!(
            uploaded(&summary),
            ["tiny_two-1.0-py3-none-any.whl", "tiny_two-1.0.tar.gz"]
        );
        assert!(
            plan.skipped
                .iter()
                .any(|s| s.filename == "tiny_two-2.0-py3-none-any.whl"
                    && s.reason == SkipReason::RequiresPython(">=3.99".into()))
        );
        assert_eq!(
            listing(&tree.path().join("tiny-two")),
            [
                "index.html",
                "tiny_two-1.0-py3-none-any.whl",
                "tiny_two-1.0.tar.gz"
            ]
        );
        let page = std::fs::read_to_string(tree.path().join("tiny-two/index.html")).unwrap();
        assert!(page.contains("data-requires-python=\"&gt;=3.8\""), "{page}");
        let wheel_sha = hash_file(&work.path().join("tiny_two-1.0-py3-none-any.whl"))
            .unwrap()
            .sha256;
        assert!(page.contains(&format!("#sha256={wheel_sha}")), "{page}");
        let root = std::fs::read_to_string(tree.path().join("index.html")).unwrap();
        assert!(root.contains("href=\"tiny-two/\""), "{root}");

        // The tree as a source, into devpi's other index.
        let tree_source = index(&file_url(tree.path()));
        let mirror_url = with_credentials(
            &format!("{}+simple/", devpi.index_url("mirror")),
            &encoded_password(),
        );
        let dest = destination(&mirror_url);
        let (_, summary) = run(&tree_source, &dest, &Selector::new(&["tiny-two"]).unwrap()).await;
        assert_eq!(uploaded(&summary).len(), 2, "{summary:?}");
        let (plan, _) = run(&tree_source, &dest, &Selector::new(&["tiny-two"]).unwrap()).await;
        assert!(uploads(&plan).is_empty());

        // devpi stored the metadata read from the files.
        let body = reqwest::Client::new()
            .get(format!("{}tiny-two/1.0", devpi.index_url("mirror")))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let result = &json["result"];
        assert_eq!(result["summary"], "tiny test package tiny-two");
        assert_eq!(result["requires_python"], ">=3.8");
        assert_eq!(result["author"], "Snap Sync");
        assert!(result["classifiers"].as_array().unwrap().len() == 2, "{result}");
        assert!(result["description"].as_str().unwrap().contains("A tiny package"));
    });
}

fn write_tree_page(root: &Path, project: &str, links: &[(&Path, &str)]) {
    let dir = root.join(project);
    std::fs::create_dir_all(&dir).unwrap();
    let mut html = String::from("<!DOCTYPE html>\n<html><body>\n");
    for (file, attributes) in links {
        let name = file.file_name().unwrap().to_string_lossy();
        std::fs::copy(file, dir.join(&*name)).unwrap();
        let sha = hash_file(file).unwrap().sha256;
        let _ = writeln!(
            html,
            "<a href=\"{name}#sha256={sha}\" {attributes}>{name}</a><br>"
        );
    }
    html.push_str("</body></html>\n");
    std::fs::write(dir.join("index.html"), html).unwrap();
}

/// A static PEP 503 tree (written by hand, as any tool would) with a yanked release, a wrong hash, a
/// truncated page: read over HTTP (http.server) and as a `file://` store.
#[test]
fn yanked_hash_mismatch_and_truncated_pages_over_http_and_file() {
    let work = tempfile::tempdir().unwrap();
    let built = make_dists(
        work.path(),
        &[
            "wheel:tiny-three:1.0",
            "wheel:tiny-three:1.1",
            "sdist:tiny-bad:1.0",
        ],
    );
    let tree = tempfile::tempdir().unwrap();
    write_tree_page(
        tree.path(),
        "tiny-three",
        &[
            (&built[0], "data-yanked=\"broken &amp; bad\""),
            (&built[1], "data-requires-python=\"&gt;=3.6\""),
        ],
    );
    write_tree_page(tree.path(), "tiny-bad", &[(&built[2], "")]);
    // The index says one thing; the file is another.
    std::fs::write(tree.path().join("tiny-bad/tiny_bad-1.0.tar.gz"), b"tampered").unwrap();
    std::fs::create_dir_all(tree.path().join("tiny-cut")).unwrap();
    std::fs::write(
        tree.path().join("tiny-cut/index.html"),
        "<!DOCTYPE html>\n<html><body>\n<a href=\"tiny_cut-1.0.tar.gz#sha256=00\">tiny_cut-1.0.tar",
    )
    .unwrap();
    let http = StaticHttpServer::start(tree.path());
    let rt = runtime();
    rt.block_on(async {
        for source_url in [http.url(), file_url(tree.path())] {
            let source = index(&source_url);
            let out = tempfile::tempdir().unwrap();
            let dest = destination(&file_url(out.path()));

            let (plan, summary) = run(&source, &dest, &Selector::new(&["tiny-three"]).unwrap()).await;
            assert_eq!(
                uploaded(&summary),
                ["tiny_three-1.1-py3-none-any.whl"],
                "{source_url}"
            );
            assert!(
                plan.skipped
                    .iter()
                    .any(|s| s.reason == SkipReason::Yanked("broken & bad".into()))
            );
            // Pinned with ==, the yanked file is mirrored, and stays yanked at the destination.
            let (_, summary) = run(&source, &dest, &Selector::new(&["tiny-three==1.0"]).unwrap()).await;
            assert_eq!(uploaded(&summary), ["tiny_three-1.0-py3-none-any.whl"]);
            let page = std::fs::read_to_string(out.path().join("tiny-three/index.html")).unwrap();
            assert!(page.contains("data-yanked=\"broken &amp; bad\""), "{page}");
            assert!(page.contains("tiny_three-1.1-py3-none-any.whl"), "{page}");
            let reread = index(&file_url(out.path()))
                .files("tiny-three")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reread.len(), 2);
            assert_eq!(reread[0].yanked.as_deref(), Some("broken & bad"));
            assert_eq!(reread[1].requires_python.as_deref(), Some(">=3.6"));

            // A hash mismatch: an error, nothing uploaded, nothing listed.
            let (_, summary) = run(&source, &dest, &Selector::new(&["tiny-bad"]).unwrap()).await;
            let error = summary.failed().next().unwrap().result.as_ref().unwrap_err();
            assert!(matches!(error, Error::HashMismatch { .. }), "{error:?}");
            assert!(!out.path().join("tiny-bad").exists());

            // A truncated page: the plan fails, typed.
            let error = snapsync_pkg::plan(&source, &dest, &Selector::new(&["tiny-cut"]).unwrap(), 1)
                .await
                .unwrap_err();
            assert!(matches!(error, Error::BadPage { .. }), "{error:?}");
            // A project the source does not have is reported, not an empty success.
            let plan = snapsync_pkg::plan(&source, &dest, &Selector::new(&["no-such"]).unwrap(), 1)
                .await
                .unwrap();
            assert_eq!(plan.missing, ["no-such"]);
        }
    });
}

/// A store tree destination after a run killed between a file's put and its page: the re-run sends the
/// unlisted file again and lists it.
#[test]
fn a_store_tree_file_without_its_page_is_sent_again() {
    let work = tempfile::tempdir().unwrap();
    let built = make_dists(work.path(), &["wheel:tiny-four:1.0", "wheel:tiny-four:2.0"]);
    let source_tree = tempfile::tempdir().unwrap();
    write_tree_page(
        source_tree.path(),
        "tiny-four",
        &[(&built[0], ""), (&built[1], "")],
    );
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("tiny-four")).unwrap();
    std::fs::copy(
        &built[0],
        out.path().join("tiny-four/tiny_four-1.0-py3-none-any.whl"),
    )
    .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let source = index(&file_url(source_tree.path()));
        let dest = destination(&file_url(out.path()));
        let (_, summary) = run(&source, &dest, &Selector::new::<&str>(&[]).unwrap()).await;
        assert_eq!(uploaded(&summary).len(), 2);
        let listed = index(&file_url(out.path()))
            .files("tiny-four")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|f| f.sha256.is_some()));
        let (plan, _) = run(&source, &dest, &Selector::new::<&str>(&[]).unwrap()).await;
        assert!(uploads(&plan).is_empty());
    });
}

/// Metadata read from the files themselves, and hostile or broken archives refused with typed errors.
#[test]
fn metadata_from_files_and_hostile_archives() {
    let work = tempfile::tempdir().unwrap();
    let built = make_dists(
        work.path(),
        &[
            "wheel:Meta.Pkg:1.0:>=3.7",
            "sdist:Meta.Pkg:1.0",
            "sdist-zip:Meta.Pkg:1.0",
            "sdist-bare:meta-old:0.1",
        ],
    );
    for path in &built[..3] {
        let dist = DistFilename::parse(&path.file_name().unwrap().to_string_lossy(), None).unwrap();
        let metadata = read_metadata(path, &dist).unwrap();
        assert!(metadata.from_file);
        assert_eq!(metadata.get("Name"), Some("Meta.Pkg"));
        assert_eq!(metadata.get_all("Classifier").count(), 2);
        assert!(metadata.body.as_deref().unwrap().contains("A tiny package"));
    }
    let dist = DistFilename::parse("meta-old-0.1.tar.gz", None).unwrap();
    let metadata = read_metadata(&built[3], &dist).unwrap();
    assert!(!metadata.from_file);
    assert_eq!(
        (metadata.get("Name"), metadata.get("Version")),
        (Some("meta-old"), Some("0.1"))
    );

    let broken = |name: &str, bytes: &[u8]| -> Error {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        read_metadata(&path, &DistFilename::parse(name, None).unwrap()).unwrap_err()
    };
    for (name, bytes) in [
        ("x-1.0.tar.gz", &b"not gzip"[..]),
        ("x-1.0.zip", b"PK not a zip"),
        ("x-1.0-py3-none-any.whl", b""),
    ] {
        assert!(matches!(broken(name, bytes), Error::Archive { .. }), "{name}");
    }
    // A wheel without METADATA.
    let empty_zip = make_zip_without_metadata(work.path());
    let error = read_metadata(
        &empty_zip,
        &DistFilename::parse("y-1.0-py3-none-any.whl", None).unwrap(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("no *.dist-info/METADATA"), "{error}");

    // A decompression bomb: PKG-INFO of 64 MiB of zeros, a few kB compressed.
    let bomb = work.path().join("bomb-1.0.tar.gz");
    {
        let gz =
            flate2::write::GzEncoder::new(std::fs::File::create(&bomb).unwrap(), flate2::Compression::best());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        let size = 64 * 1024 * 1024;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            "bomb-1.0/PKG-INFO",
            std::io::repeat(0).take_exact(size),
        )
        .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1024 * 1024);
    let error = read_metadata(&bomb, &DistFilename::parse("bomb-1.0.tar.gz", None).unwrap()).unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
}

trait TakeExact {
    fn take_exact(self, n: u64) -> std::io::Take<std::io::Repeat>;
}

impl TakeExact for std::io::Repeat {
    fn take_exact(self, n: u64) -> std::io::Take<std::io::Repeat> {
        std::io::Read::take(self, n)
    }
}

fn make_zip_without_metadata(dir: &Path) -> PathBuf {
    let path = dir.join("y-1.0-py3-none-any.whl");
    // An empty zip archive: just the end-of-central-directory record.
    let mut eocd = vec![0x50, 0x4b, 0x05, 0x06];
    eocd.extend_from_slice(&[0; 18]);
    std::fs::write(&path, eocd).unwrap();
    path
}

/// Credentials are parsed from URLs and netrc, and never shown.
#[test]
fn credentials_never_shown() {
    let location = Location::parse(&format!(
        "http://{PKG_USER}:{}@127.0.0.1:1/simple/",
        encoded_password()
    ))
    .unwrap();
    assert!(!location.to_string().contains(&encoded_password()));
    assert!(!format!("{location:?}").contains(&encoded_password()));
    let netrc = snapsync_pkg::Netrc::parse(&format!(
        "machine 127.0.0.1 login {PKG_USER} password {PKG_PASSWORD}\n"
    ))
    .unwrap();
    assert!(!format!("{netrc:?}").contains(PKG_PASSWORD));
    let creds = netrc.lookup("127.0.0.1").unwrap();
    assert_eq!(creds.password(), Some(PKG_PASSWORD));
    assert!(!format!("{creds:?}").contains(PKG_PASSWORD));
}

/// A PEP 503 tree on S3 (moto): mirrored into from a `file://` tree, then read back as a source.
#[test]
fn a_tree_on_s3_as_destination_and_source() {
    let work = tempfile::tempdir().unwrap();
    let built = make_dists(work.path(), &["wheel:tiny-five:1.0", "sdist:tiny-five:1.0"]);
    let source_tree = tempfile::tempdir().unwrap();
    write_tree_page(
        source_tree.path(),
        "tiny-five",
        &[(&built[0], ""), (&built[1], "data-requires-python=\"&gt;=3\"")],
    );
    let s3 = S3Server::start();
    s3.create_bucket("pkgs");
    let mut connect = ConnectOptions::default();
    for (key, value) in s3.config() {
        connect = connect.with_object_store_option(key, value);
    }
    let options = options().with_connect_options(connect);
    let s3_url = Location::parse("s3://pkgs/simple").unwrap();
    let rt = runtime();
    rt.block_on(async {
        let source = index(&file_url(source_tree.path()));
        let dest = Destination::open(&s3_url, &options).unwrap();
        let (_, summary) = run(&source, &dest, &Selector::new(&["tiny-five"]).unwrap()).await;
        assert_eq!(uploaded(&summary).len(), 2, "{summary:?}");
        let (plan, _) = run(&source, &dest, &Selector::new(&["tiny-five"]).unwrap()).await;
        assert!(uploads(&plan).is_empty());

        let s3_source = Index::open(&s3_url, &options).unwrap();
        assert_eq!(s3_source.projects().await.unwrap(), ["tiny-five"]);
        let out = tempfile::tempdir().unwrap();
        let (_, summary) = run(
            &s3_source,
            &destination(&file_url(out.path())),
            &Selector::new::<&str>(&[]).unwrap(),
        )
        .await;
        assert_eq!(uploaded(&summary).len(), 2, "{summary:?}");
        for file in &built {
            same_bytes(
                file,
                &out.path().join("tiny-five").join(file.file_name().unwrap()),
            );
        }
        let page = std::fs::read_to_string(out.path().join("tiny-five/index.html")).unwrap();
        assert!(page.contains("data-requires-python=\"&gt;=3\""), "{page}");
    });
}

/// A mirror cancelled (Ctrl-C) after its second file, one file at a time, into a store tree: it ends in
/// `Error::Cancelled`, the files that arrived are whole and listed on their pages (with their hashes),
/// no temporary file is left in the tree, and the next run sends only the rest.
#[test]
fn a_cancelled_mirror_lists_what_arrived_and_the_next_run_sends_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let specs = [
        "wheel:tiny-five:1.0",
        "wheel:tiny-five:2.0",
        "wheel:tiny-five:3.0",
        "wheel:tiny-six:1.0",
        "wheel:tiny-six:2.0",
    ];
    let built = make_dists(work.path(), &specs);
    let source_tree = tempfile::tempdir().unwrap();
    write_tree_page(
        source_tree.path(),
        "tiny-five",
        &[(&built[0], ""), (&built[1], ""), (&built[2], "")],
    );
    write_tree_page(
        source_tree.path(),
        "tiny-six",
        &[(&built[3], ""), (&built[4], "")],
    );
    let out = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let source = index(&file_url(source_tree.path()));
        let dest = destination(&file_url(out.path()));
        let selector = Selector::new::<&str>(&[]).unwrap();
        let options = MirrorOptions {
            jobs: 1,
            ..MirrorOptions::default()
        };
        let arrived = std::sync::Mutex::new(Vec::new());
        let report = |outcome: &Outcome| {
            if outcome.result.is_ok() {
                let mut arrived = arrived.lock().unwrap();
                arrived.push(outcome.filename.clone());
                if arrived.len() == 2 {
                    options.cancel.cancel();
                }
            }
        };
        let result = snapsync_pkg::mirror(&source, &dest, &selector, &options, &report).await;
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        let arrived = arrived.into_inner().unwrap();
        assert_eq!(arrived.len(), 2, "no file started after the cancel: {arrived:?}");

        // What arrived is whole and listed; nothing else is, and no temporary name is left.
        let mut listed = Vec::new();
        for project in ["tiny-five", "tiny-six"] {
            if let Some(files) = index(&file_url(out.path())).files(project).await.unwrap() {
                for file in files {
                    assert!(file.sha256.is_some(), "{} listed without its hash", file.filename);
                    let built = built
                        .iter()
                        .find(|b| b.file_name().unwrap() == file.filename.as_str());
                    same_bytes(built.unwrap(), &out.path().join(project).join(&file.filename));
                    listed.push(file.filename.clone());
                }
            }
        }
        listed.sort();
        assert_eq!(listed, names(arrived.iter().map(String::as_str)));
        let mut leftovers = Vec::new();
        for entry in walkdir(out.path()) {
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".tmp") || name.contains("snapsync-") {
                leftovers.push(name);
            }
        }
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

        // The next run sends the other three, and none of the two again.
        let (plan, summary) = run(&source, &dest, &selector).await;
        let rest = uploads(&plan);
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert!(arrived.iter().all(|a| !rest.contains(a)), "{rest:?}");
        assert_eq!(uploaded(&summary), rest);
    });
}

/// Every file below `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walkdir(&path));
        } else {
            found.push(path);
        }
    }
    found
}

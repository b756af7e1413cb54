//! Object-store servers for tests: moto (S3) and Azurite (Azure Blob), each on a free port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Process, free_port, npm_install, pip_install, python};

/// The credentials the test S3 server accepts (moto accepts any; these are the ones used).
pub const S3_ACCESS_KEY: &str = "snapsync-test-key";
/// See [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "snapsync-test-secret";

/// A moto S3 server on 127.0.0.1.
#[derive(Debug)]
pub struct S3Server {
    process: Process,
    port: u16,
    pythonpath: PathBuf,
}

impl S3Server {
    /// Installs moto from PyPI (once) and starts it on a free port.
    #[must_use]
    pub fn start() -> S3Server {
        let pythonpath = pip_install("moto", &["moto[server]==5.1.*"]);
        let port = free_port();
        let process = Self::spawn(&pythonpath, port);
        S3Server {
            process,
            port,
            pythonpath,
        }
    }

    fn spawn(pythonpath: &Path, port: u16) -> Process {
        let mut process = Process::spawn(
            "moto_server",
            Command::new(python())
                .env("PYTHONPATH", pythonpath)
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        process.wait_for_port(port, Duration::from_mins(1));
        process
    }

    /// Stops the server now, as a crash would (the tests of a server going away mid-transfer use this).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same port. moto keeps its buckets in memory: it comes back empty.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(&self.pythonpath, self.port);
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (with boto3, the AWS SDK for Python).
    pub fn create_bucket(&self, name: &str) {
        let script = "import boto3, sys\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[3], \
            aws_secret_access_key=sys.argv[4], region_name='us-east-1')\n\
            s3.create_bucket(Bucket=sys.argv[2])\n";
        let out = Command::new(python())
            .env("PYTHONPATH", &self.pythonpath)
            .args(["-c", script, &self.endpoint(), name, S3_ACCESS_KEY, S3_SECRET_KEY])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "creating bucket {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Copies every object of `bucket` whose key starts with `prefix` into `dir` (the key's path below
    /// the prefix), as the server holds it: temporary names and locks included (the crash harness
    /// looks at the bucket through this, not through snapsync).
    pub fn download_prefix(&self, bucket: &str, prefix: &str, dir: &Path) {
        const SCRIPT: &str = r"
import boto3, os, sys
endpoint, bucket, prefix, out, key, secret = sys.argv[1:7]
s3 = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name='us-east-1')
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):
    for o in page.get('Contents', []):
        path = os.path.join(out, o['Key'][len(prefix):].lstrip('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, o['Key'], path)
";
        let out = Command::new(python())
            .env("PYTHONPATH", &self.pythonpath)
            .args(["-c", SCRIPT, &self.endpoint(), bucket, prefix])
            .arg(dir)
            .args([S3_ACCESS_KEY, S3_SECRET_KEY])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "listing bucket {bucket} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `object_store` configuration keys for this server (snapsync-store's
    /// `ConnectOptions::with_object_store_option`).
    #[must_use]
    pub fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", S3_ACCESS_KEY.into()),
            ("aws_secret_access_key", S3_SECRET_KEY.into()),
            ("aws_region", "us-east-1".into()),
        ]
    }

    /// The standard AWS environment variables for this server, for running programs against it.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite blob server on 127.0.0.1, keeping its data on disk (it survives a restart).
#[derive(Debug)]
pub struct Azurite {
    process: Process,
    port: u16,
    modules: PathBuf,
    data: PathBuf,
}

impl Azurite {
    /// Installs Azurite from npm (once) and starts its blob service on a free port.
    #[must_use]
    pub fn start() -> Azurite {
        let modules = npm_install("azurite", &["azurite@3"]);
        let port = free_port();
        let data = crate::workdir().join(format!("azurite-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data).expect("create the Azurite data directory");
        let process = Self::spawn(&modules, &data, port);
        Azurite {
            process,
            port,
            modules,
            data,
        }
    }

    fn spawn(modules: &Path, data: &Path, port: u16) -> Process {
        let mut process = Process::spawn(
            "azurite",
            Command::new("node")
                .arg(modules.join("node_modules/azurite/dist/src/blob/main.js"))
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(data)
                .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        process.wait_for_port(port, Duration::from_mins(1));
        process
    }

    /// Stops the server the way an operator would (SIGTERM: Azurite saves its data and exits).
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(30));
    }

    /// Starts the server again on the same port, with the data it had.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(&self.modules, &self.data, self.port);
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// Creates a container (with the Azure SDK for Python).
    pub fn create_container(&self, name: &str) {
        let pythonpath = pip_install("azure-blob", &["azure-storage-blob==12.*"]);
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.endpoint()
        );
        let script = "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
            BlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])\n";
        let out = Command::new(python())
            .env("PYTHONPATH", pythonpath)
            .args(["-c", script, &connection, name])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "creating container {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `object_store` configuration keys for this server (snapsync-store's
    /// `ConnectOptions::with_object_store_option`).
    #[must_use]
    pub fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("azure_storage_account_name", AZURITE_ACCOUNT.into()),
            ("azure_storage_account_key", AZURITE_KEY.into()),
            ("azure_storage_endpoint", self.endpoint()),
            ("azure_allow_http", "true".into()),
        ]
    }

    /// The standard Azure environment variables for this server.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY.into()),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint()),
            ("AZURE_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

//! Command-line definitions: every command, option and help text of `snapsync`.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use snapsync_store::{ConnectOptions, HostKeyPolicy};

/// What `--version` prints after the name: the version, the commit built from and the cargo features
/// built with (both found by `build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SNAPSYNC_BUILD_COMMIT"),
    ", features: ",
    env!("SNAPSYNC_BUILD_FEATURES"),
    ")"
);

const ABOUT: &str =
    "Keep directory trees in sync with any store: content-addressed snapshots, binary deltas, folder sync";

const EXAMPLES: &str = "\
Examples:
  snapsync id .                                      # the snapshot id of a folder
  snapsync push --store sftp://me@host/snaps ./site  # a snapshot to a store (ftp://, ftps://, s3://, …)
  snapsync sync ./notes ftps://me@example.com/notes  # two-way folder sync
  snapsync COMMAND --help                            # each command's options and examples";

const EXIT_CODES: &str = "\
Exit status (docs/exit-status.md):
  0    success
  1    error (the message says what failed; a `hint:` line says what to try);
       diff: the two sides differ (as diff(1))
  2    usage error (unknown option, bad argument)
  3    interrupted: Ctrl-C or SIGTERM, stopped cleanly (nothing half-written, no temporary file or
       lock left, what finished kept); upload, download, sync, run, manifest, id, stage, push,
       fetch, pull, checkout, copy, diff, signature, delta, patch, cache push, pkg mirror
  4    finished, but conflicts were left: upload, download, sync, run, cache push, pkg mirror, pkg upload
  130  a second Ctrl-C: stopped at once
  141  standard output was closed before the output was complete (`| head`)";

#[derive(Debug, Parser)]
#[command(
    name = "snapsync",
    version = VERSION,
    about = ABOUT,
    after_help = format!("{EXAMPLES}\n\n{EXIT_CODES}"),
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// A command's arguments with the connection flags after them: only the commands that open stores
/// take those flags, so the others' help does not list them.
#[derive(Debug, Args)]
pub(crate) struct Connected<T: Args> {
    #[command(flatten)]
    pub(crate) args: T,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

impl<T: Args> std::ops::Deref for Connected<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.args
    }
}

/// How to reach FTP and SFTP servers and package indexes (ignored for other stores). Their environment
/// variables are read with the rest of the stores' environment, by `ConnectOptions::from_env`; a flag wins
/// over its variable.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Connecting to FTP and SFTP servers and package indexes")]
#[allow(clippy::struct_excessive_bools)] // Each is a command-line switch of its own.
pub(crate) struct ConnectArgs {
    #[arg(
        long,
        help = "SFTP: trust a server whose host key is not in known_hosts yet, and record it there \
(a key that differs from the recorded one is refused all the same)"
    )]
    pub(crate) accept_new_host_key: bool,

    #[arg(
        long,
        value_name = "FILE",
        help = "SFTP: the known_hosts file [env: SNAPSYNC_KNOWN_HOSTS] [default: ~/.ssh/known_hosts]"
    )]
    pub(crate) known_hosts: Option<PathBuf>,

    #[arg(
        long,
        value_name = "FILE",
        help = "SFTP: log in with this private key (an encrypted key's passphrase comes from \
SNAPSYNC_SSH_KEY_PASSPHRASE); without it: a password from the URL, ~/.netrc or the keyring, the ssh-agent's \
keys, ~/.ssh/id_ed25519, id_ecdsa, id_rsa, then a password prompt on a terminal [env: SNAPSYNC_SSH_KEY]"
    )]
    pub(crate) ssh_key: Option<PathBuf>,

    #[arg(
        long,
        value_name = "FILE",
        help = "FTPS: also trust the certificates in this PEM file (a self-signed server's, say) \
[env: SNAPSYNC_CA_FILE]"
    )]
    pub(crate) ca_file: Option<PathBuf>,

    #[arg(
        long,
        help = "FTP, SFTP, package indexes: do not read ~/.netrc (or $NETRC) for passwords"
    )]
    pub(crate) no_netrc: bool,

    #[arg(
        long,
        conflicts_with = "store_password",
        help = "FTP, SFTP, package indexes: do not look passwords up in the OS keyring (nor save them there)"
    )]
    pub(crate) no_keyring: bool,

    #[arg(
        long,
        help = "FTP, SFTP, package indexes: save the password to the OS keyring (service `snapsync`, \
account SCHEME://USER@HOST:PORT) once the server accepted it, for later runs to find it there \
(package indexes: once an upload was accepted)"
    )]
    pub(crate) store_password: bool,

    #[arg(
        long,
        help = "FTP, SFTP, package indexes: never ask for a password, even on a terminal (a login that \
needs one fails; pyftpsync's --no-prompt)"
    )]
    pub(crate) no_prompt: bool,

    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_timeout,
        help = "How long a server may stay silent: connecting, logging in, an answer, a transfer that \
stops moving (a slow transfer that keeps moving is never cut); then the operation fails and is retried \
[default: 60s; object stores: 10s to connect, 15m per request]"
    )]
    pub(crate) timeout: Option<std::time::Duration>,

    #[arg(
        long,
        value_name = "N",
        help = "Try an operation that failed for a passing reason (a dropped or refused connection, a \
timeout, a 5xx) N more times, waiting 0.2s, 0.4s, … up to 5s in between; a download that broke off \
goes on where it stopped [default: 4]"
    )]
    pub(crate) retries: Option<u32>,
}

/// A `--timeout`: a duration (`2s`, `90s`, `5m`) that is not zero.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let timeout = crate::time::parse_age(text)?;
    if timeout.is_zero() {
        return Err("a timeout of 0 would fail every operation".to_owned());
    }
    Ok(timeout)
}

impl ConnectArgs {
    /// The options stores are opened with: `environment` (the process's, `ConnectOptions::from_env`),
    /// with these flags on top, and the credentials: netrc (unless `--no-netrc`), the OS keyring
    /// (unless `--no-keyring` or built without it), a hidden prompt on a terminal; the resolver's
    /// remarks go to the log (`-v`).
    pub(crate) fn options(&self, environment: ConnectOptions) -> ConnectOptions {
        let mut options = environment;
        if self.accept_new_host_key {
            options = options.with_host_key_policy(HostKeyPolicy::AcceptNew);
        }
        if let Some(file) = &self.known_hosts {
            options = options.with_known_hosts(file);
        }
        if let Some(file) = &self.ssh_key {
            options = options.with_ssh_keys([file]);
        }
        if let Some(file) = &self.ca_file {
            options = options.with_ca_file(file);
        }
        if let Some(timeout) = self.timeout {
            options = options.with_timeout(timeout);
        }
        if let Some(retries) = self.retries {
            options = options.with_retry(Some(snapsync_store::RetryPolicy {
                attempts: retries.saturating_add(1),
                ..snapsync_store::RetryPolicy::default()
            }));
        }
        let credentials = crate::credentials::options(
            options.credentials().clone(),
            &crate::credentials::Flags {
                netrc: !self.no_netrc,
                keyring: !self.no_keyring,
                store_password: self.store_password,
                prompt: !self.no_prompt,
            },
        );
        options.with_credentials(credentials)
    }
}

/// What a command prints and how: the same for every command (docs/json.md).
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Output")]
pub(crate) struct OutputArgs {
    /// Say more on standard error: -v each file and timings, -vv the libraries' debug lines (connections,
    /// retries), -vvv everything.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Print only results and errors: no progress, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// Results as JSON on standard output: one object per line, each with a "type", the last a "summary"
    /// (or, on failure, an "error"); see docs/json.md.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value = "auto",
        help = "Colour on standard error and output: auto (only on a terminal, never with NO_COLOR set), \
always or never"
    )]
    pub(crate) color: ColorArg,
}

/// When to colour output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorArg {
    #[default]
    #[value(help = "On a terminal, unless NO_COLOR is set")]
    Auto,
    /// Always (even into a pipe).
    Always,
    /// Never.
    Never,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the manifest of a directory (snapdir's format)
    #[command(
        long_about = "Print the manifest of a directory: one line per file and directory, \
`TYPE PERMISSIONS CHECKSUM SIZE PATH`, sorted by path, in snapdir's format byte for byte.\n\n\
CHECKSUM is BLAKE3 of a file's content, or of a directory's children's checksums. Symlinks are \
followed and recorded as what they point to; dangling ones are skipped with a warning. Names that \
snapdir's format cannot carry (newlines, bytes that are not UTF-8) are written in double quotes with \
C-style escapes.\n\n\
The output ends with a newline, so `snapsync manifest DIR | b3sum` prints the snapshot id.",
        after_help = "Examples:\n  snapsync manifest .\n  snapsync manifest --exclude target --exclude '*.log' ~/project\n  snapsync manifest --no-follow --absolute /srv/www"
    )]
    Manifest(WalkArgs),

    /// Print the snapshot id of a directory, or of a manifest read from standard input
    #[command(
        long_about = "Print the snapshot id of a directory: 64 hex digits, BLAKE3 of its manifest text plus a \
newline, identical to snapdir's id for the same tree.\n\n\
With `-` instead of a directory, read a manifest from standard input and print its id; the manifest is \
checked line by line and re-rendered in canonical order first.",
        after_help = "Examples:\n  snapsync id .\n  snapsync manifest . > tree.manifest && snapsync id - < tree.manifest"
    )]
    Id(WalkArgs),

    /// Copy a directory into the local cache as a snapshot; print its id
    #[command(
        after_help = "Example:\n  snapsync stage ./build && snapsync push --store s3://bucket/snaps --id ID"
    )]
    Stage(StageArgs),

    /// Send a snapshot of a directory (or one from the cache) to a store; print its id
    #[command(
        long_about = "Send a snapshot to a store: walk DIR and send what the store lacks, reading the files where \
they are (or, with --id, send a snapshot from the local cache). Objects go first, the manifest last, so \
a snapshot is only ever listed once it is complete. The store layout is snapdir's: snapdir and snapsync \
read each other's stores. Ctrl-C stops cleanly (exit status 3) before the manifest: an interrupted \
snapshot is never listed, and the next push skips the objects that arrived.",
        after_help = "Examples:\n  snapsync push --store /mnt/backup ./project\n  snapsync push --store s3://bucket/snapshots --exclude target ./project\n  snapsync push --store az://container/prefix --id 3f9a…"
    )]
    Push(Connected<PushArgs>),

    /// Copy a snapshot from a store into the local cache
    #[command(
        after_help = "Example:\n  snapsync fetch --store s3://bucket/snapshots --id 3f9a… && snapsync checkout --id 3f9a… ./restore"
    )]
    Fetch(Connected<FetchArgs>),

    /// Write a snapshot from a store into a directory
    #[command(
        long_about = "Write snapshot ID from a store into DIR. Each file is written under a temporary name, its \
BLAKE3 checked, its permissions set, then moved into place: a corrupt object is never written, and an \
interrupted pull leaves each file old or new (run it again to finish). Files already right are left \
alone; files outside the snapshot stay unless --delete.",
        after_help = "Examples:\n  snapsync pull --store s3://bucket/snapshots --id 3f9a… ./restore\n  snapsync pull --store /mnt/backup --id 3f9a… --delete ./project"
    )]
    Pull(Connected<PullArgs>),

    /// Write a snapshot from the local cache into a directory
    #[command(
        after_help = "Examples:\n  snapsync checkout --id 3f9a… ./restore\n  snapsync checkout --id 3f9a… --delete ./project"
    )]
    Checkout(CheckoutArgs),

    /// Copy a snapshot from one store to another
    #[command(
        after_help = "Example:\n  snapsync copy --id 3f9a… --from /mnt/backup --to s3://bucket/snapshots"
    )]
    Copy(Connected<CopyArgs>),

    /// List the differences between two directories or snapshots
    #[command(
        long_about = "Compare A and B, each a directory or a snapshot id (read from --store, or the local cache). \
Prints one line per difference: `A path` (added in B), `D path` (deleted in B), `M path` (content, type or \
permissions changed). Directories whose contents changed are not listed themselves. The exit status is 0 \
when A and B are the same, 1 when they differ (as diff(1)), and 2 for a usage error; any other failure \
is 1 too, with its message on standard error.",
        after_help = "Examples:\n  snapsync diff ./old ./new\n  snapsync diff --store s3://bucket/snaps 3f9a… ./project"
    )]
    Diff(Connected<DiffArgs>),

    /// Re-hash every object of a snapshot in a store
    #[command(
        long_about = "Check snapshot ID in a store: the manifest hashes to ID and is consistent, and every object \
is there and hashes to its name. Each bad object is printed; the exit status is 1 if there is any.",
        after_help = "Examples:\n  snapsync verify --store sftp://me@host/srv/snaps --id 3f9a…\n  snapsync verify --store /mnt/backup --id 3f9a… --remove-corrupt"
    )]
    Verify(Connected<VerifyArgs>),

    /// List the snapshots in a store
    #[command(after_help = "Example:\n  snapsync snapshots --store ftps://me@example.com/snapshots")]
    Snapshots(Connected<SnapshotsArgs>),

    /// Show the size of a snapshot, or of a store
    #[command(
        after_help = "Examples:\n  snapsync size --store s3://bucket/snapshots\n  snapsync size --store s3://bucket/snapshots --id 3f9a…"
    )]
    Size(Connected<SizeArgs>),

    /// Delete objects that no snapshot in a store references
    #[command(
        long_about = "Delete objects no snapshot in the store references. Safe while pushes run: an unreferenced \
object younger than --grace may belong to a push in progress and is kept, and a push checks after writing \
its manifest that its objects are still there. If any manifest cannot be read, nothing is deleted.",
        after_help = "Examples:\n  snapsync gc --store s3://bucket/snapshots --dry-run\n  snapsync gc --store /mnt/backup --grace 1h"
    )]
    Gc(Connected<GcArgs>),

    /// Write the signature of a file, for making deltas against it (rdiff's format)
    #[command(
        long_about = "Write the signature of BASIS to SIGNATURE: per block, a rolling checksum and a strong \
checksum, in librsync's format (the same bytes as `rdiff signature` for the same options). Send the \
signature to wherever the new version of the file is, make a delta there, and bring the delta back.",
        after_help = "Examples:\n  snapsync signature disk.img disk.sig\n  snapsync signature --block-size 4096 --hash md4 --rollsum rollsum old.tar old.sig\n  cat big.log | snapsync signature - - | ssh host 'cat > big.sig'"
    )]
    Signature(SignatureArgs),

    /// Write the delta that turns the basis of SIGNATURE into NEW (rdiff's format)
    #[command(
        long_about = "Write to DELTA the COPY and LITERAL commands that rebuild NEW from the file SIGNATURE \
describes. Interchangeable with `rdiff delta`: either tool's delta patches with either tool, and \
snapsync's is never larger than rdiff's for the same signature.",
        after_help = "Example:\n  snapsync delta disk.sig disk-new.img disk.delta"
    )]
    Delta(DeltaArgs),

    /// Rebuild a file from its basis and a delta (rdiff's format)
    #[command(
        long_about = "Apply DELTA to BASIS and write the result to OUTPUT. Every command of the delta is \
checked before it is used: a corrupt, truncated or hostile delta stops with an error naming the byte \
where it goes wrong, and OUTPUT is left as it was.",
        after_help = "Examples:\n  snapsync patch disk.img disk.delta disk-new.img\n  snapsync patch --expect-blake3 $(b3sum --no-names new.img) old.img new.delta new.img\n  snapsync patch --max-size 10G old.bin untrusted.delta out.bin"
    )]
    Patch(PatchArgs),

    /// Make REMOTE follow LOCAL: send new and changed files
    #[command(
        long_about = "Make REMOTE follow LOCAL: send new and changed files. REMOTE is a store URL (ftp://, ftps://, \
sftp://, s3://, gs://, az://, file://) or a path.\n\n\
What both sides held after the last run is remembered (in ~/.local/state/snapsync/sync/, outside \
LOCAL), so a file changed on \
REMOTE since then is not overwritten: it is reported as a conflict unless --force or --resolve local. \
Files only REMOTE has stay unless --delete. Every file goes up under a temporary name, is checked and \
renamed into place: an interrupted run leaves each file old or new, and the next run goes on. Ctrl-C \
stops cleanly (exit status 3): no new file starts, the ones under way are dropped with their temporary \
files, what finished is recorded and the lock released; a second Ctrl-C stops at once (130).",
        after_help = "Examples:\n  snapsync upload ./site ftps://me@example.com/www\n  snapsync upload --delete -x '*.bak' ./site sftp://me@host/var/www\n  snapsync upload -n ./build s3://bucket/site"
    )]
    Upload(Connected<SyncArgs>),

    /// Make LOCAL follow REMOTE: fetch new and changed files
    #[command(
        long_about = "Make LOCAL follow REMOTE: fetch new and changed files (LOCAL is created if missing). A local \
file changed since the last run is not overwritten unless --force or --resolve remote; files only LOCAL \
has stay unless --delete. Every file is written under a temporary name, hashed, flushed and renamed.",
        after_help = "Examples:\n  snapsync download ./mirror sftp://me@host/srv/data\n  snapsync download --delete ./site ftp://example.com/pub"
    )]
    Download(Connected<SyncArgs>),

    /// Two-way sync of LOCAL and REMOTE
    #[command(
        long_about = "Two-way sync: changes on either side since the last run go to the other side; new files both \
ways, deletions both ways (a file is only deleted when the other side did not change it since).\n\n\
A conflict is a file changed on both sides differently, changed on one and deleted on the other, or new on \
both with different content, including a folder deleted on one side while a file in it changed on the \
other. Conflicts are left as they are and reported (exit status 4) unless --resolve settles them. \
The first run (nothing remembered yet) only adds: files on one side are copied to the other, files on \
both with different content are conflicts. See docs/sync.md for the whole table.",
        after_help = "Examples:\n  snapsync sync ~/notes sftp://me@host/notes\n  snapsync sync --resolve new ./shared ftps://me@example.com/shared\n  snapsync sync -n ./site ftp://example.com/www"
    )]
    Sync(Connected<SyncArgs>),

    /// Run the tasks of snapsync.yaml (or pyftpsync's pyftpsync.yaml) found here or in a parent folder
    #[command(
        long_about = "Run named tasks from a task file: snapsync.yaml, or pyftpsync's pyftpsync.yaml as \
pyftpsync 4.1 reads it, in the current folder or the nearest parent that has one (--config names another). \
A task is an upload, download, sync, push or pull with its local folder (relative to the file's folder), its \
remote and any option of that command; the file's common settings apply to every task. Without TASK the \
file's default task runs. Options given here override the file for every task run; several tasks run in \
order, and the exit status is the worst of theirs (2, then 1, then 4); Ctrl-C stops the task under way \
cleanly (exit status 3) and starts no other. See docs/config.md.",
        after_help = "Examples:\n  snapsync run                       # the default task\n  snapsync run deploy --dry-run\n  snapsync run build backup --config ~/site/snapsync.yaml\n  snapsync run --execute             # pyftpsync.yaml with dry_run: true"
    )]
    Run(Connected<RunArgs>),

    /// List a remote tree; clean up the locks, temporary files and sync states runs left
    #[command(
        long_about = "List REMOTE (a path, or a file://, ftp://, ftps://, sftp://, s3://, gs:// or az:// URL, \
opened as upload opens it): one line per entry, its path, size and modification time (UTC). Only the top \
level is listed unless --recursive (as pyftpsync's scan); --match and --exclude choose files as sync does \
(with sync's default excludes). A missing remote folder is an error, never an empty listing, and a folder \
the server refuses to list is an error naming it.\n\n\
It also cleans up what runs leave, each removal printed (with --dry-run: what would be removed):\n\
--remove-locks removes the sync lock of a run that is gone (its process is not running on this machine, \
or it was not renewed for --lock-timeout); a live run's lock is refused with an error.\n\
--remove-temp removes the temporary files (.NAME.snapsync-PID-N.tmp) of interrupted uploads that were \
last written --temp-age ago or more; a younger one may belong to an upload under way and is kept.\n\
--remove-state forgets the sync state kept on this machine for REMOTE (every local folder synced with \
it), so the next run of each is a first sync (which only adds); a state whose run is under way is kept.",
        after_help = "Examples:\n  snapsync scan ftps://me@example.com/www\n  snapsync scan --recursive --match '*.html' sftp://me@host/var/www\n  snapsync scan --recursive --json s3://bucket/site > listing.jsonl\n  snapsync scan --remove-locks --remove-temp -n ftp://me@example.com/www\n  snapsync scan --remove-state ./mirror"
    )]
    Scan(Connected<ScanArgs>),

    /// A local cache over a remote: open files (fetched on a miss), queue local files, push them
    #[command(
        subcommand,
        long_about = "A local cache over a remote store, for programs that need a few files of a big remote \
tree at a time. `open` prints the local path of a remote file, fetching it first when it is not cached; \
`add` queues a file of the cache for upload; `push` uploads the queue, each file only if the remote copy \
is still the one it was fetched from (or still absent, for a new file): a remote edit is a conflict \
(exit status 4), never overwritten, unless --force. The cache's state is in DIR/.snapsync-cache/.",
        after_help = "Examples:\n  cat \"$(snapsync cache open --remote sftp://me@host/data --cache ~/.cache/data reports/q3.csv)\"\n  snapsync cache add --remote sftp://me@host/data --cache ~/.cache/data reports/q3.csv\n  snapsync cache push --remote sftp://me@host/data --cache ~/.cache/data"
    )]
    Cache(CacheCommand),

    /// Copy Python distributions between package indexes, filtered by requirements
    #[command(
        subcommand,
        long_about = "Python distributions between package indexes (pkgsync's successor). An index is an \
http(s) simple index (PEP 503 HTML or PEP 691 JSON, read by content negotiation; uploads through the \
standard upload API) or a PEP 503 tree in any store snapsync reaches (a folder, file://, s3://, gs://, \
az://, ftp://, ftps://, sftp://), which snapsync writes and reads. Versions are selected with PEP 440/508 requirements; pre-releases only with \
--pre, yanked files only when pinned with ==. Every download's sha256 is checked against the index's before \
anything is uploaded. Credentials, as for FTP and SFTP (docs/credentials.md): user and password in the URL, \
~/.netrc ($NETRC), the OS keyring, or a prompt on a terminal when a URL names a user without a password; \
`__token__` as the user for API tokens.",
        after_help = "Examples:\n  snapsync pkg mirror --from https://pypi.org/simple/ --to https://me@pkgs.example/ 'celery>=5' -r requirements.txt\n  snapsync pkg mirror --from https://pkgs.example/simple/ --to s3://bucket/simple --all\n  snapsync pkg list https://pypi.org/simple/ 'attrs>=23' --json\n  snapsync pkg download https://pypi.org/simple/ attrs==23.2.0 -d wheels\n  snapsync pkg upload https://__token__@upload.example/ dist/*"
    )]
    Pkg(PkgCommand),

    /// Print a shell completion script
    #[command(after_help = "Example:\n  snapsync completions bash > /etc/bash_completion.d/snapsync")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The connection flags of a command that opens stores; `None` for the commands that never connect.
    pub(crate) fn connect_args(&self) -> Option<&ConnectArgs> {
        match self {
            Command::Push(c) => Some(&c.connect),
            Command::Fetch(c) => Some(&c.connect),
            Command::Pull(c) => Some(&c.connect),
            Command::Copy(c) => Some(&c.connect),
            Command::Diff(c) => Some(&c.connect),
            Command::Verify(c) => Some(&c.connect),
            Command::Snapshots(c) => Some(&c.connect),
            Command::Size(c) => Some(&c.connect),
            Command::Gc(c) => Some(&c.connect),
            Command::Upload(c) | Command::Download(c) | Command::Sync(c) => Some(&c.connect),
            Command::Run(c) => Some(&c.connect),
            Command::Scan(c) => Some(&c.connect),
            Command::Cache(command) => Some(match command {
                CacheCommand::Open(c) => &c.connect,
                CacheCommand::Add(c) => &c.connect,
                CacheCommand::Push(c) => &c.connect,
                CacheCommand::Status(c) => &c.connect,
                CacheCommand::Evict(c) => &c.connect,
            }),
            Command::Pkg(command) => Some(match command {
                PkgCommand::Mirror(c) => &c.connect,
                PkgCommand::List(c) => &c.connect,
                PkgCommand::Download(c) => &c.connect,
                PkgCommand::Upload(c) => &c.connect,
            }),
            Command::Manifest(_)
            | Command::Id(_)
            | Command::Stage(_)
            | Command::Checkout(_)
            | Command::Signature(_)
            | Command::Delta(_)
            | Command::Patch(_)
            | Command::Completions { .. } => None,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct WalkArgs {
    /// The directory to describe (for `id`, `-` reads a manifest from standard input).
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,

    #[command(flatten)]
    pub(crate) filter: WalkFlags,

    /// Write absolute paths instead of `./`-relative ones (the id changes accordingly).
    #[arg(long)]
    pub(crate) absolute: bool,

    /// Threads for listing and hashing [default: one per core].
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<NonZeroUsize>,
}

/// What a walk leaves out (shared by every command that walks a directory).
#[derive(Debug, Args, Default)]
pub(crate) struct WalkFlags {
    /// Leave out entries matching GLOB (repeatable). Without `/` it matches a name at any depth
    /// (`*.log`, `.git`); with `/` it is anchored at DIR (`build/out`, `docs/**/*.tmp`); a trailing `/`
    /// matches directories only.
    #[arg(short = 'x', long = "exclude", value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,

    /// Leave out entries whose absolute path matches the regular expression RE (repeatable), exactly
    /// as snapdir's `--exclude`; `%common%` and `%system%` expand to snapdir's built-in sets.
    #[arg(long = "exclude-regex", value_name = "RE")]
    pub(crate) exclude_regex: Vec<String>,

    /// Do not follow symlinks: leave them out of the manifest (snapdir's `--no-follow`).
    #[arg(long)]
    pub(crate) no_follow: bool,
}

/// Strong checksum for `signature --hash`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum HashArg {
    /// BLAKE2b, 32 bytes (the default, as in rdiff).
    Blake2,
    /// MD4, 16 bytes. Deliberate collisions are easy; only for old rdiff versions.
    Md4,
}

/// Rolling checksum for `signature --rollsum`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum RollsumArg {
    /// Rabin-Karp (the default, as in rdiff 2.2 and later).
    Rabinkarp,
    /// rsync's rolling checksum (rdiff before 2.2).
    Rollsum,
}

#[derive(Debug, Args)]
pub(crate) struct SignatureArgs {
    /// The file to describe (`-` for standard input).
    pub(crate) basis: PathBuf,

    /// Where to write the signature (`-` for standard output).
    pub(crate) signature: PathBuf,

    /// Bytes per block [default: 0 = as rdiff: √(basis size) rounded down to a multiple of 128, at least
    /// 256; 2048 when the basis is standard input].
    #[arg(short, long, value_name = "BYTES", default_value_t = 0)]
    pub(crate) block_size: u32,

    /// Bytes of each block's strong sum to keep [default: 0 = all of it; -1 = the least librsync
    /// recommends for this basis size].
    #[arg(
        short = 'S',
        long,
        value_name = "BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub(crate) sum_size: i32,

    /// Strong checksum.
    #[arg(short = 'H', long, value_enum, default_value = "blake2")]
    pub(crate) hash: HashArg,

    /// Rolling checksum.
    #[arg(short = 'R', long, value_enum, default_value = "rabinkarp")]
    pub(crate) rollsum: RollsumArg,

    /// Replace SIGNATURE if it exists.
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DeltaArgs {
    /// The signature of the basis (`-` for standard input).
    pub(crate) signature: PathBuf,

    /// The new version of the file (`-` for standard input).
    pub(crate) new: PathBuf,

    /// Where to write the delta (`-` for standard output).
    pub(crate) delta: PathBuf,

    /// Replace DELTA if it exists.
    #[arg(short, long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PatchArgs {
    /// The file the delta was made against (`-` for standard input: read where it is when redirected
    /// from a file; a pipe is first copied into a temporary file in $TMPDIR, as the basis is read at any
    /// offset).
    pub(crate) basis: PathBuf,

    /// The delta (`-` for standard input).
    pub(crate) delta: PathBuf,

    /// Where to write the result (`-` for standard output). A file is written under a temporary name and
    /// moved into place only when complete and, with --expect-blake3, verified.
    pub(crate) output: PathBuf,

    /// The BLAKE3 (64 hex digits) the result must have, e.g. from `b3sum` on the original new file;
    /// on a mismatch OUTPUT is not written and the exit status is 1.
    #[arg(long, value_name = "HEX")]
    pub(crate) expect_blake3: Option<String>,

    /// Refuse to write more than this (for deltas from elsewhere: a small delta can describe a huge
    /// output). Accepts K, M, G, T suffixes.
    #[arg(long, value_name = "SIZE", value_parser = crate::output::parse_size)]
    pub(crate) max_size: Option<u64>,

    /// Replace OUTPUT if it exists.
    #[arg(short, long)]
    pub(crate) force: bool,
}

/// Where the local cache is.
#[derive(Debug, Default, Args)]
pub(crate) struct CacheArgs {
    // The variable is read where the folder is chosen (`snapshot::cache_dir`), not by clap: clap counts
    // an argument its variable gave as given, and error messages' usage lines then show `--cache-dir`
    // as if it were required.
    #[arg(
        long,
        value_name = "DIR",
        help = "The local cache [env: SNAPSYNC_CACHE_DIR] [default: `$XDG_CACHE_HOME/snapsync`, or \
`~/.cache/snapsync`]"
    )]
    pub(crate) cache_dir: Option<PathBuf>,
}

pub(crate) use snapsync_cli::ResolveArg;

#[derive(Debug, Args)]
// Independent command-line switches.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct SyncArgs {
    /// The local folder.
    pub(crate) local: PathBuf,
    /// The remote: a path, or a file://, ftp://, ftps://, sftp://, s3://, gs:// or az:// URL.
    pub(crate) remote: String,
    /// One way: delete files on the target that the source does not have.
    #[arg(long)]
    pub(crate) delete: bool,
    /// One way: also delete target files --match leaves out (implies --delete).
    #[arg(long)]
    pub(crate) delete_unmatched: bool,
    /// Sync only files whose name (or, with a `/`, path) matches GLOB; repeatable or comma-separated.
    #[arg(short, long = "match", value_name = "GLOB")]
    pub(crate) matches: Vec<String>,
    #[arg(
        short = 'x',
        long,
        value_name = "GLOB",
        help = "Leave out files and folders matching GLOB; repeatable or comma-separated \
[default: .DS_Store,.git,.hg,.svn,#recycle]"
    )]
    pub(crate) exclude: Vec<String>,
    /// One way: overwrite or delete target files even if they changed since the last run.
    #[arg(long)]
    pub(crate) force: bool,
    /// How to settle conflicts.
    #[arg(long, value_enum, default_value = "skip")]
    pub(crate) resolve: ResolveArg,
    /// Print what would be done; change nothing.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Compare contents by BLAKE3 (hashing every local file) instead of trusting size and time.
    #[arg(long)]
    pub(crate) checksum: bool,
    /// Create REMOTE's folder if it does not exist (without this, a missing remote folder is an error,
    /// never an empty one: a typo or an unmounted disk must not look like "everything was deleted").
    #[arg(long)]
    pub(crate) create_folder: bool,
    /// Go ahead when the plan deletes every file of a side, or at least 10 files and more than half of
    /// a side, or when a side that had files lists none (without this the run stops before changing
    /// anything; with --resolve ask on a terminal it asks).
    #[arg(long)]
    pub(crate) allow_mass_delete: bool,
    /// Remove another run's lock on REMOTE (after making sure it is not running).
    #[arg(long)]
    pub(crate) break_lock: bool,
    /// A lock not renewed for this long belongs to a dead run and is taken over (a live run renews
    /// its lock every AGE/4, at most every minute).
    #[arg(long, value_name = "AGE", default_value = LOCK_TIMEOUT, value_parser = crate::time::parse_age)]
    pub(crate) lock_timeout: std::time::Duration,
    /// Transfers at once [default: 4 for FTP and SFTP, 8 for local, 16 for object stores].
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<NonZeroUsize>,
}

/// `snapsync scan`: what to list and what to clean up.
#[derive(Debug, Args)]
// Independent command-line switches.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct ScanArgs {
    /// The remote: a path, or a file://, ftp://, ftps://, sftp://, s3://, gs:// or az:// URL.
    pub(crate) remote: String,
    /// List the whole tree [default: the top level only].
    #[arg(short, long)]
    pub(crate) recursive: bool,
    /// List only files whose name (or, with a `/`, path) matches GLOB; repeatable or comma-separated.
    #[arg(short, long = "match", value_name = "GLOB")]
    pub(crate) matches: Vec<String>,
    #[arg(
        short = 'x',
        long,
        value_name = "GLOB",
        help = "Leave out files and folders matching GLOB; repeatable or comma-separated \
[default: .DS_Store,.git,.hg,.svn,#recycle]"
    )]
    pub(crate) exclude: Vec<String>,
    /// Remove the sync lock of a run that is gone (a live run's lock is refused).
    #[arg(long)]
    pub(crate) remove_locks: bool,
    /// Remove temporary files of interrupted uploads last written --temp-age ago or more.
    #[arg(long)]
    pub(crate) remove_temp: bool,
    /// Forget the sync state kept on this machine for REMOTE (every local folder paired with it).
    #[arg(long)]
    pub(crate) remove_state: bool,
    /// Print what would be removed; remove nothing.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// --remove-locks: a lock not renewed for this long belongs to a dead run.
    #[arg(long, value_name = "AGE", default_value = LOCK_TIMEOUT, value_parser = crate::time::parse_age)]
    pub(crate) lock_timeout: std::time::Duration,
    /// --remove-temp: a temporary file written to less than this long ago may belong to an upload
    /// under way, and is kept.
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = crate::time::parse_age)]
    pub(crate) temp_age: std::time::Duration,
}

/// How long a sync lock may go unrenewed before it is taken over, unless `--lock-timeout` says.
pub(crate) const LOCK_TIMEOUT: &str = "10m";

/// `snapsync run`: which tasks, which file, and the options that override the file's.
#[derive(Debug, Args)]
// Independent command-line switches.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct RunArgs {
    /// The tasks to run, in order [default: the file's default task].
    #[arg(value_name = "TASK")]
    pub(crate) tasks: Vec<String>,
    /// The task file [default: snapsync.yaml, else pyftpsync.yaml, in the current folder or the nearest
    /// parent]. A file named pyftpsync.yaml is read as pyftpsync's, any other as snapsync's.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Run from below the file's folder: sync only the current folder, with the same path below the
    /// remote (upload, download and sync tasks; pyftpsync's --here).
    #[arg(long, conflicts_with = "root")]
    pub(crate) here: bool,
    /// Run from below the file's folder: sync the task's whole folder (pyftpsync's --root; snapsync.yaml
    /// does this anyway).
    #[arg(long)]
    pub(crate) root: bool,
    /// Upload, download: delete files on the target that the source does not have. Pull: remove files
    /// that are not in the snapshot.
    #[arg(long)]
    pub(crate) delete: bool,
    /// Upload, download: also delete target files --match leaves out (implies --delete).
    #[arg(long)]
    pub(crate) delete_unmatched: bool,
    /// Sync only files whose name (or, with a `/`, path) matches GLOB; replaces the file's `match`.
    #[arg(short, long = "match", value_name = "GLOB")]
    pub(crate) matches: Vec<String>,
    /// Leave out files and folders matching GLOB; replaces the file's `exclude`.
    #[arg(short = 'x', long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,
    /// Upload, download: overwrite or delete target files even if they changed since the last run.
    #[arg(long)]
    pub(crate) force: bool,
    /// How to settle conflicts.
    #[arg(long, value_enum)]
    pub(crate) resolve: Option<ResolveArg>,
    /// Print what would be done; change nothing (upload, download, sync).
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Really run a task the file marks `dry-run: true` (pyftpsync's --no-dry-run, --execute).
    #[arg(long, visible_alias = "execute", conflicts_with = "dry_run")]
    pub(crate) no_dry_run: bool,
    /// Compare contents by BLAKE3 instead of trusting size and time.
    #[arg(long)]
    pub(crate) checksum: bool,
    /// Create the remote folder if it does not exist.
    #[arg(long)]
    pub(crate) create_folder: bool,
    /// Go ahead when a plan deletes a whole side or most of it.
    #[arg(long)]
    pub(crate) allow_mass_delete: bool,
    /// Remove another run's lock on the remote (after making sure it is not running).
    #[arg(long)]
    pub(crate) break_lock: bool,
    /// A lock not renewed for this long is taken over [default: 10m].
    #[arg(long, value_name = "AGE", value_parser = crate::time::parse_age)]
    pub(crate) lock_timeout: Option<std::time::Duration>,
    /// Transfers at once.
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<NonZeroUsize>,
    /// Pull: the snapshot to write.
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
    /// Push: leave out entries whose absolute path matches RE (snapdir's `--exclude`).
    #[arg(long = "exclude-regex", value_name = "RE")]
    pub(crate) exclude_regex: Vec<String>,
    /// Push: do not follow symlinks.
    #[arg(long)]
    pub(crate) no_follow: bool,
    /// Push, pull: the local cache [default: the file's `cache-dir`, else `$SNAPSYNC_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/snapsync` or `~/.cache/snapsync`].
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    /// Transfers at once [default: 8 for local stores, 16 for object stores].
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<NonZeroUsize>,
}

#[derive(Debug, Args)]
pub(crate) struct StageArgs {
    /// The directory.
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) filter: WalkFlags,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
    /// The directory to snapshot and send.
    #[arg(required_unless_present = "id", conflicts_with = "id")]
    pub(crate) dir: Option<PathBuf>,
    /// Send this snapshot from the local cache instead (its id, or a unique prefix of it).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
    #[command(flatten)]
    pub(crate) filter: WalkFlags,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
    /// The snapshot: its id, or a unique prefix of it (4 hex digits or more).
    #[arg(long, value_name = "ID")]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
    /// The snapshot: its id, or a unique prefix of it (4 hex digits or more).
    #[arg(long, value_name = "ID")]
    pub(crate) id: String,
    /// Where to write it (created if missing).
    pub(crate) dir: PathBuf,
    /// Remove files and directories that are not in the snapshot: DIR becomes an exact copy.
    #[arg(long)]
    pub(crate) delete: bool,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CheckoutArgs {
    /// The snapshot (in the local cache; see `fetch`): its id, or a unique prefix of it.
    #[arg(long, value_name = "ID")]
    pub(crate) id: String,
    /// Where to write it (created if missing).
    pub(crate) dir: PathBuf,
    /// Remove files and directories that are not in the snapshot.
    #[arg(long)]
    pub(crate) delete: bool,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The snapshot: its id, or a unique prefix of it (4 hex digits or more).
    #[arg(long, value_name = "ID")]
    pub(crate) id: String,
    /// The store it is in (a store URL or path, as --store takes: file://, s3://, gs://, az://,
    /// ftp://, ftps://, sftp://).
    #[arg(long, value_name = "URL")]
    pub(crate) from: String,
    /// The store to copy it to (a store URL or path, as --from).
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// A directory, or a snapshot id (or a unique prefix of one).
    pub(crate) a: String,
    /// A directory, or a snapshot id (or a unique prefix of one).
    pub(crate) b: String,
    /// Where ids are looked up: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp://
    /// URL [default: the local cache].
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,
    #[command(flatten)]
    pub(crate) filter: WalkFlags,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
    /// The snapshot: its id, or a unique prefix of it (4 hex digits or more).
    #[arg(long, value_name = "ID")]
    pub(crate) id: String,
    /// Delete the objects whose content is wrong, so that pushing the snapshot again from a good copy
    /// (which skips objects the store has) sends them anew.
    #[arg(long)]
    pub(crate) remove_corrupt: bool,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotsArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
}

#[derive(Debug, Args)]
pub(crate) struct SizeArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
    /// One snapshot [default: the whole store].
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// The store: a path, or a file://, s3://, gs://, az://, ftp://, ftps:// or sftp:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) store: String,
    /// Show what would be deleted; delete nothing.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Keep unreferenced objects younger than this (`30m`, `24h`, `7d`; `0` for none).
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = crate::time::parse_age)]
    pub(crate) grace: std::time::Duration,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_flags_win_over_the_environment() {
        let environment = || {
            ConnectOptions::from_vars([
                ("SNAPSYNC_SSH_KEY", "/env/key"),
                ("SNAPSYNC_KNOWN_HOSTS", "/env/known_hosts"),
                ("SNAPSYNC_CA_FILE", "/env/ca.pem"),
                ("SNAPSYNC_SSH_KEY_PASSPHRASE", "env secret"),
            ])
        };
        // Without flags: the environment's settings, and the binary's credentials (netrc, the
        // keyring when built with it, the terminal prompt).
        let none = ConnectArgs::default()
            .options(environment().with_credentials(snapsync_store::CredentialOptions::default()));
        let expected = environment().with_credentials(none.credentials().clone());
        assert_eq!(format!("{none:?}"), format!("{expected:?}"));
        let credentials = format!("{:?}", none.credentials());
        assert!(credentials.contains("prompt: true"), "{credentials}");
        assert!(credentials.contains("store_password: false"), "{credentials}");
        assert!(
            credentials.contains(&format!("keyring: {}", cfg!(feature = "keyring"))),
            "{credentials}"
        );
        let flags = ConnectArgs {
            accept_new_host_key: true,
            known_hosts: Some("/flag/known_hosts".into()),
            ssh_key: Some("/flag/key".into()),
            ca_file: Some("/flag/ca.pem".into()),
            no_netrc: true,
            no_keyring: true,
            store_password: true,
            no_prompt: true,
            timeout: Some(std::time::Duration::from_secs(2)),
            retries: Some(1),
        };
        let with_netrc = ConnectOptions::from_vars([("NETRC", "/env/netrc")]);
        let credentials = format!("{:?}", flags.options(with_netrc).credentials());
        for setting in [
            "netrc: \"off\"",
            "keyring: false",
            "store_password: true",
            "prompt: false",
        ] {
            assert!(credentials.contains(setting), "{credentials}");
        }
        let shown = format!("{:?}", flags.options(environment()));
        for flag in [
            "/flag/known_hosts",
            "/flag/key",
            "/flag/ca.pem",
            "AcceptNew",
            "timeout: Some(2s)",
            "attempts: 2",
        ] {
            assert!(shown.contains(flag), "{shown}");
        }
        assert!(!shown.contains("/env/"), "{shown}");
        assert!(!shown.contains("env secret"), "{shown}");
    }

    /// Every command and subcommand below `command`, as (`snapsync cache open`, its definition).
    fn every_command(command: &clap::Command, path: &str, into: &mut Vec<(String, clap::Command)>) {
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            every_command(sub, &path, into);
            into.push((path, sub.clone()));
        }
    }

    /// `snapsync` and every command and subcommand below it.
    fn commands() -> Vec<(String, clap::Command)> {
        use clap::CommandFactory;
        let mut all = vec![("snapsync".to_string(), Cli::command())];
        every_command(&Cli::command(), "snapsync", &mut all);
        assert!(all.len() > 25, "{} commands", all.len());
        all
    }

    #[test]
    fn the_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_subcommand_help_has_an_example() {
        let mut missing = Vec::new();
        for (path, command) in commands() {
            let after = command
                .get_after_long_help()
                .or(command.get_after_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            // An example is a heading and at least one indented `snapsync …` line under it.
            let example = after.contains("Example") && after.contains("\n  snapsync ");
            if !example {
                missing.push(path);
            }
        }
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    }

    #[test]
    fn connection_flags_belong_to_the_commands_that_connect() {
        // The commands that never open a store (and the groups, whose subcommands take the flags).
        let local = [
            "snapsync",
            "manifest",
            "id",
            "stage",
            "checkout",
            "signature",
            "delta",
            "patch",
            "completions",
            "cache",
            "pkg",
        ];
        let flags = ["accept_new_host_key", "known_hosts", "ssh_key", "ca_file"];
        for (path, command) in commands() {
            let name = path.rsplit(' ').next().unwrap_or_default();
            let local = local.contains(&name)
                && !path.starts_with("snapsync cache ")
                && !path.starts_with("snapsync pkg ");
            for flag in flags {
                let has = command.get_arguments().any(|a| a.get_id() == flag);
                assert_eq!(
                    has,
                    !local,
                    "{path}: --{flag} {}",
                    if has { "listed" } else { "missing" }
                );
            }
        }
    }
}

/// The `pkg` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PkgCommand {
    /// Copy the distributions the requirements select from one index to another
    #[command(
        long_about = "Copy the distributions the requirements select from one index to another. What the \
destination lists already (same file name and sha256) is skipped; a file of the same name with another \
sha256 is a conflict (exit status 4), never replaced. Downloads and uploads run --jobs at a time; a killed \
run, run again, sends only what is missing.",
        after_help = "Examples:\n  snapsync pkg mirror --from https://pypi.org/simple/ --to http://me:secret@127.0.0.1:8080/ 'requests>=2.31' --dry-run\n  snapsync pkg mirror --from ./mirror --to https://pkgs.example/simple/ --upload-url https://pkgs.example/upload/ --all"
    )]
    Mirror(Connected<PkgMirrorArgs>),
    /// List the distributions the requirements select (name, version, file, sha256, requires-python, yanked)
    #[command(
        after_help = "Example:\n  snapsync pkg list https://pypi.org/simple/ 'attrs>=23' --python-version 3.8"
    )]
    List(Connected<PkgListArgs>),
    /// Download the distributions the requirements select into a folder
    #[command(
        after_help = "Example:\n  snapsync pkg download https://pypi.org/simple/ -r requirements.txt -d wheels"
    )]
    Download(Connected<PkgDownloadArgs>),
    /// Upload distribution files (wheels, sdists) to an index
    #[command(after_help = "Example:\n  snapsync pkg upload http://me@127.0.0.1:8080/ dist/*")]
    Upload(Connected<PkgUploadArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct PkgSelectArgs {
    /// PEP 508 requirements: `celery>=5`, `attrs==23.2.0`, `six` (markers and extras are ignored).
    #[arg(value_name = "REQUIREMENT")]
    pub(crate) requirements: Vec<String>,
    /// Take the requirements in FILE too (pip's format: comments, `-r` includes; other options skipped).
    #[arg(short = 'r', long = "requirement", value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Every project of the source.
    #[arg(long, conflicts_with_all = ["requirements", "files"])]
    pub(crate) all: bool,
    /// Include pre-releases (otherwise only when nothing else matches a requirement that names one).
    #[arg(long)]
    pub(crate) pre: bool,
    /// Keep only files whose Requires-Python admits this Python version.
    #[arg(long, value_name = "VERSION")]
    pub(crate) python_version: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PkgMirrorArgs {
    /// The source index: an http(s) simple index URL, or a store holding a PEP 503 tree.
    #[arg(long, value_name = "URL")]
    pub(crate) from: String,
    /// The destination: an index that takes uploads (its URL, or its simple index URL), or a store.
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// Where uploads go, for an index whose upload URL is not beside its simple index (--to is then
    /// the simple index).
    #[arg(long, value_name = "URL")]
    pub(crate) upload_url: Option<String>,
    #[command(flatten)]
    pub(crate) select: PkgSelectArgs,
    /// Print what would be uploaded, present or in conflict; send nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PkgListArgs {
    /// The index: an http(s) simple index URL, or a store holding a PEP 503 tree.
    #[arg(value_name = "URL")]
    pub(crate) url: String,
    #[command(flatten)]
    pub(crate) select: PkgSelectArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PkgDownloadArgs {
    /// The index: an http(s) simple index URL, or a store holding a PEP 503 tree.
    #[arg(value_name = "URL")]
    pub(crate) url: String,
    #[command(flatten)]
    pub(crate) select: PkgSelectArgs,
    /// The folder the files go into (made if missing; a file there with the index's sha256 is kept).
    #[arg(short = 'd', long = "dest", value_name = "DIR")]
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PkgUploadArgs {
    /// The index that takes the uploads (or a store holding a PEP 503 tree).
    #[arg(value_name = "URL")]
    pub(crate) url: String,
    /// Wheels and sdists.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Where uploads go, when not at URL (URL is then the simple index).
    #[arg(long, value_name = "URL")]
    pub(crate) upload_url: Option<String>,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
}

/// The `cache` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Print the local path of each PATH, fetching it first when it is not cached
    #[command(
        after_help = "Examples:\n  snapsync cache open --remote sftp://me@host/data --cache ~/.cache/data reports/q3.csv\n  snapsync cache open --remote s3://bucket/data --cache ./data --max-age 1h a.csv b.csv"
    )]
    Open(Connected<CacheOpenArgs>),
    /// Queue files of the cache for upload
    #[command(
        after_help = "Example:\n  snapsync cache add --remote sftp://me@host/data --cache ~/.cache/data reports/q3.csv"
    )]
    Add(Connected<CachePathsArgs>),
    /// Upload the queued files that the remote has not changed since they were fetched
    #[command(
        after_help = "Example:\n  snapsync cache push --remote sftp://me@host/data --cache ~/.cache/data"
    )]
    Push(Connected<CachePushArgs>),
    /// List the cached and queued files
    #[command(
        after_help = "Example:\n  snapsync cache status --remote sftp://me@host/data --cache ~/.cache/data --max-age 1d"
    )]
    Status(Connected<CacheStatusArgs>),
    /// Remove the least recently fetched files until the cache holds at most SIZE
    #[command(
        after_help = "Example:\n  snapsync cache evict --remote sftp://me@host/data --cache ~/.cache/data --max-size 2G"
    )]
    Evict(Connected<CacheEvictArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct CacheDirs {
    /// The remote: a path, or a file://, ftp://, ftps://, sftp://, s3://, gs:// or az:// URL.
    #[arg(long, value_name = "URL")]
    pub(crate) remote: String,
    /// The cache folder (created if missing; one remote per folder).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CacheOpenArgs {
    #[command(flatten)]
    pub(crate) dirs: CacheDirs,
    /// Paths below the remote's root.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<String>,
    /// Check a cached file against the remote (size and time) when it was fetched longer ago than AGE,
    /// and fetch it again only if it changed.
    #[arg(long, value_name = "AGE", value_parser = crate::time::parse_age)]
    pub(crate) max_age: Option<std::time::Duration>,
    /// Check every cached file against the remote (as --max-age 0).
    #[arg(long, conflicts_with = "max_age")]
    pub(crate) refresh: bool,
    /// An unreachable remote is an error even for a cached file (otherwise the cached copy is used,
    /// with a warning).
    #[arg(long)]
    pub(crate) online: bool,
    /// How long checking a cached file may wait for the remote before the cached copy is used, with a
    /// warning (ignored with --online).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::time::parse_age)]
    pub(crate) offline_after: std::time::Duration,
}

#[derive(Debug, Args)]
pub(crate) struct CachePathsArgs {
    #[command(flatten)]
    pub(crate) dirs: CacheDirs,
    /// Files of the cache: relative to the cache folder, or absolute paths inside it.
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CachePushArgs {
    #[command(flatten)]
    pub(crate) dirs: CacheDirs,
    /// Upload even over a remote copy that changed since it was fetched.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CacheStatusArgs {
    #[command(flatten)]
    pub(crate) dirs: CacheDirs,
    /// Call a file stale when it was fetched longer ago than AGE.
    #[arg(long, value_name = "AGE", value_parser = crate::time::parse_age)]
    pub(crate) max_age: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct CacheEvictArgs {
    #[command(flatten)]
    pub(crate) dirs: CacheDirs,
    /// What the cache may hold at most (e.g. 500M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = crate::output::parse_size)]
    pub(crate) max_size: u64,
}

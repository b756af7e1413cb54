//! The one error type of snapsync-snapshot.
//!
//! Rules: a problem with one snapshot names its id and the store; a problem with one object names its
//! checksum, the store and a path of the snapshot that uses it; a problem at the destination names the
//! local path. Store and walk errors keep their own type (and hints) as the source.

use std::path::PathBuf;

use snapsync_core::Checksum;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] snapsync_store::Error),

    /// Walking or reading a manifest failed.
    #[error(transparent)]
    Core(#[from] snapsync_core::Error),

    /// The store has no snapshot with this id.
    #[error("snapshot {id} is not in {store}")]
    SnapshotNotFound {
        /// The id.
        id: Checksum,
        /// The store's URL.
        store: String,
    },

    /// A stored manifest whose text does not hash to its id, or does not parse, or is inconsistent.
    #[error("snapshot {id} in {store} is corrupt: {reason}")]
    CorruptManifest {
        /// The id.
        id: Checksum,
        /// The store's URL.
        store: String,
        /// What is wrong.
        reason: String,
    },

    /// An object the snapshot needs is not in the store.
    #[error("object {checksum} ({path}) is missing from {store}")]
    ObjectMissing {
        /// The object's checksum.
        checksum: Checksum,
        /// A path of the snapshot with this content.
        path: String,
        /// The store's URL.
        store: String,
    },

    /// An object whose content does not hash to its key.
    #[error("object {checksum} ({path}) in {store} is corrupt: its content hashes to {actual}")]
    ObjectCorrupt {
        /// The checksum it is stored under.
        checksum: Checksum,
        /// A path of the snapshot with this content.
        path: String,
        /// The store's URL.
        store: String,
        /// What its content hashes to.
        actual: Checksum,
    },

    /// A file changed between being hashed and being uploaded.
    #[error("{} changed after it was hashed", path.display())]
    SourceChanged {
        /// The file.
        path: PathBuf,
    },

    /// Something at the destination stands where the snapshot needs something else.
    #[error("{}: {reason}", path.display())]
    InTheWay {
        /// The local path.
        path: PathBuf,
        /// What is there and why it cannot stay.
        reason: &'static str,
    },

    /// The operation was cancelled (its [`snapsync_core::Cancel`], Ctrl-C): a push or copy wrote no
    /// manifest (the objects it sent stay, and the next push skips them), a pull left every file old
    /// or new; no temporary file is left.
    #[error("interrupted")]
    Cancelled,

    /// A local file or directory operation failed.
    #[error("{}", path.display())]
    Io {
        /// The local path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// `gc` stopped before deleting anything.
    #[error("gc stopped, nothing was deleted: {reason}")]
    GcAborted {
        /// Why.
        reason: String,
    },

    /// A manifest that cannot be materialised (absolute paths).
    #[error("snapshot {id} cannot be written to a directory: {reason}")]
    NotMaterializable {
        /// The id.
        id: Checksum,
        /// Why.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// A line of advice for the user, when there is something they can do.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Store(e) => e.hint(),
            Error::Core(e) => e.hint(),
            Error::SnapshotNotFound { .. } => {
                Some("`snapsync snapshots --store URL` lists the snapshots a store has")
            }
            Error::ObjectCorrupt { .. } | Error::ObjectMissing { .. } | Error::CorruptManifest { .. } => {
                Some("push the snapshot again from a good copy; `snapsync verify` checks every object")
            }
            Error::SourceChanged { .. } => Some("the tree changed under snapsync; run the push again"),
            Error::InTheWay { .. } => {
                Some("move it away, or pull with --delete to make the directory an exact copy")
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                Some("the disk is full")
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                Some("the destination is read-only")
            }
            _ => None,
        }
    }
}

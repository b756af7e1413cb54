//! Where things live in a snapshot store: snapdir's layout, identical in the local cache.
//!
//! ```text
//! .objects/<h[0:3]>/<h[3:6]>/<h[6:9]>/<h[9:]>     a file's content, under its BLAKE3
//! .manifests/<id[0:3]>/<id[3:6]>/<id[6:9]>/<id[9:]>  a manifest's text plus a newline, under the id
//! ```

use snapsync_core::Checksum;

/// Prefix of all objects.
pub const OBJECTS: &str = ".objects";
/// Prefix of all manifests.
pub const MANIFESTS: &str = ".manifests";

fn sharded(prefix: &str, sum: &Checksum) -> String {
    let h = sum.to_hex();
    format!("{prefix}/{}/{}/{}/{}", &h[..3], &h[3..6], &h[6..9], &h[9..])
}

/// The key of the object with this content.
#[must_use]
pub fn object_key(sum: &Checksum) -> String {
    sharded(OBJECTS, sum)
}

/// The key of the manifest with this id.
#[must_use]
pub fn manifest_key(id: &Checksum) -> String {
    sharded(MANIFESTS, id)
}

/// The checksum a key of the form `PREFIX/abc/def/ghi/rest` stands for, if it has that form.
#[must_use]
pub fn parse_key(prefix: &str, key: &str) -> Option<Checksum> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [a, b, c, d] = parts.as_slice() else {
        return None;
    };
    if a.len() != 3 || b.len() != 3 || c.len() != 3 || d.len() != 55 {
        return None;
    }
    Checksum::parse_hex(format!("{a}{b}{c}{d}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_snapdir() {
        let sum: Checksum = "49dc870df1de7fd60794cebce449f5ccdae575affaa67a24b62acb03e039db92"
            .parse()
            .unwrap();
        let key = object_key(&sum);
        assert_eq!(
            key,
            ".objects/49d/c87/0df/1de7fd60794cebce449f5ccdae575affaa67a24b62acb03e039db92"
        );
        assert_eq!(manifest_key(&sum), key.replacen(".objects", ".manifests", 1));
        assert_eq!(parse_key(OBJECTS, &key), Some(sum));
        assert_eq!(parse_key(MANIFESTS, &key), None);
        assert_eq!(
            parse_key(
                OBJECTS,
                ".objects/49d/c87/0df1de7fd60794cebce449f5ccdae575affaa67a24b62acb03e039db92"
            ),
            None
        );
        assert_eq!(
            parse_key(
                OBJECTS,
                ".objects/49D/c87/0df/1de7fd60794cebce449f5ccdae575affaa67a24b62acb03e039db92"
            ),
            None
        );
    }
}

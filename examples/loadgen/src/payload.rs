//! Request bodies: one, or many taken round-robin (files from a directory
//! or a list, lines of a text file, generated tensors).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};

use crate::LoadError;

/// Largest file read as a request body (64 MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// One request body with its content type and any extra headers.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The body.
    pub body: Bytes,
    /// Its `content-type`, if any.
    pub content_type: Option<HeaderValue>,
    /// More headers sent with it (e.g. `inference-header-content-length`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Payload {
    /// A body with a content type.
    pub fn new(body: impl Into<Bytes>, content_type: &'static str) -> Self {
        Self {
            body: body.into(),
            content_type: Some(HeaderValue::from_static(content_type)),
            headers: Vec::new(),
        }
    }

    /// A JSON body.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Self::new(body, "application/json")
    }
}

/// Request bodies used in turn: request `i` sends body `i mod len`.
#[derive(Debug, Clone)]
pub struct Payloads {
    items: Arc<[Payload]>,
}

impl Payloads {
    /// Empty bodies (a plain `GET`).
    pub fn none() -> Self {
        Self::single(Payload {
            body: Bytes::new(),
            content_type: None,
            headers: Vec::new(),
        })
    }

    /// Always the same body.
    pub fn single(payload: Payload) -> Self {
        Self {
            items: Arc::from(vec![payload]),
        }
    }

    /// These bodies in turn; at least one.
    pub fn many(payloads: Vec<Payload>) -> Result<Self, LoadError> {
        if payloads.is_empty() {
            return Err(LoadError::new("no request bodies"));
        }
        Ok(Self {
            items: Arc::from(payloads),
        })
    }

    /// Each file is one body, its content type from its extension
    /// ([`content_type_for`]).
    pub fn from_files(paths: &[PathBuf]) -> Result<Self, LoadError> {
        let payloads = paths
            .iter()
            .map(|p| Ok(Payload::new(read_file(p)?, content_type_for(p))))
            .collect::<Result<Vec<_>, LoadError>>()?;
        Self::many(payloads)
    }

    /// Every regular, non-hidden file directly in `dir`, in name order.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        Self::from_files(&list_dir(dir)?)
    }

    /// One JSON body per non-empty line of `text`: `{"<key>": ["<line>"]}`,
    /// or `["<line>"]` when `key` is `None`.
    pub fn json_texts(text: &str, key: Option<&str>) -> Result<Self, LoadError> {
        let payloads = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let texts = serde_json::json!([line]);
                let value = match key {
                    Some(k) => serde_json::json!({ k: texts }),
                    None => texts,
                };
                Payload::json(serde_json::to_vec(&value).expect("strings serialize"))
            })
            .collect();
        Self::many(payloads)
    }

    /// The body of request number `seq`.
    pub fn get(&self, seq: u64) -> &Payload {
        // `items` is never empty; the remainder is below its length.
        &self.items[(seq % self.items.len() as u64) as usize]
    }

    /// How many bodies there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Never true: there is always at least one body.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The regular, non-hidden files directly in `dir`, sorted by name.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let err = |e: std::io::Error| LoadError::new(format!("{}: {e}", dir.display()));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map_err(err)?.is_file() {
            paths.push(entry.path());
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(LoadError::new(format!("{}: no files", dir.display())));
    }
    Ok(paths)
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Bytes, LoadError> {
    let err = |e: std::io::Error| LoadError::new(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(LoadError::new(format!(
            "{}: {len} bytes, more than the {MAX_FILE_BYTES} a body may have",
            path.display()
        )));
    }
    Ok(Bytes::from(std::fs::read(path).map_err(err)?))
}

/// The content type of a body file, by extension: `image/jpeg`,
/// `image/png`, `application/json`, `text/plain; charset=utf-8`, otherwise
/// `application/octet-stream`.
pub fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loadgen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn directory_bodies_round_robin_in_name_order() {
        let dir = temp_dir("dir");
        std::fs::write(dir.join("b.png"), b"png").unwrap();
        std::fs::write(dir.join("a.jpg"), b"jpeg").unwrap();
        std::fs::write(dir.join(".hidden"), b"no").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let p = Payloads::from_dir(&dir).unwrap();
        assert_eq!(p.len(), 2);
        let seen: Vec<_> = (0..4).map(|i| p.get(i).body.clone()).collect();
        assert_eq!(
            seen,
            [&b"jpeg"[..], b"png", b"jpeg", b"png"].map(Bytes::from_static)
        );
        assert_eq!(p.get(0).content_type.as_ref().unwrap(), "image/jpeg");
        assert_eq!(p.get(1).content_type.as_ref().unwrap(), "image/png");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_or_empty_sources_are_errors() {
        let dir = temp_dir("empty");
        assert!(Payloads::from_dir(&dir)
            .unwrap_err()
            .to_string()
            .contains("no files"));
        assert!(Payloads::from_files(&[dir.join("nope.jpg")]).is_err());
        assert!(Payloads::from_files(&[]).is_err());
        assert!(Payloads::json_texts("\n  \n", None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_lines_become_json_lists() {
        let p = Payloads::json_texts("hello \"world\"\n\nsecond\n", Some("texts")).unwrap();
        assert_eq!(p.len(), 2);
        let v: serde_json::Value = serde_json::from_slice(&p.get(0).body).unwrap();
        assert_eq!(v, serde_json::json!({"texts": ["hello \"world\""]}));
        let bare = Payloads::json_texts("x", None).unwrap();
        assert_eq!(&bare.get(7).body[..], br#"["x"]"#);
    }
}

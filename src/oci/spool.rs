//! File contents parked in an anonymous temporary file until a layer is
//! written.
//!
//! Composing a Debian package set reads every `.deb` before the layers are
//! grouped and written, and a package set unpacks to hundreds of MB. Held
//! as `Vec<u8>`s that is the process's memory (the bulk of a cold build's
//! peak RSS); appended to a spool file it is page cache, which the kernel
//! can write back or drop. A spool file is unlinked from the start
//! (`O_TMPFILE`), so it goes away with the last [`Span`] that refers to it,
//! whatever way the build ends.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::Result;

/// An append-only spool file.
pub struct Spool {
    file: Arc<File>,
    /// Buffered appends; flushed before a span is handed out.
    out: io::BufWriter<FileWriter>,
    len: u64,
}

/// `Write` on a shared `File` (the spans read it while it grows).
struct FileWriter(Arc<File>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Spool {
    /// A new spool file in `dir` (anonymous: nothing is left behind).
    pub fn new_in(dir: &Path) -> Result<Spool> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = Arc::new(
            tempfile::tempfile_in(dir)
                .with_context(|| format!("creating a spool file in {}", dir.display()))?,
        );
        Ok(Spool {
            out: io::BufWriter::with_capacity(1 << 16, FileWriter(file.clone())),
            file,
            len: 0,
        })
    }

    /// Appends what `r` yields (exactly `len` bytes, or an error).
    pub fn append(&mut self, r: &mut impl Read, len: u64) -> io::Result<Span> {
        let n = io::copy(&mut r.take(len), &mut self.out)?;
        self.out.flush()?;
        let offset = self.len;
        self.len += n;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes, got {n}"),
            ));
        }
        Ok(Span {
            file: self.file.clone(),
            offset,
            len,
        })
    }
}

/// A byte range of a spool file.
#[derive(Clone)]
pub struct Span {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of the range (positioned reads: spans of one file are read
    /// by several threads at once).
    pub fn reader(&self) -> SpanReader {
        SpanReader {
            span: self.clone(),
            pos: 0,
        }
    }

    /// The whole range in memory.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; self.len as usize];
        self.file.read_exact_at(&mut buf, self.offset)?;
        Ok(buf)
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Span({}+{})", self.offset, self.len)
    }
}

/// Same file, same range.
impl PartialEq for Span {
    fn eq(&self, o: &Span) -> bool {
        Arc::ptr_eq(&self.file, &o.file) && self.offset == o.offset && self.len == o.len
    }
}

impl Eq for Span {}

pub struct SpanReader {
    span: Span,
    pos: u64,
}

impl Read for SpanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.span.len - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self
            .span
            .file
            .read_at(&mut buf[..want], self.span.offset + self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file is shorter than a span of it",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_back_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new_in(dir.path()).unwrap();
        let a = s.append(&mut &b"hello "[..], 6).unwrap();
        let empty = s.append(&mut &b""[..], 0).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = s.append(&mut &big[..], big.len() as u64).unwrap();
        assert_eq!(a.read_all().unwrap(), b"hello ");
        assert!(empty.is_empty());
        let mut back = Vec::new();
        b.reader().read_to_end(&mut back).unwrap();
        assert_eq!(back, big);
        // Nothing is left in the directory: the file is anonymous.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_short_source_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new_in(dir.path()).unwrap();
        assert!(s.append(&mut &b"abc"[..], 5).is_err());
    }
}

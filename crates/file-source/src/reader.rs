//! One file's lines with their byte offsets.

use std::fs::File;
use std::io::{BufRead, BufReader};

use flate2::read::MultiGzDecoder;

use crate::{FileError, InputFile};

/// Reads one input file line by line. Gzip is recognised by its magic bytes (`1f 8b`), not by
/// the file name; concatenated gzip members are read as one stream. A line's offset is the byte
/// offset of its start in the decompressed stream; the line ends at `\n` (a `\r` before it is
/// dropped), and the last line needs no newline. Empty lines are skipped (they still move the
/// offset).
pub struct LineReader {
    path: String,
    inner: Box<dyn BufRead + Send>,
    offset: i64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl LineReader {
    /// Opens `file`.
    pub fn open(file: &InputFile) -> Result<LineReader, FileError> {
        let path = file.path.display().to_string();
        let open_err = |source| FileError::Open {
            path: path.clone(),
            source,
        };
        let mut raw = BufReader::with_capacity(1 << 16, File::open(&file.path).map_err(open_err)?);
        let gzip = raw.fill_buf().map_err(open_err)?.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(LineReader {
            path,
            inner,
            offset: 0,
            buf: Vec::new(),
        })
    }

    /// The next non-empty line and the offset of its start, `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<(i64, Vec<u8>)>, FileError> {
        loop {
            self.buf.clear();
            let start = self.offset;
            let n = self
                .inner
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| FileError::Read {
                    path: self.path.clone(),
                    offset: start,
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.offset += n as i64;
            let mut line = &self.buf[..];
            if let Some(l) = line.strip_suffix(b"\n") {
                line = l;
            }
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if !line.is_empty() {
                return Ok(Some((start, line.to_vec())));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn input(path: std::path::PathBuf) -> InputFile {
        InputFile {
            name: "t".into(),
            partition: -1,
            path,
        }
    }

    fn all(r: &mut LineReader) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        while let Some((o, l)) = r.next_line().unwrap() {
            out.push((o, String::from_utf8(l).unwrap()));
        }
        out
    }

    const TEXT: &str = "{\"a\":1}\r\n\n{\"b\":22}\nlast";

    fn expected() -> Vec<(i64, String)> {
        vec![
            (0, "{\"a\":1}".into()),
            (10, "{\"b\":22}".into()),
            (19, "last".into()),
        ]
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_lines_keep_their_byte_offsets() {
        let dir = crate::tests::temp_dir("plain");
        std::fs::write(dir.join("a.jsonl"), TEXT).unwrap();
        let mut r = LineReader::open(&input(dir.join("a.jsonl"))).unwrap();
        assert_eq!(all(&mut r), expected());
        assert!(r.next_line().unwrap().is_none(), "stays at the end");
    }

    #[test]
    fn gzip_is_known_by_its_magic_bytes_and_offsets_are_decompressed() {
        let dir = crate::tests::temp_dir("gzip");
        // No `.gz` in the name: the bytes decide. Two members, read as one stream.
        let (a, b) = TEXT.split_at(12);
        let mut bytes = gzip(a.as_bytes());
        bytes.extend(gzip(b.as_bytes()));
        std::fs::write(dir.join("archive.jsonl"), bytes).unwrap();
        let mut r = LineReader::open(&input(dir.join("archive.jsonl"))).unwrap();
        assert_eq!(all(&mut r), expected());
    }

    #[test]
    fn a_truncated_gzip_fails_naming_file_and_offset_after_the_whole_lines() {
        let dir = crate::tests::temp_dir("truncated");
        let text: String = (0..2000)
            .map(|i| format!("{{\"line\":{i},\"pad\":\"{}\"}}\n", i * 7919))
            .collect();
        let bytes = gzip(text.as_bytes());
        std::fs::write(dir.join("cut.gz"), &bytes[..bytes.len() * 2 / 3]).unwrap();
        let mut r = LineReader::open(&input(dir.join("cut.gz"))).unwrap();
        let mut lines = 0;
        let err = loop {
            match r.next_line() {
                Ok(Some((o, l))) => {
                    assert_eq!(
                        l,
                        format!("{{\"line\":{lines},\"pad\":\"{}\"}}", lines * 7919).into_bytes(),
                        "only whole lines before the cut, at {o}"
                    );
                    lines += 1;
                }
                Ok(None) => panic!("a truncated gzip must not end cleanly"),
                Err(e) => break e,
            }
        };
        assert!(lines > 0 && lines < 2000, "{lines}");
        let message = err.to_string();
        assert!(message.contains("cut.gz"), "{message}");
        let FileError::Read { offset, .. } = err else {
            panic!("{err:?}")
        };
        let whole: usize = text.lines().take(lines).map(|l| l.len() + 1).sum();
        assert_eq!(offset, whole as i64, "the offset of the line being read");
        assert!(message.contains(&format!("offset {offset}")), "{message}");
    }
}

//! The file source of `iotflow run --input PATH`: JSON-lines archives (plain or gzip, one
//! reading per line) read into the same [`KafkaRecord`](iotflow_kafka::KafkaRecord)s the Kafka
//! source emits, so they go through the same parse, enrichment, sinks and dead-letter topic.
//!
//! Each file is one *partition*: a negative number derived from the FNV-1a hash of its path
//! relative to its input root (see [`partition_of`]), so it never collides with Kafka's
//! partitions (`>= 0`) and is the same on every re-run and machine. A line's *offset* is the
//! byte offset of its start in the (decompressed) file; it has no broker timestamp. The sinks'
//! primary keys on the source position make a re-run write nothing twice.
//!
//! [`discover`] finds the files, [`file_source`] is the timely operator.

mod files;
mod reader;
mod source;

pub use files::{discover, partition_of, InputFile};
pub use reader::LineReader;
pub use source::{assigned, file_source, FileSourceOptions, FileSummary, FILE_TOPIC};

/// What can go wrong with the input files; each error names the file (and the offset where it
/// applies). All are definite: the job stops after the sinks acknowledged what was read before.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An input path cannot be listed or opened.
    #[error("input {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading (or decompressing) failed at `offset` of the decompressed stream.
    #[error("input file {path} at offset {offset}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Byte offset (in the decompressed stream) of the line being read.
        offset: i64,
        /// Why (a truncated gzip stream is `unexpected end of file`).
        source: std::io::Error,
    },
    /// Two files have the same partition number.
    #[error("input files {first} and {second} both map to partition {partition}; rename one (the partition is the FNV-1a hash of the relative path)")]
    Collision {
        /// One file's relative path.
        first: String,
        /// The other's.
        second: String,
        /// The shared partition.
        partition: i32,
    },
    /// No file was found under the inputs.
    #[error("no input files under {0}")]
    Empty(String),
}

#[cfg(test)]
pub(crate) mod tests {
    /// A fresh directory for one test.
    pub fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "iotflow-file-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let dir = std::path::PathBuf::from(
            dir.to_string_lossy()
                .replace([' ', '{', '}', ':', ','], "_"),
        );
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

//! Finding the input files and numbering them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::FileError;

/// One input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its path relative to the input root (`/`-separated): what names it in dead letters and
    /// what its partition is derived from.
    pub name: String,
    /// Its partition number (negative), see [`partition_of`].
    pub partition: i32,
}

/// The partition of the file named `name` (relative to its input root): the 32-bit FNV-1a
/// hash of the name's bytes, mapped onto `i32::MIN..=-1`. Kafka partitions are `>= 0`, so file
/// positions never collide with broker positions in the sinks' source columns.
pub fn partition_of(name: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    -1 - (h & 0x7fff_ffff) as i32
}

/// The files of `inputs`, sorted by relative name (then path): a file stands for itself (its
/// name is its file name), a directory for every file under it, walked recursively (names
/// relative to the directory; hidden entries, starting with `.`, are skipped). Fails when an
/// input cannot be read, when there is no file at all, or when two files map to the same
/// partition.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<InputFile>, FileError> {
    let mut found = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| FileError::Open {
            path: input.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            walk(input, input, &mut found)?;
        } else {
            let name = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| input.display().to_string());
            found.push((name, input.clone()));
        }
    }
    if found.is_empty() {
        let all: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(FileError::Empty(all.join(", ")));
    }
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    let mut seen: BTreeMap<i32, String> = BTreeMap::new();
    let mut files = Vec::with_capacity(found.len());
    for (name, path) in found {
        let partition = partition_of(&name);
        if let Some(first) = seen.insert(partition, name.clone()) {
            return Err(FileError::Collision {
                first,
                second: name,
                partition,
            });
        }
        files.push(InputFile {
            path,
            name,
            partition,
        });
    }
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), FileError> {
    let open = |source| FileError::Open {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(open)?
        .collect::<Result<_, _>>()
        .map_err(open)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, like `metadata` on the inputs themselves.
        let meta = std::fs::metadata(&path).map_err(|source| FileError::Open {
            path: path.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((name, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_negative_and_stable() {
        // FNV-1a 32 of "" is 0x811c9dc5, of "a" 0xe40c292c (published test vectors).
        assert_eq!(partition_of(""), -1 - 0x011c_9dc5);
        assert_eq!(partition_of("a"), -1 - 0x640c_292c);
        for name in ["a", "2025/04/10.jsonl.gz", "x".repeat(300).as_str()] {
            assert!(partition_of(name) < 0);
            assert_eq!(partition_of(name), partition_of(name));
        }
        assert_ne!(partition_of("a.jsonl"), partition_of("b.jsonl"));
    }

    #[test]
    fn directories_are_walked_in_order_with_relative_names() {
        let dir = crate::tests::temp_dir("walk");
        std::fs::create_dir_all(dir.join("b/c")).unwrap();
        std::fs::write(dir.join("b/c/z.jsonl"), "").unwrap();
        std::fs::write(dir.join("b/a.jsonl"), "").unwrap();
        std::fs::write(dir.join("a.jsonl"), "").unwrap();
        std::fs::write(dir.join(".hidden"), "").unwrap();
        let files = discover(std::slice::from_ref(&dir)).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.jsonl", "b/a.jsonl", "b/c/z.jsonl"]);
        assert_eq!(files[1].partition, partition_of("b/a.jsonl"));
        // A file given directly is named by its file name; listed twice, it is read once.
        let single = discover(&[dir.join("b/a.jsonl"), dir.join("b/a.jsonl")]).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].name, "a.jsonl");
    }

    #[test]
    fn a_name_clash_and_a_missing_input_are_refused() {
        let dir = crate::tests::temp_dir("clash");
        std::fs::create_dir_all(dir.join("x")).unwrap();
        std::fs::write(dir.join("a.jsonl"), "").unwrap();
        std::fs::write(dir.join("x/a.jsonl"), "").unwrap();
        // Both are named `a.jsonl` relative to their roots: the same partition.
        let err = discover(&[dir.join("a.jsonl"), dir.join("x")]).unwrap_err();
        assert!(
            matches!(err, FileError::Collision { ref first, .. } if first == "a.jsonl"),
            "{err}"
        );
        let err = discover(&[dir.join("nope")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        assert!(matches!(
            discover(&[dir.join("empty")]),
            Err(FileError::Empty(_))
        ));
    }
}

//! Test support shared by the storage modules' unit tests: a temporary
//! directory removed even when a test fails, the listing of a directory, and
//! the one-line check of an error.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

/// A unique temporary directory, removed on drop (also when a test fails).
pub(crate) struct TestDir {
    pub(crate) path: PathBuf,
}

impl TestDir {
    pub(crate) fn new(label: &str) -> TestDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("electrode-storage-{label}-{}-{unique}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test directory");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The error of `result`, asserted to be one line.
pub(crate) fn one_line_error<T: std::fmt::Debug>(result: Result<T>) -> String {
    let text = format!("{:#}", result.expect_err("expected an error"));
    assert!(!text.contains('\n'), "error is not one line: {text:?}");
    text
}

/// The names in `dir`, sorted.
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

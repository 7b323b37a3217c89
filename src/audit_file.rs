//! The durable audit sink: an append-only JSON-lines file, fsynced per batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use termshare_actors::{AuditEvent, AuditSink};

use crate::config::Durability;

pub struct JsonlFileSink {
    path: PathBuf,
    file: File,
    durability: Durability,
}

impl JsonlFileSink {
    /// Opens (creating it, mode 0600, and its directory, mode 0700) for appending.
    pub fn open(path: &Path, durability: Durability) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(JsonlFileSink {
            path: path.to_path_buf(),
            file,
            durability,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AuditSink for JsonlFileSink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(events.len() * 256);
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        // One write per batch: with O_APPEND a batch lands whole.
        self.file
            .write_all(&buf)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if self.durability == Durability::Durable {
            self.file
                .sync_data()
                .map_err(|e| format!("{}: fsync: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

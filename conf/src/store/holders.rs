//! Who holds a name on a network: under `.names/<name>/` a file per attachment whose record
//! has that name, so an ADD finds the other holders of its container's name (and releases
//! those whose netns is gone) without reading the whole network. (A host's claim of its
//! name on a shared network, R32, is another thing: the sync process's.)

use std::fs;
use std::path::PathBuf;

use super::{NetworkLock, NetworkStore};
use crate::fsutil::{create_private_dir, remove_if_exists, subdirectory_names, write_atomic};
use crate::ConfError;

/// The holders' directory of a network.
const NAMES_DIR: &str = ".names";

impl NetworkStore {
    /// The attachments that hold `name` on this network (a cost of O(holders), not
    /// O(network)).
    pub fn holders(&self, name: &str) -> Result<Vec<String>, ConfError> {
        subdirectory_names(&self.holders_dir(name))
    }

    /// Removes a holder of `name` whose record is gone (left by a crash between two writes).
    pub fn drop_holder(&self, _lock: &NetworkLock, name: &str, key: &str) -> Result<(), ConfError> {
        let holders = self.holders_dir(name);
        remove_if_exists(&holders.join(key))?;
        let _ = fs::remove_dir(&holders);
        Ok(())
    }

    /// Notes that the attachment `key` holds `name`.
    pub(super) fn add_holder(&self, name: &str, key: &str) -> Result<(), ConfError> {
        let holders = self.holders_dir(name);
        create_private_dir(&holders)?;
        write_atomic(&holders.join(key), b"")
    }

    /// The directory of `name`'s holders: a file per attachment that holds it.
    fn holders_dir(&self, name: &str) -> PathBuf {
        self.dir.join(NAMES_DIR).join(name)
    }
}

//! The store's errors are the seam's (`courier_core::Error`); fjall's own
//! become [`Error::Io`] or [`Error::Backend`] through [`FjallResult`].
//!
//! Callers map these to their own surface (HTTP statuses, plugin errors);
//! the variants are chosen so that mapping needs no string matching.

pub use courier_core::{Error, Result};

/// fjall's error in the seam's terms: its I/O errors as I/O, the rest by
/// their message.
pub(crate) fn from_fjall(error: fjall::Error) -> Error {
    match error {
        fjall::Error::Io(io) => Error::Io(io),
        other => Error::Backend(format!("fjall: {other}")),
    }
}

/// `?` on a fjall result: `keyspace.get(key).fjall()?`.
pub(crate) trait FjallResult<T> {
    fn fjall(self) -> Result<T>;
}

impl<T> FjallResult<T> for std::result::Result<T, fjall::Error> {
    fn fjall(self) -> Result<T> {
        self.map_err(from_fjall)
    }
}

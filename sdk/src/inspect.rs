//! Finds a plugin's metadata record in the bytes of a shared library
//! (ELF, PE/COFF or Mach-O) with the `object` crate, without loading it.
//!
//! The record is looked up first by section (`.bwmeta`, or `__DATA,__bwmeta`
//! on Mach-O), then through the exported symbol `backworks_plugin_metadata`.
//! This is the one reader the host's discovery and `cargo backworks check`
//! share.

use object::{Object, ObjectSection, ObjectSymbol};

use crate::abi::{
    METADATA_MAGIC, METADATA_RECORD_SIZE, METADATA_SECTION, METADATA_SECTION_MACHO, METADATA_SYMBOL,
};
use crate::metadata::{self, MetadataError, PluginMetadata};

/// Why no valid metadata record could be read from a file's bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The bytes are not an object file `object` can read.
    #[error("not an ELF, PE or Mach-O file: {0}")]
    NotObject(#[source] object::Error),
    /// The file has neither the section nor the symbol.
    #[error(
        "no backworks metadata record: neither section `{METADATA_SECTION}` (`__DATA,__bwmeta` on Mach-O) nor symbol `{METADATA_SYMBOL}` is present; build the plugin with `export_plugin!` (Rust) or `BACKWORKS_DECLARE_METADATA` (C)"
    )]
    NoRecord,
    /// The section's or symbol's bytes cannot be read from the file.
    #[error("cannot read the bytes of {place}: {detail}")]
    Unreadable {
        /// Which section or symbol.
        place: String,
        /// What went wrong.
        detail: String,
    },
    /// The metadata section holds more than one record.
    #[error(
        "section `{0}` holds more than one metadata record; a plugin library exports exactly one (is `export_plugin!` used twice?)"
    )]
    Duplicate(String),
    /// The record is there but invalid.
    #[error("invalid metadata record in {place}: {source}")]
    Metadata {
        /// Which section or symbol.
        place: String,
        /// What is wrong with it.
        #[source]
        source: MetadataError,
    },
}

/// The metadata record of the library in `file`, parsed and validated.
///
/// Never panics and reads only within `file`, whatever its contents.
pub fn find_metadata(file: &[u8]) -> Result<PluginMetadata, InspectError> {
    let object = object::File::parse(file).map_err(InspectError::NotObject)?;
    let (place, bytes) = match record_section(&object)? {
        Some(found) => found,
        None => record_symbol(&object)?.ok_or(InspectError::NoRecord)?,
    };
    metadata::parse(bytes).map_err(|source| InspectError::Metadata { place, source })
}

fn is_metadata_section(object: &object::File<'_>, section: &object::Section<'_, '_>) -> bool {
    let Ok(name) = section.name() else {
        return false;
    };
    match object.format() {
        object::BinaryFormat::MachO => {
            name == METADATA_SECTION_MACHO.1
                && section.segment_name().ok().flatten() == Some(METADATA_SECTION_MACHO.0)
        }
        _ => name == METADATA_SECTION,
    }
}

fn record_section<'data>(
    object: &object::File<'data>,
) -> Result<Option<(String, &'data [u8])>, InspectError> {
    let Some(section) = object.sections().find(|s| is_metadata_section(object, s)) else {
        return Ok(None);
    };
    let place = format!("section `{}`", section.name().unwrap_or(METADATA_SECTION));
    let bytes = section.data().map_err(|e| InspectError::Unreadable {
        place: place.clone(),
        detail: e.to_string(),
    })?;
    let second = bytes.get(METADATA_RECORD_SIZE..METADATA_RECORD_SIZE + METADATA_MAGIC.len());
    if second == Some(&METADATA_MAGIC[..]) {
        return Err(InspectError::Duplicate(place));
    }
    Ok(Some((place, bytes)))
}

fn record_symbol<'data>(
    object: &object::File<'data>,
) -> Result<Option<(String, &'data [u8])>, InspectError> {
    let wanted = |name: &[u8]| {
        name == METADATA_SYMBOL.as_bytes()
            || name.strip_prefix(b"_") == Some(METADATA_SYMBOL.as_bytes())
    };
    let address = match object.exports() {
        Ok(exports) => exports
            .filter_map(Result::ok)
            .filter(|e| matches!(e.name(), object::NameOrOrdinal::Name(name) if wanted(name)))
            .find_map(|e| match e.target() {
                object::ExportTarget::Address { address } => Some(address),
                _ => None,
            }),
        Err(_) => None,
    }
    .or_else(|| {
        object
            .dynamic_symbols()
            .chain(object.symbols())
            .find(|s| s.is_definition() && s.name_bytes().is_ok_and(wanted))
            .map(|s| s.address())
    });
    let Some(address) = address else {
        return Ok(None);
    };
    let place = format!("symbol `{METADATA_SYMBOL}` at {address:#x}");
    for section in object.sections() {
        let start = section.address();
        let Some(offset) = address.checked_sub(start) else {
            continue;
        };
        if offset >= section.size() {
            continue;
        }
        let bytes = section.data().map_err(|e| InspectError::Unreadable {
            place: place.clone(),
            detail: e.to_string(),
        })?;
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|offset| bytes.get(offset..))
            .ok_or_else(|| InspectError::Unreadable {
                place: place.clone(),
                detail: String::from("the symbol points past its section's bytes in the file"),
            })?;
        return Ok(Some((place, bytes)));
    }
    Err(InspectError::Unreadable {
        place,
        detail: String::from("no section contains the symbol's address"),
    })
}

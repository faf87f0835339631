//! Finds a plugin's metadata record in the bytes of a shared library
//! (ELF, PE/COFF or Mach-O) with the `object` crate, without loading it.
//!
//! The record is looked up first by section (`.bwmeta`, or `__DATA,__bwmeta`
//! on Mach-O), then through the exported symbol `backworks_plugin_metadata`.
//! This is the one reader the host's discovery and `cargo backworks check`
//! share.

use std::fs::File;

use object::read::ReadCache;
use object::read::macho::{MachHeader, MachOFile};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadRef};

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
    /// The export table (ELF dynamic symbols, PE export directory, Mach-O
    /// export trie) cannot be read.
    #[error("cannot read the export table: {0}")]
    ExportTable(String),
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
    find_metadata_in(file)
}

/// The metadata record of the library in the open `file`, read in place:
/// only the parts the lookup needs (headers, the record's section or the
/// export table) are read, never the whole file. For a file just written
/// whose bytes are no longer in memory (a download).
///
/// Never panics and reads only within `file`, whatever its contents; an I/O
/// error reads as bytes that are missing.
pub fn find_metadata_in_file(file: &File) -> Result<PluginMetadata, InspectError> {
    find_metadata_in(&ReadCache::new(file))
}

fn find_metadata_in<'data, R: ReadRef<'data>>(data: R) -> Result<PluginMetadata, InspectError> {
    let object = object::File::parse(data).map_err(InspectError::NotObject)?;
    let located = locate_record(&object)?;
    metadata::parse(located.bytes).map_err(|source| InspectError::Metadata {
        place: located.place,
        source,
    })
}

/// Where a metadata record was found in a file, and its bytes, not yet
/// parsed: for callers that want the header of a record whose body they
/// cannot read (another ABI), or that already hold the parsed
/// [`object::File`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedRecord<'data> {
    /// Where the record is, for messages: ``section `.bwmeta` `` or
    /// ``symbol `backworks_plugin_metadata` at 0x…``.
    pub place: String,
    /// `true` when found through the section, `false` when through the
    /// exported symbol (the fallback).
    pub in_section: bool,
    /// The bytes from the record's first byte to the end of the section
    /// holding it (a section may be padded past the record).
    pub bytes: &'data [u8],
}

/// Finds the metadata record's bytes in an already parsed `object`: the
/// section first, then the exported symbol `backworks_plugin_metadata`.
///
/// Errors are [`InspectError::NoRecord`], [`InspectError::Unreadable`] and
/// [`InspectError::Duplicate`]; the bytes are not validated (use
/// [`metadata::parse`] or [`metadata::parse_header`]). Never panics; the
/// full static symbol table is read only when neither the section nor an
/// export is found.
pub fn locate_record<'data, R: ReadRef<'data>>(
    object: &object::File<'data, R>,
) -> Result<LocatedRecord<'data>, InspectError> {
    if let Some((place, bytes)) = record_section(object)? {
        return Ok(LocatedRecord {
            place,
            in_section: true,
            bytes,
        });
    }
    let (place, bytes) = record_symbol(object)?.ok_or(InspectError::NoRecord)?;
    Ok(LocatedRecord {
        place,
        in_section: false,
        bytes,
    })
}

fn is_metadata_section<'data, R: ReadRef<'data>>(
    object: &object::File<'data, R>,
    section: &object::Section<'data, '_, R>,
) -> bool {
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

fn record_section<'data, R: ReadRef<'data>>(
    object: &object::File<'data, R>,
) -> Result<Option<(String, &'data [u8])>, InspectError> {
    let Some(section) = object.sections().find(|s| is_metadata_section(object, s)) else {
        return Ok(None);
    };
    let place = format!("section `{}`", section.name().unwrap_or(METADATA_SECTION));
    let bytes = section.data().map_err(|e| InspectError::Unreadable {
        place: place.clone(),
        detail: e.to_string(),
    })?;
    // A second record would follow the first, whose size its header gives
    // (a valid one is at least v1's 512 bytes).
    let stride = metadata::parse_header(bytes)
        .map_or(METADATA_RECORD_SIZE, |h| h.record_size as usize)
        .max(METADATA_RECORD_SIZE);
    let second = stride
        .checked_add(METADATA_MAGIC.len())
        .and_then(|end| bytes.get(stride..end));
    if second == Some(&METADATA_MAGIC[..]) {
        return Err(InspectError::Duplicate(place));
    }
    Ok(Some((place, bytes)))
}

fn record_symbol<'data, R: ReadRef<'data>>(
    object: &object::File<'data, R>,
) -> Result<Option<(String, &'data [u8])>, InspectError> {
    let wanted = |name: &[u8]| {
        name == METADATA_SYMBOL.as_bytes()
            || name.strip_prefix(b"_") == Some(METADATA_SYMBOL.as_bytes())
    };
    let mut exported = None;
    // A corrupt export table is not this function's to report: fall back to
    // the symbol tables.
    let _ = for_each_export(object, |export| {
        if exported.is_none()
            && export.name.is_some_and(wanted)
            && let object::ExportTarget::Address { address } = export.target
        {
            exported = Some(address);
        }
    });
    let address = exported.or_else(|| {
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

/// One symbol a library exports, as [`for_each_export`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportedSymbol<'a> {
    /// The exported name, with Mach-O's leading `_` removed; `None` for a PE
    /// export by ordinal only.
    pub name: Option<&'a [u8]>,
    /// What the name resolves to. An address is a virtual address, in the
    /// same space as the file's section addresses.
    pub target: object::ExportTarget<'a>,
    /// The format's own flags (the ELF symbol type and binding, for one).
    pub flags: object::ExportFlags<'a>,
}

/// Calls `visit` for every symbol the library `object` exports (ELF: the
/// defined global dynamic symbols; PE: the export directory; Mach-O: the
/// export trie, or the symbol table when there is none) and returns how many
/// there were.
///
/// Reads only the export structures: neither debug sections nor the static
/// symbol table. Never panics and always ends: Mach-O export tries are
/// walked with each node visited at most once, so a corrupt trie whose
/// edges point back into it (a cycle, or a node shared by several edges,
/// which could otherwise take exponential time) is an error rather than a
/// hang.
pub fn for_each_export<'data, R: ReadRef<'data>>(
    object: &object::File<'data, R>,
    mut visit: impl FnMut(ExportedSymbol<'_>),
) -> Result<usize, InspectError> {
    let trie = match object {
        object::File::MachO32(file) => macho_export_trie(object, file)?,
        object::File::MachO64(file) => macho_export_trie(object, file)?,
        _ => None,
    };
    if let Some((trie, image_base)) = trie {
        return walk_export_trie(trie, image_base, visit);
    }
    let is_macho = object.format() == object::BinaryFormat::MachO;
    let exports = object
        .exports()
        .map_err(|e| InspectError::ExportTable(e.to_string()))?;
    let mut count = 0;
    for export in exports {
        let export = export.map_err(|e| InspectError::ExportTable(e.to_string()))?;
        count += 1;
        let name = match export.name() {
            object::NameOrOrdinal::Name(name) if is_macho => {
                Some(name.strip_prefix(b"_").unwrap_or(name))
            }
            object::NameOrOrdinal::Name(name) => Some(name),
            object::NameOrOrdinal::Ordinal(_) => None,
        };
        visit(ExportedSymbol {
            name,
            target: export.target(),
            flags: export.flags(),
        });
    }
    Ok(count)
}

/// The bytes of a Mach-O file's export trie (`LC_DYLD_EXPORTS_TRIE`, or the
/// export part of `LC_DYLD_INFO[_ONLY]`) and the image base its addresses are
/// relative to; `None` when the file has no trie.
fn macho_export_trie<'data, Mach, R>(
    object: &object::File<'data, R>,
    file: &MachOFile<'data, Mach, R>,
) -> Result<Option<(&'data [u8], u64)>, InspectError>
where
    Mach: MachHeader<Endian = object::Endianness>,
    R: ReadRef<'data>,
{
    let corrupt = |e: object::Error| InspectError::ExportTable(e.to_string());
    let endian = file.endian();
    let mut range = None;
    let mut commands = file.macho_load_commands().map_err(corrupt)?;
    while let Some(command) = commands.next().map_err(corrupt)? {
        if let Some(trie) = command.dyld_exports_trie().map_err(corrupt)? {
            range = Some((trie.dataoff.get(endian), trie.datasize.get(endian)));
        } else if let Some(info) = command.dyld_info().map_err(corrupt)?
            && range.is_none()
            && info.export_size.get(endian) > 0
        {
            range = Some((info.export_off.get(endian), info.export_size.get(endian)));
        }
    }
    let Some((offset, size)) = range else {
        return Ok(None);
    };
    let bytes = file
        .data()
        .read_bytes_at(offset.into(), size.into())
        .map_err(|()| {
            InspectError::ExportTable(format!(
                "the export trie ({size} bytes at file offset {offset:#x}) lies outside the file"
            ))
        })?;
    let image_base = object
        .segments()
        .find(|s| s.name().ok().flatten() == Some("__TEXT"))
        .map_or(0, |s| s.address());
    Ok(Some((bytes, image_base)))
}

/// Mach-O export symbol flags (`<mach-o/loader.h>`).
const EXPORT_KIND_MASK: u64 = 0x03;
const EXPORT_KIND_THREAD_LOCAL: u64 = 0x01;
const EXPORT_KIND_ABSOLUTE: u64 = 0x02;
const EXPORT_REEXPORT: u64 = 0x08;
const EXPORT_STUB_AND_RESOLVER: u64 = 0x10;

/// Walks a Mach-O export trie depth first, visiting each terminal node
/// (an exported name), and returns the number of exports.
///
/// A node is `uleb128 terminal_size`, the terminal info (`uleb128 flags`,
/// then the address, or for a re-export the dylib ordinal and imported name,
/// or for a stub-and-resolver the stub and resolver addresses), a `u8`
/// child count, and per child a NUL-terminated edge label and the `uleb128`
/// offset of the child node. In a valid trie every node but the root has
/// exactly one parent, so a node reached twice is an error.
fn walk_export_trie(
    trie: &[u8],
    image_base: u64,
    mut visit: impl FnMut(ExportedSymbol<'_>),
) -> Result<usize, InspectError> {
    let corrupt = |offset: usize, what: &str| {
        InspectError::ExportTable(format!("export trie node at {offset:#x}: {what}"))
    };
    let mut visited = vec![false; trie.len()];
    let mut name: Vec<u8> = Vec::new();
    // (node offset, length of the parent's name, edge label to the node)
    let mut pending: Vec<(usize, usize, &[u8])> = vec![(0, 0, &[])];
    let mut count = 0;
    while let Some((offset, parent_len, edge)) = pending.pop() {
        match visited.get_mut(offset) {
            None => return Err(corrupt(offset, "outside the trie")),
            Some(true) => return Err(corrupt(offset, "reached twice (cycle or shared node)")),
            Some(seen) => *seen = true,
        }
        name.truncate(parent_len);
        name.extend_from_slice(edge);
        let mut node = TrieCursor {
            bytes: trie,
            at: offset,
        };
        let terminal_size = node
            .uleb()
            .ok_or_else(|| corrupt(offset, "bad terminal size"))?;
        if terminal_size > 0 {
            let end = usize::try_from(terminal_size)
                .ok()
                .and_then(|size| node.at.checked_add(size))
                .filter(|&end| end <= trie.len())
                .ok_or_else(|| corrupt(offset, "terminal info past the end of the trie"))?;
            let mut info = TrieCursor {
                bytes: &trie[..end],
                at: node.at,
            };
            let bad = || corrupt(offset, "bad terminal info");
            let flags = info.uleb().ok_or_else(bad)?;
            let target = if flags & EXPORT_REEXPORT != 0 {
                let _ordinal = info.uleb().ok_or_else(bad)?;
                let imported = info.c_str().ok_or_else(bad)?;
                object::ExportTarget::Reexport {
                    library: &[],
                    name: object::NameOrOrdinal::Name(imported),
                }
            } else {
                let address = image_base.wrapping_add(info.uleb().ok_or_else(bad)?);
                if flags & EXPORT_STUB_AND_RESOLVER != 0 {
                    let resolver = image_base.wrapping_add(info.uleb().ok_or_else(bad)?);
                    object::ExportTarget::Resolver {
                        resolver,
                        stub: Some(address),
                    }
                } else {
                    match flags & EXPORT_KIND_MASK {
                        EXPORT_KIND_THREAD_LOCAL => object::ExportTarget::TlvDescriptor { address },
                        EXPORT_KIND_ABSOLUTE => object::ExportTarget::Absolute {
                            value: address.wrapping_sub(image_base),
                        },
                        _ => object::ExportTarget::Address { address },
                    }
                }
            };
            count += 1;
            visit(ExportedSymbol {
                name: Some(name.strip_prefix(b"_").unwrap_or(&name)),
                target,
                flags: object::ExportFlags::None,
            });
            node.at = end;
        }
        let children = node
            .byte()
            .ok_or_else(|| corrupt(offset, "bad child count"))?;
        for _ in 0..children {
            let edge = node
                .c_str()
                .ok_or_else(|| corrupt(offset, "bad edge label"))?;
            let child = node
                .uleb()
                .and_then(|child| usize::try_from(child).ok())
                .ok_or_else(|| corrupt(offset, "bad child offset"))?;
            pending.push((child, name.len(), edge));
        }
    }
    Ok(count)
}

/// Reads the trie's primitive values; `None` past the end or on overflow.
struct TrieCursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> TrieCursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn c_str(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        self.at += len + 1;
        Some(&rest[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A trie node: terminal info (flags, address) and children (edge,
    /// offset); offsets must stay below 128 so they encode in one byte.
    fn node(terminal: Option<(u64, u64)>, children: &[(&str, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        match terminal {
            Some((flags, address)) => {
                let mut info = Vec::new();
                uleb(flags, &mut info);
                uleb(address, &mut info);
                uleb(info.len() as u64, &mut out);
                out.extend(info);
            }
            None => out.push(0),
        }
        out.push(children.len() as u8);
        for (edge, offset) in children {
            out.extend_from_slice(edge.as_bytes());
            out.push(0);
            out.push(*offset);
        }
        out
    }

    fn walk(trie: &[u8]) -> Result<Vec<(String, object::ExportTarget<'static>)>, InspectError> {
        let mut seen = Vec::new();
        walk_export_trie(trie, 0x1000, |export| {
            let target = match export.target {
                object::ExportTarget::Address { address } => {
                    object::ExportTarget::Address { address }
                }
                object::ExportTarget::TlvDescriptor { address } => {
                    object::ExportTarget::TlvDescriptor { address }
                }
                object::ExportTarget::Absolute { value } => {
                    object::ExportTarget::Absolute { value }
                }
                _ => object::ExportTarget::Absolute { value: u64::MAX },
            };
            seen.push((
                String::from_utf8_lossy(export.name.unwrap()).into_owned(),
                target,
            ));
        })
        .map(|count| {
            assert_eq!(count, seen.len());
            seen
        })
    }

    /// Lays out `nodes` at their offsets (which must not overlap).
    fn layout(nodes: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut trie = Vec::new();
        for (offset, bytes) in nodes {
            assert!(
                trie.len() <= usize::from(*offset),
                "node at {offset} overlaps"
            );
            trie.resize(usize::from(*offset), 0);
            trie.extend_from_slice(bytes);
        }
        trie
    }

    #[test]
    fn a_shared_prefix_trie_is_walked_and_underscores_dropped() {
        // root -> "_" -> { "plugin_" -> { "info", "vtable" }, "data" (thread-local) }
        let trie = layout(&[
            (0, node(None, &[("_", 8)])),
            (8, node(None, &[("plugin_", 32), ("data", 64)])),
            (32, node(None, &[("info", 72), ("vtable", 80)])),
            (64, node(Some((EXPORT_KIND_THREAD_LOCAL, 0x30)), &[])),
            (72, node(Some((0, 0x10)), &[])),
            (80, node(Some((0, 0x20)), &[])),
        ]);
        let mut exports = walk(&trie).unwrap();
        exports.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            exports,
            [
                (
                    "data".to_owned(),
                    object::ExportTarget::TlvDescriptor { address: 0x1030 }
                ),
                (
                    "plugin_info".to_owned(),
                    object::ExportTarget::Address { address: 0x1010 }
                ),
                (
                    "plugin_vtable".to_owned(),
                    object::ExportTarget::Address { address: 0x1020 }
                ),
            ]
        );
    }

    #[test]
    fn cycles_and_shared_nodes_are_errors_not_hangs() {
        // A node pointing back at its parent.
        let trie = layout(&[(0, node(None, &[("a", 8)])), (8, node(None, &[("b", 0)]))]);
        let error = walk(&trie).unwrap_err().to_string();
        assert!(error.contains("reached twice"), "{error}");

        // 30 levels of two edges to the same next node (8 bytes each): 2^30
        // paths if the walk followed every edge.
        let mut trie = Vec::new();
        for level in 0..30u8 {
            let bytes = node(None, &[("x", (level + 1) * 8), ("y", (level + 1) * 8)]);
            assert_eq!(bytes.len(), 8);
            trie.extend(bytes);
        }
        trie.extend(node(Some((0, 1)), &[]));
        let error = walk(&trie).unwrap_err().to_string();
        assert!(error.contains("reached twice"), "{error}");
    }

    #[test]
    fn truncated_and_garbage_tries_are_errors() {
        let trie = layout(&[
            (0, node(None, &[("_f", 6)])),
            (6, node(Some((0, 0x10)), &[])),
        ]);
        assert_eq!(walk(&trie).unwrap().len(), 1);
        for cut in 0..trie.len() {
            assert!(walk(&trie[..cut]).is_err(), "cut at {cut}");
        }
        assert!(walk(&[0x80; 16]).is_err(), "unterminated uleb128");
        assert!(walk(&[0xff; 11]).is_err(), "uleb128 overflow");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = walk(&bytes);
        }
    }
}

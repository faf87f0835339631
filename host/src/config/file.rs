//! The structure of `backworks.yaml`, declared once with serde derives: which
//! sections and fields exist, which are mappings, lists or values, and
//! (`deny_unknown_fields`) that nothing else is there.
//!
//! This is the second of the three steps of [`super::parse`], after the YAML
//! parser. Deserializing the parsed document into [`File`] fails only on a field the format does not
//! have; every value is kept as written ([`Leaf`]), and a section of the
//! wrong shape as the value it is ([`Map::Not`], [`List::Not`]), for the
//! third step ([`super::read`]) to check with the environment (`${VAR}`) and
//! the configuration file's directory at hand, which a `deserialize_with`
//! function cannot see, and to word the message for that field.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::value::{EnumAccessDeserializer, MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml::Value;

/// The whole file.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct File {
    pub server: Map<Server>,
    pub plugin_dirs: List<Leaf>,
    pub trusted_keys: List<Map<KeyEntry>>,
    pub require_signatures: Leaf,
    pub max_plugin_size: Leaf,
    pub plugins: Map<Entries<Map<PluginEntry>>>,
    pub marketplace: Map<Marketplace>,
    pub updates: Map<Updates>,
}

/// `server:`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Server {
    pub listen: Leaf,
    pub hook_timeout: Leaf,
    pub shutdown_timeout: Leaf,
    pub header_timeout: Leaf,
    pub idle_timeout: Leaf,
    pub max_connections: Leaf,
    pub public: List<Leaf>,
    pub isolation: Leaf,
    pub marketplace_isolation: Leaf,
    pub watchdog: Map<Watchdog>,
    pub process: Map<Process>,
}

/// `server.process:`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Process {
    pub max_crashes: Leaf,
    pub crash_window: Leaf,
    pub memory: Leaf,
    pub open_files: Leaf,
}

/// `server.watchdog:`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Watchdog {
    pub threshold: Leaf,
    pub action: Leaf,
}

/// One entry of `trusted_keys`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct KeyEntry {
    pub file: Leaf,
    pub key: Leaf,
}

/// One entry of `plugins`; which fields a type allows is checked when it
/// is read. `config` is the plugin's own, free-form.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct PluginEntry {
    #[serde(rename = "type")]
    pub kind: Leaf,
    pub path: Leaf,
    pub version: Leaf,
    pub isolation: Leaf,
    pub config: Leaf,
}

/// `marketplace:`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Marketplace {
    pub registry: Leaf,
    pub key: Leaf,
    pub cache_dir: Leaf,
    pub max_download: Leaf,
    pub transfer_timeout: Leaf,
    pub min_transfer_rate: Leaf,
}

/// `updates:`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Updates {
    pub check_interval: Leaf,
    pub allow: Leaf,
    pub plugins: Map<Entries<Leaf>>,
}

/// The fields of the section whose entry is at `parent` (a field path from
/// the top of the document), for the unknown-field message: what
/// `deny_unknown_fields` refused there, as the derive declares them.
pub(super) fn fields_at(parent: &[super::Seg]) -> &'static [&'static str] {
    use super::Seg::{Index, Key};
    match parent {
        [] => fields_of::<File>(),
        [Key(section)] if section == "server" => fields_of::<Server>(),
        [Key(section), Key(sub)] if section == "server" && sub == "watchdog" => {
            fields_of::<Watchdog>()
        }
        [Key(section), Key(sub)] if section == "server" && sub == "process" => {
            fields_of::<Process>()
        }
        [Key(section)] if section == "marketplace" => fields_of::<Marketplace>(),
        [Key(section)] if section == "updates" => fields_of::<Updates>(),
        [Key(section), Index(_)] if section == "trusted_keys" => fields_of::<KeyEntry>(),
        [Key(section), Key(_)] if section == "plugins" => fields_of::<PluginEntry>(),
        // No other mapping has fixed fields.
        _ => &[],
    }
}

/// The fields serde's derive declares for the struct `T`, in order: what
/// it hands `Deserializer::deserialize_struct`, asked of a deserializer
/// that only records them.
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    backworks_registry::field_names::<T>()
}

/// A field's value as written, `None` when the field is absent (a field
/// written without a value is `Some(Value::Null)`).
#[derive(Debug, Default)]
pub(super) struct Leaf(pub Option<Value>);

impl Leaf {
    /// The value of a field that is there (a list item, an entry's value):
    /// null when written without one.
    pub(super) fn value(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.0.as_ref().unwrap_or(&NULL)
    }
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Self(Some(value)))
    }
}

/// A field that must be a mapping (a section).
#[derive(Debug, Default)]
pub(super) enum Map<T> {
    /// Absent, or written without a value.
    #[default]
    Absent,
    /// The mapping, as `T`.
    Is(T),
    /// Not a mapping: the value as written.
    Not(Value),
}

/// A field that must be a list.
#[derive(Debug, Default)]
pub(super) enum List<T> {
    /// Absent, or written without a value.
    #[default]
    Absent,
    /// The list's items.
    Is(Vec<T>),
    /// Not a list: the value as written.
    Not(Value),
}

/// A mapping with names the format does not fix (plugin names), in file
/// order; the names are checked when they are read.
#[derive(Debug)]
pub(super) struct Entries<T>(pub Vec<(Value, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Map<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Shape(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Shape(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Collects the entries in file order.
        struct InOrder<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for InOrder<T> {
            type Value = Entries<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Value>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(InOrder(PhantomData))
    }
}

/// What a [`Shape`] makes of each kind of value.
trait Shaped<'de>: Sized {
    /// Null.
    fn absent() -> Self;
    /// A value of the wrong kind.
    fn not(value: Value) -> Self;
    /// A mapping.
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
    /// A list.
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
}

impl<'de, T: Deserialize<'de>> Shaped<'de> for Map<T> {
    fn absent() -> Self {
        Self::Absent
    }
    fn not(value: Value) -> Self {
        Self::Not(value)
    }
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Self::Is)
    }
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Self::Not)
    }
}

impl<'de, T: Deserialize<'de>> Shaped<'de> for List<T> {
    fn absent() -> Self {
        Self::Absent
    }
    fn not(value: Value) -> Self {
        Self::Not(value)
    }
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Self::Not)
    }
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Self::Is)
    }
}

/// Visits any value: a mapping or a list as [`Shaped::map`] or
/// [`Shaped::seq`] say, null as absent, anything else kept as it is.
struct Shape<R>(PhantomData<R>);

impl<'de, R: Shaped<'de>> Visitor<'de> for Shape<R> {
    type Value = R;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<R, E> {
        Ok(R::not(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<R, E> {
        Ok(R::not(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<R, E> {
        Ok(R::not(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<R, E> {
        Ok(R::not(Value::Number(v.into())))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<R, E> {
        Ok(R::not(Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<R, E> {
        Ok(R::absent())
    }

    fn visit_none<E: de::Error>(self) -> Result<R, E> {
        Ok(R::absent())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<R, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<R, A::Error> {
        R::map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<R, A::Error> {
        R::seq(seq)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<R, A::Error> {
        // A tagged value (`!tag value`).
        Value::deserialize(EnumAccessDeserializer::new(data)).map(R::not)
    }
}

//! Field paths (`plugins.auth.config.api_key`, `trusted_keys[1]`) and the
//! line each names in the text: found, only when an error needs it, by
//! walking the YAML event stream again, since the parser knows where each
//! node starts and the parsed document does not.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a field's path: a mapping key or a list index.
#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A field's path from the top of the document.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldPath(pub(super) Vec<Seg>);

impl FieldPath {
    pub(super) fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_owned()));
        path
    }

    pub(super) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// The last key, if the path ends with one.
    pub(super) fn name(&self) -> &str {
        match self.0.last() {
            Some(Seg::Key(key)) => key,
            _ => "",
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let plain = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if plain {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The line (from 1) of the field `at` in `text`: of its key, or of the
/// list item.
pub(super) fn line_of(text: &str, at: &FieldPath) -> Option<usize> {
    if at.0.is_empty() {
        return None;
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match (Find { rest: &at.0 }).deserialize(deserializer) {
        Err(error) if error.to_string().contains(FOUND) => {
            error.location().map(|location| location.line())
        }
        _ => None,
    }
}

/// The message of the error [`Find`] raises at the node it looks for; the
/// YAML deserializer attaches the node's position to it.
const FOUND: &str = "backworks-config: found the node";

/// Walks the YAML event stream along a field path and fails at the target
/// node (the key of the last mapping step, or the list item), so that the
/// error carries the node's position.
struct Find<'p> {
    rest: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), tail)) = self.rest.split_first() else {
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(Key {
            want,
            target: tail.is_empty(),
        })? {
            if matched {
                return map.next_value_seed(Find { rest: tail });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), tail)) = self.rest.split_first() else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if tail.is_empty() {
            seq.next_element_seed(Here)?;
        } else {
            seq.next_element_seed(Find { rest: tail })?;
        }
        Ok(())
    }
}

/// A mapping key: says whether it is `want`, and fails there when it is the
/// target.
struct Key<'w> {
    want: &'w str,
    target: bool,
}

impl Key<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        if key != self.want {
            Ok(false)
        } else if self.target {
            Err(E::custom(FOUND))
        } else {
            Ok(true)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&serde_yaml::Number::from(v).to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.check("null")
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        self.check("null")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<bool, A::Error> {
        // A tagged key: not one the configuration has.
        Err(de::Error::custom("a tagged key"))
    }
}

/// The target list item: fails wherever it is.
struct Here;

impl<'de> DeserializeSeed<'de> for Here {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}
